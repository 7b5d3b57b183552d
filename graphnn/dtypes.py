"""Dtype helpers: graphnn computes in float32 or float64 (and integer labels)."""
from __future__ import annotations

import functools

import numpy as np

from .errors import DtypeError

_SHORT = {"float64": "f64", "float32": "f32", "float16": "f16", "int64": "i64",
          "int32": "i32", "bool": "bool"}
ALLOWED = {"float64", "float32", "int64", "int32", "bool"}


_ALLOWED_DTYPES = frozenset(np.dtype(n) for n in ALLOWED)


def as_dtype(dtype) -> np.dtype:
    """`dtype` as a NumPy dtype graphnn computes in; DtypeError for any other."""
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError, SyntaxError) as e:  # np.dtype parses strings ("(2)f")
        raise DtypeError(f"unsupported dtype {str(dtype)[:80]!r} ({e}); use one of "
                         f"{sorted(ALLOWED)}") from None
    if dt not in _ALLOWED_DTYPES and dt.name not in ALLOWED:  # (dtype.name is slow to ask)
        raise DtypeError(f"unsupported dtype {dt.name!r}; use one of {sorted(ALLOWED)}")
    return dt


@functools.lru_cache(maxsize=64)  # dtype.name is slow; listings ask once per node
def short(dtype: np.dtype) -> str:
    return _SHORT.get(np.dtype(dtype).name, np.dtype(dtype).name)


def is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def result_float(*dtypes) -> np.dtype:
    """Float result of combining dtypes (ints promote to the float among them, else float64)."""
    first = dtypes[0] if dtypes else None
    if isinstance(first, np.dtype) and first.kind == "f" and all(d is first for d in dtypes):
        return first  # the common case: one float dtype throughout
    floats = [np.dtype(d) for d in dtypes if is_float(d)]
    if not floats:
        return np.dtype("float64")
    return np.result_type(*floats)
