"""The one check for values fed to compiled programs and to `Trainer` (issue 14, D8-D9).

A feed becomes an array of its input node's dtype, or a `DataError` naming the
input. Refused: complex numbers (NumPy would drop the imaginary part), strings
and bytes (NumPy would parse "1.5"), dates, Python objects (`None` would become
NaN), ragged lists, and floats for an integer input (1.7 would become 1: cast
explicitly), integers outside the input's integer range. Class labels -- integer inputs that a `one_hot` reads, which is how
`softmax_cross_entropy` and `accuracy` take integer targets -- must lie in
[0, depth): a label of 7 or -1 among 3 classes would give a silently wrong loss.

Cost: an array of exactly the node's dtype passes with two identity tests
(the common, benchmarked call); other dtypes are checked once per call in
O(1), except integers of another width (a range check) and labels (a min and
a max over the labels).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .errors import DataError
from .graph import Node

_WHAT = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects",
         "M": "dates", "m": "time spans", "V": "raw records"}


def convert(node: Node, value, what: str = "feed") -> np.ndarray:
    """`value` as an array of `node.dtype` (shape is the caller's to check)."""
    if type(value) is np.ndarray and value.dtype is node.dtype:
        return value
    try:
        a = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as e:  # ragged lists, odd objects
        raise DataError(f"{what} {node.name!r}: not an array of numbers ({e})") from None
    kind = a.dtype.kind
    if kind not in "biuf":
        raise DataError(f"{what} {node.name!r}: got {_WHAT.get(kind, 'values')} (dtype "
                        f"{a.dtype}); input {node.name!r} takes {node.dtype} numbers -- "
                        "convert explicitly")
    if a.dtype == node.dtype:
        return a
    if node.dtype.kind in "iub" and kind == "f":
        raise DataError(f"{what} {node.name!r}: takes {node.dtype} values, got {a.dtype}; "
                        "cast it explicitly (floats would be truncated: 1.7 -> 1)")
    if node.dtype.kind in "iu" and a.dtype.kind in "iu":
        info = np.iinfo(node.dtype)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise DataError(f"{what} {node.name!r}: values outside {node.dtype}'s range")
    return a.astype(node.dtype)


def label_depths(nodes: Iterable[Node]) -> dict[str, int]:
    """Input name -> number of classes, for each integer input a `one_hot` reads."""
    out: dict[str, int] = {}
    for n in nodes:
        if n.op == "one_hot":
            src = n.inputs[0]
            while src.op in ("reshape", "identity", "stop_gradient") and src.inputs:
                src = src.inputs[0]  # (labels reshaped on the way still are labels)
            if src.op == "input" and src.dtype.kind in "iu":
                depth = int(n.attrs["depth"])
                out[src.name] = min(depth, out.get(src.name, depth))
    return out


_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_MAX = np.maximum.reduce


def check_labels(name: str, labels: np.ndarray, depth: int, what: str = "feed") -> None:
    """DataError unless every label is an integer class in [0, depth)."""
    if labels.size == 0:
        return
    # one reduction: seen as unsigned, a negative label is huge (2x faster than min + max)
    if _MAX(labels.view(_UNSIGNED[labels.dtype.itemsize]), axis=None) < depth:
        return
    lo, hi = labels.min(), labels.max()
    if lo < 0 or hi >= depth:
        bad = lo if lo < 0 else hi
        where = int(np.argwhere(labels == bad)[0][0]) if labels.ndim else 0
        raise DataError(f"{what} {name!r}: class label {int(bad)} (sample {where}) is outside "
                        f"[0, {depth}): the model has {depth} classes")
