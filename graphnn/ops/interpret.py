"""Run one node's NumPy code on concrete arrays: the op table as an interpreter.

Constant folding (`compile/passes.py`), symbolic mode for ops without a SymPy
meaning (`autodiff/symbolic.py`) and the values viz shows (`viz/evaluate.py`)
all evaluate nodes this way: the text `OpDef.numpy` prints, `eval`ed with the
runtime helpers (`ops/runtime.py`) in scope. No program is compiled.
"""
from __future__ import annotations

import numpy as np

from ..graph import Node
from . import runtime
from .registry import get_op

_ENV = {"np": np, **{h: getattr(runtime, h) for h in runtime.HELPERS}}


def evaluate(node: Node, values: list) -> np.ndarray:
    """Run one node's NumPy code on concrete arrays (used by folding and interpreters)."""
    names = [f"_a{i}" for i in range(len(values))]
    code = get_op(node.op).numpy(names, node.attrs, node)
    env = dict(_ENV)
    env.update(zip(names, values))
    with np.errstate(all="ignore"):
        return np.asarray(eval(code, env))  # noqa: S307 - code printed from our own op table
