"""Drawing a `gn.check_gradients` agreement report on its graph."""
from __future__ import annotations

from .draw import draw


def draw_check(report, g, **kw):
    """`draw(g, check=report)`: nodes whose gradient modes disagree are red, agreeing ones green.

    `report.rows` are matched to nodes by `row.node` (a Node) or `row.name`."""
    if not hasattr(report, "rows"):
        raise TypeError(f"draw_check: expected a check_gradients report with .rows, got "
                        f"{type(report).__name__}")
    return draw(g, check=report, **kw)
