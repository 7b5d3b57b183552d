"""A drawing displays itself in Jupyter without a system `dot`."""
import shutil

import numpy as np

import graphnn as gn
import viz


def test_drawing_displays_without_dot(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    g = gn.Graph("jup")
    x = g.input("x", (None, 2))
    d = viz.draw(gn.relu(x).sum())
    bundle = d._repr_mimebundle_()
    assert "<svg" in bundle["image/svg+xml"]
    assert "<svg" in d._repr_svg_()
