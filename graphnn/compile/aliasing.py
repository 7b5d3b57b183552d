"""Which values may share memory with a parameter that the step updates in place.

A program's outputs and update values are the values *before* the update, and
all updates of a step are simultaneous (`{A: B, B: A}` swaps). NumPy values can
be views (a reshape, a transpose, a slice, a parameter itself), so a value read
after an in-place parameter write must not look into that parameter. Element-
wise ops write fresh arrays (or planned buffers, never parameters); any other
op is assumed to possibly return a view of its inputs. The printers copy the
few values this finds (no optimizer update is one: their values are element-
wise) before the first parameter write.
"""
from __future__ import annotations

from ..graph import Node
from ..ops.registry import get_op


def updated_views(order: list[Node], updated: set[int], cut: set[int] = frozenset()
                  ) -> dict[int, frozenset]:
    """Node id -> ids of the updated parameters its value may share memory with
    (absent when none). `order` is topological; `cut` values are fed (fresh)."""
    shares: dict[int, frozenset] = {}
    for n in order:
        if id(n) in cut:
            continue
        if n.op == "param":
            if id(n) in updated:
                shares[id(n)] = frozenset((id(n),))
            continue
        if n.is_leaf or get_op(n.op).elementwise is not None:
            continue
        got = frozenset().union(*(shares.get(id(i), frozenset()) for i in n.inputs))
        if got:
            shares[id(n)] = got
    return shares


def needs_snapshot(values: list[Node], order: list[Node], updated: set[int],
                   cut: set[int] = frozenset()) -> list[Node]:
    """The values (outputs, update values) to copy before the parameters are written."""
    shares = updated_views(order, updated, cut)
    out, seen = [], set()
    for v in values:
        if id(v) in shares and id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out
