"""Element-wise ops, each declared by one SymPy expression.

`declare("sigmoid", "1/(1+exp(-x))")` is the whole definition of an activation:
its shape rule is broadcasting, its NumPy code is printed from the expression,
its derivatives are `sympy.diff` of the expression, themselves element-wise ops
(named `sigmoid_dx`, made on demand), so derivatives of derivatives work and
every local derivative has a SymPy form that can be shown in LaTeX.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import precedence

from .. import dtypes
from ..graph import attrs_items
from . import shapes
from .scalar import exp_bound
from .registry import Mismatch, OpDef, add_deriver, attr_float, register, REGISTRY

# Real symbols, so that diff(Abs(x)) is sign(x) and comparisons make sense.
ARG_NAMES = ("x", "y", "z", "a", "b", "c", "d")
SYMBOLS = {n: sp.Symbol(n, real=True) for n in ARG_NAMES}
_SAFE_NAMES = {
    "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "tanh": sp.tanh, "Abs": sp.Abs,
    "sign": sp.sign, "erf": sp.erf, "Max": sp.Max, "Min": sp.Min, "Piecewise": sp.Piecewise,
    "Heaviside": sp.Heaviside, "pi": sp.pi, "sin": sp.sin, "cos": sp.cos, "Eq": sp.Eq,
    "Ne": sp.Ne, "Rational": sp.Rational,
}


@dataclass(frozen=True)
class ElementwiseSpec:
    name: str
    args: tuple[str, ...]
    expr: sp.Expr
    params: tuple[tuple[str, float], ...] = ()  # (name, default) substituted at print time
    base: str | None = None                      # for derived ops: the op differentiated
    wrt: str | None = None

    @property
    def arg_symbols(self):
        return [SYMBOLS[a] for a in self.args]

    def concrete(self, attrs: dict) -> sp.Expr:
        """The expression with its parameters replaced by the node's attribute values."""
        if not self.params:
            return self.expr
        return self.expr.xreplace({sp.Symbol(p, real=True): sp.Float(attrs[p]) for p, _ in self.params})


class ExprPrinter(NumPyPrinter):
    """NumPy printer for element-wise expressions, tuned for generated code people read.

    * `Piecewise` prints as nested `np.where` (never `np.select`); numeric branches
      are typed (`np.float32(1.0)`) so a branch never changes the dtype.
    * `log(1 + u)` prints as `np.log1p(u)`.
    * `exp(u)` *inside a larger expression* prints as `np.exp(np.minimum(u, B))`
      with B = 300 (float64) or 40 (float32): expressions such as
      `x*exp(-x)/(1+exp(-x))**2` (the derivative of SiLU) would otherwise evaluate
      inf/inf = nan where the true value underflows to 0. Values are unchanged
      wherever exp(u) <= exp(B); beyond, they are at most exp(-B) off (absolute).
    * `Heaviside(u)` prints as `np.heaviside(u, 0.5)`; `DiracDelta` never reaches
      the printer (derivatives replace it by 0, its value almost everywhere).
    """

    def __init__(self, dtype="float64", clamp_exp=True):
        super().__init__({"fully_qualified_modules": True})
        self._dtype = np.dtype(dtype).name
        self._clamp = clamp_exp
        self._exp_bound = repr(exp_bound(self._dtype))

    def _module_format(self, fqn, register=True):
        return super()._module_format(fqn, register).replace("numpy.", "np.")

    def _print(self, expr, **kwargs):
        # A constant like sqrt(2) or sqrt(pi) printed as np.sqrt(2) is a float64 NumPy
        # scalar that promotes float32 arrays to float64 (NEP 50); a Python float
        # literal is weakly typed and keeps the array's dtype.
        if isinstance(expr, sp.Basic) and expr.is_number and expr.is_real \
                and not expr.is_Rational and not expr.is_Float:
            v = float(expr)
            return repr(v) if v >= 0 else f"({v!r})"
        return super()._print(expr, **kwargs)

    def _typed(self, e):
        if e.is_Number:
            return f"np.{self._dtype}({float(e)!r})"
        return self._print(e)

    def _print_Piecewise(self, expr):
        *branches, (last, cond) = expr.args
        out = self._typed(last) if cond == sp.true else f"np.where({self._print(cond)}, {self._typed(last)}, np.nan)"
        for e, c in reversed(branches):
            out = f"np.where({self._print(c)}, {self._typed(e)}, {out})"
        return out

    def _print_Relational(self, expr):
        ops = {">": ">", "<": "<", ">=": ">=", "<=": "<=", "==": "==", "!=": "!="}
        op = ops.get(expr.rel_op)
        if op is None:
            return super()._print_Relational(expr)
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    def _print_exp(self, expr):
        arg = self._print(expr.args[0])
        if self._clamp:
            return f"np.exp(np.minimum({arg}, {self._exp_bound}))"
        return f"np.exp({arg})"

    def _print_log(self, expr):
        arg = expr.args[0]
        if arg.is_Add and sp.S.One in arg.args:
            return f"np.log1p({self._print(arg - 1)})"
        return f"np.log({self._print(arg)})"

    def _print_Max(self, expr):
        return self._nested("np.maximum", expr.args)

    def _print_Min(self, expr):
        return self._nested("np.minimum", expr.args)

    def _nested(self, fn, args):
        # NumPyPrinter prints Max/Min as functools.reduce(...), which generated code lacks
        out = self._print(args[0])
        for a in args[1:]:
            out = f"{fn}({out}, {self._print(a)})"
        return out

    def _print_Heaviside(self, expr):
        return f"np.heaviside({self._print(expr.args[0])}, {self._typed(sp.Float(0.5))})"

    def _print_erf(self, expr):
        return f"_erf({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        return f"np.sign({self._print(expr.args[0])})"

    def _print_Pow(self, expr, rational=False):
        base, e = expr.args
        if e == sp.S.Half:
            return f"np.sqrt({self._print(base)})"
        if e == -sp.S.Half:
            return f"1/np.sqrt({self._print(base)})"
        if e == -1:
            return f"1/{self.parenthesize(base, precedence(expr))}"
        if e.is_Integer and e < 0:
            return f"1/{self.parenthesize(base, precedence(expr))}**{-int(e)}"
        return f"{self.parenthesize(base, precedence(expr))}**{self.parenthesize(e, precedence(expr))}"


ELEMENTWISE: dict[str, ElementwiseSpec] = {}


def _parse(expr: str, params) -> sp.Expr:
    local = dict(_SAFE_NAMES)
    local.update(SYMBOLS)
    for p, _ in params:
        local[p] = sp.Symbol(p, real=True)
    return sp.sympify(expr, locals=local)


def declare(name: str, expr: str, args: tuple[str, ...] = ("x",), infix: str | None = None,
            doc: str = "", **params: float) -> OpDef:
    """Declare an element-wise op from a SymPy expression in `args` (and `params`)."""
    ps = tuple(params.items())
    spec = ElementwiseSpec(name, tuple(args), _parse(expr, ps), ps)
    return _register_spec(spec, infix=infix, doc=doc or expr)


@functools.lru_cache(maxsize=None)
def template(op_name: str, attrs_key: tuple, dtype: str, compound: bool = True) -> str:
    """NumPy code for the op with `{0}`, `{1}`... standing for the argument expressions."""
    spec = ELEMENTWISE[op_name]
    expr = spec.concrete(dict(attrs_key))
    placeholders = {s: sp.Symbol(f"GNARG{i}X", real=True) for i, s in enumerate(spec.arg_symbols)}
    body = expr.xreplace(placeholders)
    # exp(x) alone is exactly np.exp; clamping matters only inside larger expressions
    clamp = not (isinstance(expr, sp.exp) and expr.args[0] in spec.arg_symbols)
    text = ExprPrinter(dtype, clamp_exp=clamp).doprint(body)
    return _PLACEHOLDER.sub(lambda m: "{" + m.group(1) + "}", text.replace("{", "{{").replace("}", "}}"))


_PLACEHOLDER = re.compile(r"GNARG(\d+)X")


_SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$|^[0-9.e+]+$")


def _wrap(code: str) -> str:
    return code if _SIMPLE.match(code) else f"({code})"


def _infer(spec):
    def infer(inputs, attrs):
        shape = shapes.broadcast(*[i.shape for i in inputs])
        return shape, dtypes.result_float(*[i.dtype for i in inputs])
    return infer


def _numpy(spec):
    def code(args, attrs, node):
        t = template(spec.name, attrs_items(attrs), node.dtype.name)
        return t.format(*[_cast(a, i, node) for a, i in zip(args, node.inputs)])
    return code


def _cast(code: str, inp, node) -> str:
    """An integer or bool argument converted to the node's float dtype first.

    The dtype rule (`dtypes.result_float`) says int64 + float32 is float32 and
    int32 + int64 is float64; NumPy alone would compute float64 and int64. Casting
    the integer operands makes what runs what the node declares (issue 14, D14)."""
    if inp.dtype.kind in "biu" and node.dtype.kind == "f":
        return f"np.asarray({code}, dtype=np.{node.dtype.name})"
    return _wrap(code)


def _sym(spec):
    def meaning(args, attrs, node):
        expr = spec.concrete(attrs)
        syms = spec.arg_symbols

        def one(*vals):
            return expr.xreplace(dict(zip(syms, vals)))
        return np.vectorize(one, otypes=[object])(*args)
    return meaning


def _register_spec(spec: ElementwiseSpec, infix=None, doc="") -> OpDef:
    ELEMENTWISE[spec.name] = spec
    attr_checks = {p: attr_float for p, _ in spec.params}
    defaults = dict(spec.params)
    helpers = ("_erf",) if spec.expr.has(sp.erf) else ()
    return register(OpDef(
        name=spec.name, infer_fn=_infer(spec), numpy=_numpy(spec),
        vjp=_vjp(spec), jvp=_jvp(spec), sym=_sym(spec), attrs=attr_checks,
        defaults=defaults, arity=len(spec.args), infix=infix, elementwise=spec,
        helpers=helpers, doc=doc))


# -- derivatives -----------------------------------------------------------------------

@functools.lru_cache(maxsize=None)  # sympy.diff per VJP made deep graphs' gradients slow
def derivative_expr(spec: ElementwiseSpec, arg: str) -> sp.Expr:
    """d expr / d arg, in a form safe to evaluate.

    `powsimp` turns SymPy's `y*x**y/x` (the derivative of x**y, which is 0/0 = nan at
    x = 0: the gradient of (yhat - y)**2 at a perfect fit) back into `y*x**(y - 1)`;
    it only merges powers, so it cannot hang like `simplify`. DiracDelta (derivative
    of sign/Heaviside) is 0 almost everywhere."""
    d = sp.powsimp(sp.diff(spec.expr, SYMBOLS[arg]))
    return d.replace(sp.DiracDelta, lambda *a: sp.S.Zero)


def _derived_name(base: str, arg: str) -> str:
    return f"{base}_d{arg}"


def derived_spec(base: str, arg: str) -> ElementwiseSpec:
    """The element-wise op `d base / d arg`, over the base arguments it still uses."""
    name = _derived_name(base, arg)
    if name in ELEMENTWISE:
        return ELEMENTWISE[name]
    spec = ELEMENTWISE[base]
    d = derivative_expr(spec, arg)
    used = tuple(a for a in spec.args if SYMBOLS[a] in d.free_symbols)
    # keep the parameters' names; rename the used args to x, y, ... in order
    rename = {SYMBOLS[a]: SYMBOLS[ARG_NAMES[i]] for i, a in enumerate(used)}
    new = ElementwiseSpec(name, ARG_NAMES[:len(used)], d.xreplace(rename), spec.params,
                          base=base, wrt=arg)
    _register_spec(new, doc=f"d {base} / d {arg}")
    DERIVED_ARGS[name] = used
    return new


DERIVED_ARGS: dict[str, tuple[str, ...]] = {}
_DERIVED = re.compile(r"^(.+)_d([a-z])$")


def _deriver(name: str):
    m = _DERIVED.match(name)
    if not m:
        return None
    base, arg = m.groups()
    if base not in ELEMENTWISE:
        from .registry import get_op
        try:
            get_op(base)  # may itself be derived
        except Exception:
            return None
        if base not in ELEMENTWISE:
            return None
    if arg not in ELEMENTWISE[base].args:
        return None
    derived_spec(base, arg)
    return REGISTRY[name]


add_deriver(_deriver)


def partial(node, k: int):
    """The node `d node / d input_k` (or a number when it is constant, None when 0)."""
    spec = ELEMENTWISE[node.op]
    arg = spec.args[k]
    d = derivative_expr(spec, arg)
    if d == 0:
        return None
    if d.is_Number:
        return float(d)
    syms = dict(zip(spec.arg_symbols, node.inputs))
    if d in syms:
        return syms[d]
    if d == spec.expr:
        return node
    dspec = derived_spec(spec.name, arg)
    used = DERIVED_ARGS[dspec.name]
    ins = [node.inputs[spec.args.index(a)] for a in used]
    params = {p: node.attrs[p] for p, _ in spec.params}
    return node.graph.apply(dspec.name, ins, params)


def _vjp(spec):
    def vjp(node, ct, needs):
        from . import api
        out = []
        for k, inp in enumerate(node.inputs):
            if not needs[k]:
                out.append(None)
                continue
            d = partial(node, k)
            if d is None:
                out.append(None)
                continue
            g = api.scale(ct, d) if isinstance(d, float) else ct * d
            out.append(api.unbroadcast(g, inp.shape))
        return out
    return vjp


def _jvp(spec):
    def jvp(node, tangents):
        from . import api
        total = None
        for k, t in enumerate(tangents):
            if t is None:
                continue
            d = partial(node, k)
            if d is None:
                continue
            term = api.scale(t, d) if isinstance(d, float) else d * t
            total = term if total is None else total + term
        if total is not None and total.shape != node.shape:
            total = api.broadcast_like(total, node)
        return total
    return jvp
