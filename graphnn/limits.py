"""Size limits on shapes, checked wherever a shape enters graphnn.

Shape arithmetic is done in Python ints (NumPy's int64 `prod` wraps silently:
`4 * (2**62 + 1)` is 4). A shape whose element count exceeds `MAX_ELEMENTS`
(2**48, about 2.8e14, some 2 PiB of float64) is refused where it is built: no
machine holds it, and numbers that large only come from mistakes or hostile
files. The batch dimension (None) counts as 1.
"""
from __future__ import annotations

import math

MAX_ELEMENTS = 2 ** 48


def elements(shape) -> int:
    """Element count of `shape` in Python ints (None, the batch dimension, counts 1)."""
    return math.prod(1 if d is None else int(d) for d in shape)


def too_big(shape) -> bool:
    """True when a dimension or the element count of `shape` exceeds MAX_ELEMENTS."""
    n = 1
    for d in shape:
        if d is not None:
            if d > MAX_ELEMENTS:
                return True
            n *= d
    return n > MAX_ELEMENTS


def limit_text(shape) -> str:
    return (f"shape {tuple(shape)} has more than {MAX_ELEMENTS} (2**48) elements "
            "(or a dimension that large)")
