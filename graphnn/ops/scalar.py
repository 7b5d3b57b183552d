"""The scalar semantics that every printer of element-wise code shares.

Element-wise expressions (SymPy) are printed by one printer per language: NumPy
calls (`ops/elementwise.ExprPrinter`, and `compile/fusion.Emitter` for fused
groups with `out=`), the Numba loop (`compile/loops.LoopPrinter`) and CUDA C
(`compile/cuda_c.CudaCPrinter`). They agree on these rules, defined here:

* `exp(u)` inside an expression is `exp(min(u, B))` with `EXP_BOUND[dtype]`:
  `x*exp(-x)/(1+exp(-x))**2` would otherwise be inf/inf = nan where the true
  value underflows to 0; values are unchanged wherever exp(u) <= exp(B).
* `max` / `min` propagate NaN (NumPy's `maximum` / `minimum`, not C's `fmax`).
* numbers are exact literals (the shortest decimal that reads back as the same
  float of the kernel's type); float32 code never computes in double.

tests/test_cuda_c.py checks the CUDA printer against NumPy on edge values (0,
+-1e-30, +-800, NaN) for every catalog op; tests/test_loops.py and the fused
tests check the others.
"""
from __future__ import annotations

import numpy as np

EXP_BOUND = {"float64": 300.0, "float32": 40.0}


def exp_bound(dtype) -> float:
    """The largest exponent `exp` is evaluated at in code of `dtype` (float32 bound
    for float32, float64's otherwise)."""
    return EXP_BOUND["float32" if np.dtype(dtype) == np.float32 else "float64"]
