"""Fused element-wise loops for whole-buffer parameter updates, compiled by Numba.

NumPy runs an optimizer update as one call per operation, each a full pass over
the flat buffers: Adam is 12 passes over 85,002 elements (288 us on the
benchmark machine), where one loop that reads each element once and computes
every new value in registers takes 87 us (bench/README.md). When Numba is
installed (the `fast` extra), `fast.py` prints such an update as a plain Python
loop over the flat buffers and has Numba compile it; without Numba, or below
`MIN_ELEMENTS`, the update stays NumPy.

The loop body is printed from the same SymPy expressions the NumPy emitter
prints (`LoopPrinter`, a sibling of `ExprPrinter`), so the op definitions stay
the single source of truth. Every leaf is read into a local at the top of the
iteration and every new value is stored at the end, so an update that writes a
buffer its own expression reads (`p = p - lr * g`) is safe element by element.
Only float64 is printed: Python float literals inside a Numba loop are float64,
and a float32 loop would round differently from the NumPy program.
"""
from __future__ import annotations

import functools
import math

import sympy as sp
from sympy.printing.precedence import precedence
from sympy.printing.pycode import PythonCodePrinter

from ..ops.scalar import EXP_BOUND

MIN_ELEMENTS = 16384  # smaller updates: the NumPy calls are cheap, the compile is not
MIN_CALLS = 3         # an update NumPy does in fewer whole-buffer calls gains little
MODES = ("auto", "numpy", "numba")

_FUNCS = (sp.exp, sp.log, sp.tanh, sp.Abs, sp.sin, sp.cos, sp.Max, sp.Min)


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Numba can be imported (checked once per process)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def printable(expr: sp.Expr) -> bool:
    """Whether LoopPrinter prints `expr` with the same meaning as the NumPy emitter."""
    for e in sp.preorder_traversal(expr):
        if e.is_Symbol or e.is_Number or e.is_Add or e.is_Mul or e.is_Pow or \
                isinstance(e, (sp.Piecewise, sp.Rel, sp.logic.boolalg.BooleanAtom)) or \
                isinstance(e, _FUNCS) or isinstance(e, sp.core.containers.Tuple):
            continue
        return False
    return True


class LoopPrinter(PythonCodePrinter):
    """Scalar Python for one element of a fused update, as Numba compiles it.

    Numbers print as exact float literals (`repr(float)`), powers as `x*x`,
    `math.sqrt(x)`, `1.0/x`; `exp(u)` is clamped at u <= 300 as the NumPy printer
    clamps it; `Piecewise` is a conditional expression; `Max`/`Min` propagate NaN
    as `np.maximum`/`np.minimum` do."""

    def __init__(self, literals: dict | None = None, scalars: frozenset = frozenset()):
        super().__init__({"fully_qualified_modules": True, "standard": "python3"})
        self._literals = {} if literals is None else literals  # symbol -> the number it stands for, printed as is
        self._scalars = scalars  # symbols that are the same for every element

    def _print_Mul(self, e):
        # the loop-invariant factors first and together, so the compiled loop
        # computes their product once: `(div_2*sqrt_1)*m` rather than `m*div_2*sqrt_1`
        inv = [a for a in e.args if self._invariant(a)]
        var = [a for a in e.args if not self._invariant(a)]
        if len(inv) < 2 or not var:
            return super()._print_Mul(e)
        rest = sp.Mul(*var)
        return (f"({super()._print_Mul(sp.Mul(*inv, evaluate=False))})*"
                f"{self.parenthesize(rest, precedence(e))}")

    def _invariant(self, a) -> bool:
        return all(s in self._scalars or s in self._literals for s in a.free_symbols)

    def _print_Symbol(self, e):
        if e in self._literals:
            return self._literals[e]
        return super()._print_Symbol(e)

    def _print_Float(self, e):
        return self._number(e)

    def _print_Integer(self, e):
        return self._number(e)

    def _print_Rational(self, e):
        return self._number(e)

    def _print_NumberSymbol(self, e):
        return self._number(e)

    def _number(self, e):
        return literal(float(e))

    def _print_Pow(self, e, rational=False):
        base, ex = e.args
        b = self.parenthesize(base, precedence(e)) if not (base.is_Symbol or base.is_Number) \
            else self._print(base)
        if ex == 2:
            return f"({b}*{b})"
        if ex == sp.S.Half:
            return f"math.sqrt({self._print(base)})"
        if ex == -1:
            return f"(1.0/{b})"
        if ex == -sp.S.Half:
            return f"(1.0/math.sqrt({self._print(base)}))"
        return f"({b}**{self.parenthesize(ex, precedence(e))})"

    def _print_exp(self, e):
        return f"math.exp(min({self._print(e.args[0])}, {EXP_BOUND['float64']!r}))"  # float64 only

    def _print_Abs(self, e):
        return f"abs({self._print(e.args[0])})"

    def _print_Max(self, e):
        return self._extremum(e.args, ">=")

    def _print_Min(self, e):
        return self._extremum(e.args, "<=")

    def _extremum(self, args, op):
        # np.maximum / np.minimum: a NaN on either side is the result
        out = self._print(args[0])
        for a in args[1:]:
            b = self._print(a)
            out = f"({out} if ({out} {op} {b} or {out} != {out}) else {b})"
        return out

    def _print_Relational(self, e):
        return f"({self._print(e.lhs)} {e.rel_op} {self._print(e.rhs)})"

    def _print_Piecewise(self, e):
        *branches, (last, cond) = e.args
        out = self._print(last) if cond == sp.true else "math.nan"
        for v, c in reversed(branches):
            out = f"({self._print(v)} if {self._print(c)} else {out})"
        return out


def literal(v: float) -> str:
    """A float as an exact Python literal (`math.inf`, `math.nan`: `repr` gives names
    the loop does not know)."""
    if v != v:
        return "math.nan"
    text = repr(v) if abs(v) != math.inf else "math.inf"
    return text if v >= 0 else f"(-{text})" if abs(v) == math.inf else f"({text})"


def kernel_source(name: str, arrays: list[str], scalars: list[str], loads: list[tuple[str, str]],
                  steps: list[tuple[str, str, list[str]]], doc: str) -> list[str]:
    """The lines of one loop kernel and its Numba compilation.

    `arrays`/`scalars`: parameter names; `loads`: (local, array) read at index i;
    `steps`: (local, expression, arrays it is stored into), in dependency order;
    `doc`: one line, already made safe for a comment (printer.comment_text)."""
    lines = [f"def {name}({', '.join(arrays + scalars)}):",
             f"    # {doc}",  # a comment, not a docstring: `doc` holds node names
             f"    for i in range({arrays[0]}.shape[0]):"]
    for local, a in loads:
        lines.append(f"        {local} = {a}[i]")
    for local, text, stores in steps:
        lines.append(f"        {local} = {text}")
        for a in stores:
            lines.append(f"        {a}[i] = {local}")
    sig = ", ".join(["float64[::1]"] * len(arrays) + ["float64"] * len(scalars))
    lines.append(f'{name} = numba.njit("void({sig})", error_model="numpy")({name})')
    return lines + [""]
