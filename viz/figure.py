"""A matplotlib Figure that shows itself in Jupyter without pyplot.

viz.plots builds figures without pyplot (no global state, no GUI backend, no
figure left open per call). IPython only knows how to display a bare Figure
when pyplot's inline backend registered a formatter, so without this class a
notebook printed `<Figure size 1200x400 with 2 Axes>` (issue 17 #1). The
`_repr_png_` hook makes the last expression of a cell display as an image.
"""
from __future__ import annotations

import io

from matplotlib.figure import Figure


class TeachingFigure(Figure):
    """`matplotlib.figure.Figure` with `_repr_png_` (and `_repr_svg_` off: PNG is smaller)."""

    dpi_display = 100

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=self.dpi_display, bbox_inches="tight")
        return buf.getvalue()

    def png(self, dpi: int | None = None) -> bytes:
        """The figure as PNG bytes (for files and slides)."""
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=dpi or self.dpi_display, bbox_inches="tight")
        return buf.getvalue()
