"""Concrete values of graph nodes, for labels, tooltips and step-by-step pages.

An interpreter over topological order: leaves come from the feeds (inputs),
`g.values` (params, overridable by feeds) or the node itself (consts); every
other node runs its op's NumPy code once (`graphnn.ops.interpret.evaluate`). No
program is compiled, so drawing a graph never changes compiled-code caches.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from graphnn.ops.interpret import evaluate as _evaluate_node
from graphnn.errors import GraphError, ShapeError
from graphnn.graph import Node


def normalize_feeds(feeds: Mapping | None) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in (feeds or {}).items():
        name = k.name if isinstance(k, Node) else str(k)
        out[name] = np.asarray(v)
    return out


def evaluate(targets: Iterable[Node], feeds: Mapping | None = None,
             cache: dict[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """Values of `targets` and everything they depend on, keyed by id(node)."""
    targets = list(targets)
    vals: dict[int, np.ndarray] = cache if cache is not None else {}
    if not targets:
        return vals
    feeds = normalize_feeds(feeds)
    g = targets[0].graph
    for node in g.ancestors([t for t in targets if id(t) not in vals]):
        if id(node) in vals:
            continue
        if node.op == "const":
            v = node.value
        elif node.op in ("input", "param"):
            if node.name in feeds:
                v = feeds[node.name]
            elif node.op == "param" and node.name in g.values:
                v = g.values[node.name]
            else:
                raise GraphError(f"missing feed {node.name!r} ({node.op}, shape {node.shape}) "
                                 "needed to show values")
            v = np.asarray(v)
            if v.dtype != node.dtype and node.dtype.kind == "f":
                v = v.astype(node.dtype)
            if v.ndim != node.ndim or any(d is not None and d != s for d, s in zip(node.shape, v.shape)):
                raise ShapeError(f"feed {node.name!r}: expected shape {node.shape}, got {v.shape}")
        else:
            v = _evaluate_node(node, [vals[id(i)] for i in node.inputs])
        vals[id(node)] = np.asarray(v)
    return vals


def needs_feeds(nodes: Iterable[Node]) -> bool:
    return any(n.op == "input" for n in nodes)


def norm(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=np.float64) if np.asarray(v).dtype.kind in "biuf" else np.asarray(v)
    with np.errstate(all="ignore"):
        return float(np.sqrt(np.sum(np.square(v))))


SMALL = 16   # tensors with at most this many entries are shown in full


def _num(x) -> str:
    return f"{float(x) + 0.0:.4g}"     # + 0.0: a ReLU's -0.0 prints as 0


def summary(v, small: int = SMALL) -> str:
    """One short line: the number for scalars, every entry of small tensors (<= `small`
    entries, nested brackets in row order), a labelled summary for large ones:
    `4x8 tensor: min -0.5, max 0.31, norm 1.2`."""
    v = np.asarray(v)
    if v.size == 1 and v.ndim == 0:
        return _num(v.reshape(())) if v.dtype.kind in "biuf" else str(v.reshape(()))
    if v.size == 0:
        return f"empty {v.shape}"
    if v.dtype.kind not in "biuf":
        return f"{'x'.join(map(str, v.shape))} tensor of {v.dtype}"
    if v.size <= small:
        return np.array2string(v, separator=", ", max_line_width=10**6,
                               formatter={"all": _num}).replace("\n", "")
    return (f"{'x'.join(map(str, v.shape))} tensor: min {float(np.min(v)):.3g}, "
            f"max {float(np.max(v)):.3g}, norm {norm(v):.3g}")


def full(v, max_chars: int = 1500) -> str:
    """The whole value, as NumPy prints it (cut at `max_chars`)."""
    v = np.asarray(v)
    s = np.array2string(v, precision=5, threshold=400, max_line_width=80)
    return s if len(s) <= max_chars else s[: max_chars - 1] + "…"
