"""Shape arithmetic shared by the shape rules (None is the batch dimension)."""
from __future__ import annotations

from .registry import Mismatch


def fmt(shape, batch: str = "None") -> str:
    """A shape as a Python tuple literal, the batch axis spelled `batch`: `(None, 3)`, `(5,)`;
    the printers pass the name of the batch size (`(B, 3)`)."""
    dims = [batch if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def broadcast(*shapes):
    """NumPy broadcasting with a symbolic batch dimension.

    None broadcasts with None and with 1; None against a fixed size > 1 is refused
    (it would only work for one batch size)."""
    first = shapes[0] if shapes else ()
    if all(s == first for s in shapes):  # the common case: nothing to broadcast
        return tuple(first)
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(ndim):
        dims = [s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0]
        fixed = {d for d in dims if d is not None and d != 1}
        has_none = any(d is None for d in dims)
        if len(fixed) > 1 or (fixed and has_none):
            raise Mismatch("cannot broadcast " + " with ".join(fmt(s) for s in shapes))
        out.append(None if has_none else (fixed.pop() if fixed else 1))
    return tuple(out)


def norm_axes(axes, ndim: int, shape=None):
    """Normalize an axis spec to a sorted tuple of non-negative axes."""
    if axes is None:
        return tuple(range(ndim))
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise Mismatch(f"axis {a} is out of range for {ndim}-d input {fmt(shape) if shape is not None else ''}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise Mismatch(f"repeated axis in {axes}")
    return tuple(sorted(out))


def reduce_shape(shape, axes, keepdims):
    return tuple(1 if i in axes else d for i, d in enumerate(shape) if keepdims or i not in axes)


def unbroadcast_axes(in_shape, out_shape):
    """Axes of `out_shape` to sum (leading ones dropped, others kept) to get `in_shape`."""
    lead = len(out_shape) - len(in_shape)
    drop = tuple(range(lead))
    keep = tuple(lead + i for i, d in enumerate(in_shape)
                 if d == 1 and out_shape[lead + i] != 1)
    return drop, keep
