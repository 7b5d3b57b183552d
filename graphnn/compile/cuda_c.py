"""SymPy expressions printed as CUDA C, for element-wise kernel bodies.

One printer (`CudaCPrinter`, SymPy's `_print_X` pattern) serves the CuPy target
(the `operation` of a `cupy.ElementwiseKernel`) and the CUDA program. The text
it prints is plain C as well: with `PREAMBLE[dtype]` in front it compiles with
nvcc/NVRTC and with a C compiler, so every body can be checked on a CPU.

Semantics are those of graphnn's NumPy code (`ops.elementwise.ExprPrinter`,
`compile.fusion.Emitter`), element by element:

* `exp(u)` is `exp(gn_min(u, B))`, B = 300 (float64) or 40 (float32), as the
  fused NumPy code clamps every exponent (`clamp_exp=False` prints a bare exp);
  a NaN exponent stays NaN (gn_min propagates it, as np.minimum does).
* `Max`/`Min` propagate NaN as np.maximum/np.minimum (`gn_max`, `gn_min`;
  C's fmax/fmin return the other operand instead).
* `Piecewise` is nested ternaries, so only the taken branch is evaluated; a
  comparison used as a number is a 0/1 ternary of the kernel's type.
* `Heaviside(u)` is np.heaviside(u, 0.5) and `sign` is np.sign (NaN stays NaN,
  0 gives 0); `Abs` is fabs; `log(1 + u)` is log1p(u).
* Constants (pi, sqrt(2), rationals) are numeric literals: NVRTC has no math.h
  macros (M_PI, M_SQRT2, INFINITY); infinity and NaN are `(1.0/0.0)` and
  `(0.0/0.0)`, which mean the same in C and CUDA.
* Small integer powers are products (`(x*x)`, `gn_pow2f(u)` for a compound
  base), x**0.5 is sqrt, x**-0.5 is 1/sqrt, other powers pow.
* float32 never computes in double: `expf`, `tanhf`, `1.0f`, and helpers named
  with an `f` suffix (`gn_maxf`), so both preambles can share one source file.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np
import sympy as sp
from sympy.codegen.cfunctions import log1p
from sympy.printing.c import C99CodePrinter
from sympy.printing.precedence import PRECEDENCE

from ..ops.scalar import EXP_BOUND

DTYPES = ("float32", "float64")
C_TYPE = {"float64": "double", "float32": "float"}

_COMMON = r"""#ifndef GN_COMMON_PREAMBLE
#define GN_COMMON_PREAMBLE
#ifdef __CUDACC__
#define GN_FN __host__ __device__ inline
#else
#include <math.h>
#include <stdbool.h>
#define GN_FN static inline
#endif
#endif
"""

_HELPERS = r"""#ifndef GN_PREAMBLE_{D}
#define GN_PREAMBLE_{D}
/* np.maximum / np.minimum: a NaN operand is the result */
GN_FN {T} gn_max{S}({T} a, {T} b) {{ return (a >= b || a != a) ? a : b; }}
GN_FN {T} gn_min{S}({T} a, {T} b) {{ return (a <= b || a != a) ? a : b; }}
/* np.sign: NaN stays NaN, zero gives zero */
GN_FN {T} gn_sign{S}({T} v) {{ return v > {Z} ? {O} : (v < {Z} ? -{O} : (v == {Z} ? {Z} : v)); }}
/* np.heaviside(v, h0) */
GN_FN {T} gn_heaviside{S}({T} v, {T} h0) {{ return v > {Z} ? {O} : (v < {Z} ? {Z} : (v == {Z} ? h0 : v)); }}
GN_FN {T} gn_pow2{S}({T} v) {{ return v * v; }}
GN_FN {T} gn_pow3{S}({T} v) {{ return v * v * v; }}
GN_FN {T} gn_pow4{S}({T} v) {{ {T} w = v * v; return w * w; }}
#endif
"""


def _preamble(dtype: str) -> str:
    f32 = dtype == "float32"
    return _COMMON + _HELPERS.format(D=dtype.upper(), T=C_TYPE[dtype], S="f" if f32 else "",
                                     Z="0.0f" if f32 else "0.0", O="1.0f" if f32 else "1.0")


PREAMBLE: dict[str, str] = {d: _preamble(d) for d in DTYPES}

# SymPy function class name -> C math function (float64 spelling; float32 adds "f")
_MATH = {"exp": "exp", "log": "log", "log1p": "log1p", "tanh": "tanh", "sinh": "sinh",
         "cosh": "cosh", "sin": "sin", "cos": "cos", "tan": "tan", "asin": "asin",
         "acos": "acos", "atan": "atan", "asinh": "asinh", "acosh": "acosh", "atanh": "atanh",
         "atan2": "atan2", "erf": "erf", "erfc": "erfc", "floor": "floor", "ceiling": "ceil",
         "Abs": "fabs"}
_HELPER_FNS = {"sign": "gn_sign", "Max": "gn_max", "Min": "gn_min"}

_C_KEYWORDS = frozenset("""
auto break case char const continue default do double else enum extern float for goto if
inline int long register restrict return short signed sizeof static struct switch typedef
union unsigned void volatile while _Bool _Complex _Imaginary bool true false alignas alignof
and and_eq asm catch class compl const_cast constexpr decltype delete dynamic_cast explicit
export friend mutable namespace new noexcept not not_eq nullptr operator or or_eq private
protected public reinterpret_cast static_assert static_cast template this thread_local throw
try typeid typename using virtual wchar_t xor xor_eq char16_t char32_t main
""".split())
_RESERVED = _C_KEYWORDS | frozenset(_MATH.values()) | frozenset(f + "f" for f in _MATH.values()) \
    | frozenset({"sqrt", "sqrtf", "pow", "powf", "fmax", "fmin", "fmaxf", "fminf", "max", "min",
                 "abs", "exp2", "printf", "malloc", "free", "half", "float2", "float4", "double2"})
_HELPER_NAMES = frozenset(re.findall(r"\b(gn_\w+)\(", "".join(PREAMBLE.values())))
_RESERVED = _RESERVED | _HELPER_NAMES | {"gn_standin_run"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TEMP = re.compile(r"^_t\d+$")


def _check_dtype(dtype) -> str:
    d = np.dtype(dtype).name
    if d not in DTYPES:
        raise ValueError(f"CUDA C kernels are float32 or float64, not {d}")
    return d


def literal(value: float, dtype: str) -> str:
    """A number as a C literal of the kernel's type (float32: rounded as NumPy casts
    a Python float, printed shortest, with an `f` suffix)."""
    f32 = dtype == "float32"
    v = float(np.float32(value)) if f32 else float(value)
    if v != v:
        return "(0.0f/0.0f)" if f32 else "(0.0/0.0)"
    if v in (float("inf"), float("-inf")):
        text = "(1.0f/0.0f)" if f32 else "(1.0/0.0)"
        return text if v > 0 else "(-" + text + ")"
    text = str(np.float32(v)) if f32 else repr(v)
    if "." not in text and "e" not in text:
        text += ".0"
    return text + ("f" if f32 else "")


class CudaCPrinter(C99CodePrinter):
    """Prints one SymPy expression as a C expression of `dtype` ("float32"/"float64").

    `names` maps SymPy symbols to C names (a symbol missing from it is an error);
    `types` (optional) maps symbols to the dtype of their C variable: one that is
    not the kernel's (an int64 or bool input, a float64 scalar in a float32
    kernel) is read through a cast, `((float)a0)`, so `a0/a1` of two int64 inputs
    divides as floats and a float32 kernel stays float32, as graphnn's dtype rule
    says (dtypes.result_float). Use `print_expr`, not `doprint`."""

    printmethod = "_cudaccode"

    def __init__(self, dtype="float64", names: dict | None = None, clamp_exp: bool = True,
                 types: dict | None = None):
        super().__init__()
        self.dtype = _check_dtype(dtype)
        self.casts = {s for s, t in (types or {}).items() if np.dtype(t).name != self.dtype}
        self.f32 = self.dtype == "float32"
        self.ctype = C_TYPE[self.dtype]
        self.names = dict(names or {})
        self.clamp_exp = clamp_exp
        for c in self.names.values():
            _check_ident(c)

    def print_expr(self, expr) -> str:
        return self._print(sp.sympify(expr))

    # -- numbers -----------------------------------------------------------------------
    def _lit(self, v) -> str:
        return literal(float(v), self.dtype)

    def _fn(self, name: str) -> str:
        return name + ("f" if self.f32 else "")

    def _print(self, expr, **kwargs):
        if isinstance(expr, sp.Basic):
            if isinstance(expr, sp.logic.boolalg.BooleanAtom):
                return self._lit(1 if expr == sp.true else 0)
            if expr.is_number and not isinstance(expr, sp.Rel):
                if expr is not sp.nan and not expr.is_extended_real:
                    raise ValueError(f"not a real number: {expr}")
                return self._lit(expr)
            if isinstance(expr, (sp.Function, sp.Max, sp.Min)) \
                    and not isinstance(expr, sp.Piecewise):
                return self._function(expr)
            if isinstance(expr, sp.Rel):  # a comparison as a number: 1 or 0
                return f"({self._cond(expr)} ? {self._lit(1)} : {self._lit(0)})"
        return super()._print(expr, **kwargs)

    def _print_Symbol(self, expr):
        try:
            name = self.names[expr]
            return f"(({self.ctype}){name})" if expr in self.casts else name
        except KeyError:
            raise KeyError(f"no C name for symbol {expr.name!r} (names has "
                           f"{sorted(s.name for s in self.names)})") from None

    # -- arithmetic --------------------------------------------------------------------
    def _print_Mul(self, expr):
        factors = expr.as_ordered_factors()  # the order NumPy's printer multiplies in
        nums = [a for a in factors if a.is_number]
        rest = [a for a in factors if not a.is_number]
        c = float(sp.Mul(*nums)) if nums else 1.0
        numer, denom = [], []
        for a in rest:
            if a.is_Pow and a.exp.is_number and a.exp.is_negative:
                denom.append(sp.Pow(a.base, -a.exp, evaluate=False) if a.exp != -1 else a.base)
            else:
                numer.append(a)
        prec = PRECEDENCE["Mul"]
        sign = "-" if c < 0 else ""
        parts = [self._lit(abs(c))] if abs(c) != 1.0 or not numer else []
        parts += [self.parenthesize(a, prec) for a in numer]
        text = "*".join(parts)
        if denom:
            d = "*".join(self.parenthesize(a, prec) for a in denom)
            text += "/" + (d if len(denom) == 1 and not _needs_parens(d) else f"({d})")
        return sign + text

    def _print_Pow(self, expr, rational=False):
        base, e = expr.args
        if e.is_number and float(e) == 0.5:
            return f"{self._fn('sqrt')}({self._print(base)})"
        if e.is_number and float(e) == -0.5:
            return f"({self._lit(1)}/{self._fn('sqrt')}({self._print(base)}))"
        if e.is_number and e.is_extended_real and float(e) in (1, 2, 3, 4, -1, -2, -3, -4):
            n = abs(int(float(e)))  # x**2.0 too: NumPy squares it as well
            if n == 1:
                p = self.parenthesize(base, PRECEDENCE["Mul"], strict=True)
            elif base.is_Symbol:
                b = self._print(base)
                p = "(" + "*".join([b] * n) + ")"
            else:
                p = f"{self._fn(f'gn_pow{n}')}({self._print(base)})"
            return p if float(e) > 0 else f"({self._lit(1)}/{p})"
        return f"{self._fn('pow')}({self._print(base)}, {self._print(e)})"

    # -- conditions ----------------------------------------------------------------------
    def _cond(self, c) -> str:
        """A condition in boolean context (the test of a ternary)."""
        if c == sp.true:
            return "true"
        if c == sp.false:
            return "false"
        if isinstance(c, sp.Rel):
            op = {"==": "==", "!=": "!=", ">": ">", "<": "<", ">=": ">=", "<=": "<="}[c.rel_op]
            return f"({self._print(c.lhs)} {op} {self._print(c.rhs)})"
        if isinstance(c, sp.And):
            return "(" + " && ".join(self._cond(a) for a in c.args) + ")"
        if isinstance(c, sp.Or):
            return "(" + " || ".join(self._cond(a) for a in c.args) + ")"
        if isinstance(c, sp.Not):
            return f"(!{self._cond(c.args[0])})"
        if isinstance(c, sp.ITE):  # folded Piecewise conditions: if a then b else c
            a, b, e = c.args
            return f"({self._cond(a)} ? {self._cond(b)} : {self._cond(e)})"
        if isinstance(c, sp.Xor):
            return "(" + " != ".join(f"(bool){self._cond(a)}" for a in c.args) + ")"
        if c.is_Symbol:  # a boolean temporary of kernel_body
            return self._print_Symbol(c)
        raise ValueError(f"cannot print condition {c} as CUDA C")

    def _print_Piecewise(self, expr):
        *branches, (last, cond) = expr.args
        out = self._print(last) if cond == sp.true else \
            f"({self._cond(cond)} ? {self._print(last)} : {self._lit(float('nan'))})"
        for e, c in reversed(branches):
            out = f"({self._cond(c)} ? {self._print(e)} : {out})"
        return out

    # -- functions -----------------------------------------------------------------------
    def _function(self, expr) -> str:
        name = type(expr).__name__
        args = expr.args
        if name == "exp":
            a = self._print(args[0])
            if self.clamp_exp:
                a = f"{self._fn('gn_min')}({a}, {self._lit(EXP_BOUND[self.dtype])})"
            return f"{self._fn('exp')}({a})"
        if name == "log" and args[0].is_Add and sp.S.One in args[0].args:
            return f"{self._fn('log1p')}({self._print(args[0] - 1)})"
        if name == "Heaviside":
            h0 = args[1] if len(args) > 1 and args[1].is_number else sp.S.Half
            return f"{self._fn('gn_heaviside')}({self._print(args[0])}, {self._lit(h0)})"
        if name in ("Max", "Min"):
            fn = self._fn(_HELPER_FNS[name])
            out = self._print(args[0])
            for a in args[1:]:
                out = f"{fn}({out}, {self._print(a)})"
            return out
        if name == "sign":
            return f"{self._fn('gn_sign')}({self._print(args[0])})"
        if name in _MATH:
            return f"{self._fn(_MATH[name])}({', '.join(self._print(a) for a in args)})"
        raise ValueError(f"no CUDA C for function {name} (in {expr})")


def _needs_parens(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and ch in "+-*/?<>=!&|":
            return True
    return False


def _check_ident(name: str) -> str:
    if not isinstance(name, str) or not _IDENT.match(name) or name in _RESERVED \
            or name.startswith("__"):
        raise ValueError(f"not a usable C name: {name!r}")
    return name


def _prepare(expr) -> sp.Expr:
    """log(1 + u) as log1p(u) before CSE can hide the `1 +` behind a temporary."""
    expr = sp.sympify(expr)
    return expr.replace(lambda e: isinstance(e, sp.log) and e.args[0].is_Add
                        and sp.S.One in e.args[0].args,
                        lambda e: log1p(e.args[0] - 1))


def expr_code(expr, names: dict, dtype, clamp_exp: bool = True, types: dict | None = None) -> str:
    """One C expression for `expr`, its symbols replaced by `names[symbol]`
    (read through a cast where `types[symbol]` is not `dtype`: see CudaCPrinter)."""
    return CudaCPrinter(dtype, names, clamp_exp, types).print_expr(_prepare(expr))


def kernel_body(outputs: list[tuple[str, sp.Expr]], names: dict, dtype,
                clamp_exp: bool = True, types: dict | None = None) -> str:
    """The `operation` of an element-wise kernel: common subexpressions as
    `const float _t0 = ...;` (bool for a shared condition), then `out = expr;` per
    output. Names `_t<k>` are reserved for the temporaries. Deterministic text.
    Pass `types` (symbol -> dtype of its kernel parameter) whenever an input is not
    of the kernel's dtype: without it, two int64 inputs `a0/a1` divide as integers."""
    dtype = _check_dtype(dtype)
    for n in list(names.values()) + [o for o, _ in outputs]:
        _check_ident(n)
        if _TEMP.match(n):
            raise ValueError(f"C name {n!r} is reserved for kernel_body's temporaries")
    outs = [o for o, _ in outputs]
    if len(set(outs)) != len(outs):
        raise ValueError(f"duplicate output names: {outs}")
    exprs = [_prepare(e) for _, e in outputs]
    temps = sp.numbered_symbols("_t", real=True)
    replacements, reduced = sp.cse(exprs, symbols=temps, order="none")
    all_names = dict(names)
    lines = []
    printer = CudaCPrinter(dtype, all_names, clamp_exp, types)
    for sym, e in replacements:
        text = printer.print_expr(e) if not isinstance(e, sp.logic.boolalg.Boolean) or \
            e.is_Symbol else printer._cond(e)
        ctype = "bool" if isinstance(e, sp.logic.boolalg.Boolean) and not e.is_Symbol \
            else printer.ctype
        lines.append(f"const {ctype} {sym.name} = {text};")
        printer.names[sym] = sym.name
    for out, e in zip(outs, reduced):
        lines.append(f"{out} = {printer.print_expr(e)};")
    return "\n".join(lines)


def kernel_name(text: str, max_len: int = 48) -> str:
    """A short valid C identifier made from any text (`fused_tanh_mul_add`)."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", str(text))
    name = re.sub(r"_+", "_", name).strip("_")
    if len(name) > max_len:  # keep it unique: a hash of the whole text
        digest = hashlib.sha1(str(text).encode()).hexdigest()[:8]
        name = name[:max_len - 9].rstrip("_") + "_" + digest
    if not name:
        name = "kernel"
    if name[0].isdigit():
        name = "k_" + name
    if name in _RESERVED or name.lower().startswith("cuda"):
        name = name + "_k"
    return name
