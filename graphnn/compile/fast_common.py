"""Small helpers shared by the lowering (schedule.py, update_plan.py) and the targets."""
from __future__ import annotations

import functools
import re

import numpy as np

from ..graph import Node, attrs_items, fmt_shape
from ..ops.registry import get_op
from ..ops.shapes import fmt


def _is_ew(n: Node) -> bool:
    return not n.is_leaf and get_op(n.op).elementwise is not None


def _attrs_key(n: Node) -> tuple:
    return attrs_items(n.attrs)


def _shape_code(shape, batch="B") -> str:
    return fmt(shape, batch)


@functools.lru_cache(maxsize=64)
def _dname(dtype: np.dtype) -> str:
    """dtype.name, remembered (NumPy works it out in Python at every access)."""
    return dtype.name


def _tag(shape) -> str:
    return fmt_shape(shape, "x") or "s"


# names of gradient views (see _drop_unread_views); no leading \b, which makes the
# search 20x slower: a longer name ending in one (`a_g_x`) only keeps a view


def _flat_group(ms) -> bool:
    """Members that share one flat buffer per role (see update_plan._layout)."""
    m0 = ms[0]
    return len(ms) > 1 and all(k[0] in ("s", "p", "f") for k in m0.kinds) and \
        all(p in m0.leaves for p in m0.params)


_PLACE = re.compile(r"\{(\w+)\}")


def _call_cost(line: str, fmt: dict, full: set[str]) -> float:
    """Estimated cost of one generated call, in units of an in-place call.

    On whole-buffer updates (85,002 elements, NumPy 2.4) a call that touches three
    arrays (`np.add(a, b, out=c)`) measured about three times one that touches two
    (`np.add(a, b, out=a)`, `np.multiply(a, 0.1, out=c)`); splitting the buffers
    into cache-sized chunks did not change that. A copy touches two."""
    arrays = {fmt.get(n, n) for n in _PLACE.findall(line)
              if n in full or n == "OUT" or n[0] in "TB"}
    return 1.0 if len(arrays) <= 2 else 3.0


def _small_int_const(n: Node):
    """The value of a constant whose elements all equal one small nonzero integer, else
    None. Zero stays a leaf: SymPy would fold a division by it to `zoo`, where NumPy
    gives +-inf or nan element by element (the mean over an empty axis)."""
    if n.op != "const" or n.value.size == 0 or n.value.size > 64 or n.value.dtype.kind not in "fiu":
        return None
    v = n.value.flat[0]
    if not np.all(n.value == v) or v != int(v) or abs(v) > 16 or v == 0:
        return None
    return int(v)
