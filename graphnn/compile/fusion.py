"""Element-wise fusion: a tree of element-wise nodes becomes one SymPy expression
(substitution of each node's declared expression into the next), which is then
printed as a short sequence of in-place ufunc calls writing into preallocated
buffers (`np.multiply(a, b, out=buf)`).

NumPy cannot fuse loops, so what fusion buys here is: no buffer per node, SymPy's
canonical form (`d*c + d*c` -> `2*c*d`), and values reused instead of recomputed
(`1 - tanh(z)**2` -> `1 - h**2` where the forward already computed `h = tanh(z)`).

The expensive part (SymPy) depends only on a fused group's *structure*, so it is
cached by a structural key; a depth-1024 network has a handful of distinct keys.
Expressions are small (groups are capped at MAX_GROUP nodes) and walked with
Python recursion over the *expression*, never over the graph.
"""
from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import sympy as sp

from ..ops.elementwise import ExprPrinter
from ..ops.scalar import exp_bound

MAX_GROUP = 24  # element-wise nodes fused into one expression, at most

_UFUNC = {sp.exp: "np.exp", sp.log: "np.log", sp.tanh: "np.tanh", sp.Abs: "np.absolute",
          sp.sign: "np.sign", sp.sin: "np.sin", sp.cos: "np.cos"}
_MASK_OPS = ("np.multiply", "np.maximum", "np.minimum")  # boolean operands mean 0/1 there
_CMP = {">": "np.greater", "<": "np.less", ">=": "np.greater_equal", "<=": "np.less_equal",
        "==": "np.equal", "!=": "np.not_equal"}


@functools.lru_cache(maxsize=None)
def leaf_symbol(k: int) -> sp.Symbol:
    return sp.Symbol(f"L{k}", real=True)


@functools.lru_cache(maxsize=None)
def node_expr_template(op: str, attrs_key: tuple):
    """(expression, argument symbols) of an element-wise op with its attributes bound."""
    from ..ops.registry import get_op
    spec = get_op(op).elementwise  # derived ops (relu_dx) are made on demand
    return spec.concrete(dict(attrs_key)), tuple(spec.arg_symbols)


def substitute(op: str, attrs_key: tuple, args: list) -> sp.Expr:
    expr, syms = node_expr_template(op, attrs_key)
    return expr.xreplace(dict(zip(syms, args)))


class Emitter:
    """Prints one expression as ufunc calls.

    `shapes[k]` is the shape class of leaf `Lk` ("full": the output's shape,
    "scalar", or another tuple); the result goes to `{OUT}`; `{T0}`... are
    float temporaries of the output's shape and `{B0}`... boolean ones.
    `{OUT}` may alias leaf `alias` (in-place): then only the last call writes it.
    `{F0}`... are read-only arrays of the output's shape filled with a number
    (`fills[k]`): np.maximum and np.minimum have no fast loop for a scalar operand
    (NumPy 2.4, 128 x 256 float64: 17 us against a scalar, 4.2 us against an
    array of zeros; 0.51 against 0.33 us at 4 x 2), so relu and the exp clamp
    compare with such an array."""

    def __init__(self, shapes: dict[sp.Symbol, object], dtype: str, alias: sp.Symbol | None):
        self.shapes = shapes
        self.dtype = dtype
        self.alias = alias
        self.lines: list[str] = []
        self.free_t: list[int] = []
        self.n_t = 0
        self.free_b: list[int] = []
        self.n_b = 0
        self.fills: list[str] = []
        self.scalar_printer = ExprPrinter(dtype)
        self.exp_bound = repr(exp_bound(dtype))

    # -- shapes and registers ---------------------------------------------------------
    def klass(self, e) -> str:
        ks = {self.shapes[s] for s in e.free_symbols}
        if not ks or ks == {"scalar"}:
            return "scalar"
        return "full" if "full" in ks else "other"

    def temp(self) -> str:
        if self.free_t:
            return f"{{T{self.free_t.pop()}}}"
        self.n_t += 1
        return f"{{T{self.n_t - 1}}}"

    def btemp(self) -> str:
        if self.free_b:
            return f"{{B{self.free_b.pop()}}}"
        self.n_b += 1
        return f"{{B{self.n_b - 1}}}"

    def fill(self, number: str) -> str:
        """The placeholder of a full-shape array of `number` (a literal)."""
        if number not in self.fills:
            self.fills.append(number)
        return f"{{F{self.fills.index(number)}}}"

    def release(self, reg: str) -> None:
        if reg.startswith("{T"):
            self.free_t.append(int(reg[2:-1]))
        elif reg.startswith("{B"):
            self.free_b.append(int(reg[2:-1]))

    # -- entry --------------------------------------------------------------------------
    def emit(self, expr: sp.Expr) -> list[str]:
        """Lines computing `expr` into {OUT} (which always has the output's full shape)."""
        if self.klass(expr) != "full" or expr.is_Symbol:
            self.lines.append(f"np.copyto({{OUT}}, {self.operand(expr, None)})")
            return self.lines
        self.value(expr, "{OUT}")
        return self.lines

    def operand(self, e, dest: str | None, mask_ok: bool = False) -> str:
        """A string naming e's value: a leaf, a literal, a scalar expression, or a register.

        A 0/1 mask may be a boolean temporary (cheaper) only where the caller says so
        (`mask_ok`): as a factor of a product, an operand of max/min or a comparison.
        Elsewhere NumPy has no boolean loop (`np.sign`, `np.negative`), adds two as a
        logical or, or picks its float16 loop (`np.exp` of a boolean)."""
        if mask_ok and _is_mask(e) and self.klass(e) == "full":
            bt = self.btemp()
            self._compare(e.args[0][1], bt, None)
            return bt
        if e.is_Symbol:
            return "{" + e.name + "}"
        if e.is_Number:
            return _number(e)
        if self.klass(e) == "scalar":
            return "(" + self._scalar(e) + ")"
        if self.klass(e) == "other":  # smaller than the output: plain (allocating) NumPy
            return "(" + self._scalar(e) + ")"
        reg = dest if dest is not None else self.temp()
        self.value(e, reg)
        return reg

    def _scalar(self, e) -> str:
        text = self.scalar_printer.doprint(e)
        for s in e.free_symbols:
            text = text.replace(s.name, "{" + s.name + "}")
        return text

    def _dest_ok(self, dest: str) -> bool:
        """May an inner call write `dest` before the last call? Not if it aliases a leaf."""
        return not (dest == "{OUT}" and self.alias is not None)

    # -- one expression node into register `dest` -----------------------------------------
    def value(self, e, dest: str) -> None:
        inner = dest if self._dest_ok(dest) else None
        if e.is_Add:
            self._chain(e.args, dest, inner, "np.add", "np.subtract", _negated)
        elif e.is_Mul:
            coeff, rest = e.as_coeff_Mul()
            if coeff == -1:
                r = self.operand(rest, inner)
                self.lines.append(f"np.negative({r}, out={dest})")
                self.release_if(r, dest)
                return
            self._chain(e.args, dest, inner, "np.multiply", "np.divide", _inverted)
        elif e.is_Pow:
            self._pow(e, dest, inner)
        elif isinstance(e, sp.Piecewise):
            self._piecewise(e, dest, inner)
        elif isinstance(e, (sp.Max, sp.Min)):
            fn = "np.maximum" if isinstance(e, sp.Max) else "np.minimum"
            args = list(e.args)
            self._chain(args, dest, inner, fn, None, lambda a: None)
        elif isinstance(e, sp.exp):
            a = self.operand(e.args[0], inner)
            if a.startswith("{T") or a == dest:
                self.lines.append(f"np.minimum({a}, {self.fill(self.exp_bound)}, out={a})")
            else:  # clamp as the plain printer does inside larger expressions
                t = inner if inner is not None else self.temp()
                self.lines.append(f"np.minimum({a}, {self.fill(self.exp_bound)}, out={t})")
                a = t
            self.lines.append(f"np.exp({a}, out={dest})")
            self.release_if(a, dest)
        elif isinstance(e, sp.log) and e.args[0].is_Add and sp.S.One in e.args[0].args:
            a = self.operand(e.args[0] - 1, inner)
            self.lines.append(f"np.log1p({a}, out={dest})")
            self.release_if(a, dest)
        elif e.func in _UFUNC:
            a = self.operand(e.args[0], inner)
            self.lines.append(f"{_UFUNC[e.func]}({a}, out={dest})")
            self.release_if(a, dest)
        elif isinstance(e, sp.Heaviside):
            a = self.operand(e.args[0], inner)
            self.lines.append(f"np.heaviside({a}, 0.5, out={dest})")
            self.release_if(a, dest)
        elif isinstance(e, sp.Rel):
            self._compare(e, dest, inner)
        else:  # anything else: the plain printer's NumPy, copied in
            self.lines.append(f"np.copyto({dest}, {self._scalar(e)})")

    def release_if(self, reg: str, dest: str) -> None:
        if reg != dest:
            self.release(reg)

    def _chain(self, args, dest, inner, op, inv_op, split):
        """a op b op c ...; terms that `split` recognises use the inverse op."""
        if op == "np.multiply":
            args = self._pull_scalars(args)
        elif op in ("np.maximum", "np.minimum"):  # numbers last: they become filled arrays
            args = sorted(args, key=lambda a: a.is_Number)
        scal = [a for a in args if self.klass(a) == "scalar"]
        if len(scal) > 1 and inv_op is not None:  # one scalar operand for all scalar factors
            combined = (sp.Add if op == "np.add" else sp.Mul)(*scal)
            args = [a for a in args if self.klass(a) != "scalar"] + [combined]
        terms = []
        for a in args:
            s = split(a) if inv_op else None
            terms.append((True, s) if s is not None else (False, a))
        # an array-valued direct term first: it can be computed straight into dest
        terms.sort(key=lambda t: (t[0], self._rank(t[1])))
        (inv0, first), rest = terms[0], terms[1:]
        lead = next((t for inv, t in terms if inv and self._rank(t) == 0), None)
        if not inv0 and self._rank(first) == 1 and self.klass(first) == "full" and lead is not None:
            # only leaves to start from, but an inverted term to compute: compute it
            # first and apply the inverse op into its register (`a / (b + c)` is
            # `t = b + c; np.divide(a, t, out=t)`), in place rather than into a third array
            reg = self.operand(lead, inner)
            rest = [t for t in rest if t[1] is not lead]
            target = dest if not rest or inner is not None else \
                reg if reg.startswith("{T") else self.temp()
            self.lines.append(f"{inv_op}({self.operand(first, None)}, {reg}, out={target})")
            self.release_if(reg, target)
            acc = target
        elif inv0:  # every term inverted: 0 - a - b or 1 / a / b
            acc = "0.0" if op == "np.add" else "1.0"
            rest = terms
        else:
            acc = self.operand(first, inner, mask_ok=op in _MASK_OPS)
        if not rest:
            if acc != dest:
                self.lines.append(f"np.copyto({dest}, {acc})")
            return
        for k, (inv, t) in enumerate(rest):
            last = k == len(rest) - 1
            acc_reg = acc.startswith("{T") or acc == dest
            if last or inner is not None:
                target = dest
            else:
                target = acc if acc.startswith("{T") else self.temp()
            # a term may use dest as scratch while the accumulator is not held there
            if op in ("np.maximum", "np.minimum") and t.is_Number:  # see the class docstring
                b = self.fill(_number(t))
            else:
                b = self.operand(t, inner if (inner is not None and not acc_reg) else None,
                                 mask_ok=op in _MASK_OPS)
            self.lines.append(f"{inv_op if inv else op}({acc}, {b}, out={target})")
            self.release_if(b, target)
            if acc != target:
                self.release_if(acc, dest)
            acc = target

    def _pull_scalars(self, factors):
        """Move a scalar factor common to the array terms of a sum out into the
        product's scalar: `c * m / (sqrt(v)/s + e)` -> `(c*s) * m / (sqrt(v) + e*s)`,
        one whole-array division fewer (Adam's update is this). Only when the
        product already has a scalar factor, so no call is added; only factors that
        are nonzero numbers or divisions (`1/s`), so a zero at run time gives the
        same inf/nan as the original instead of turning a finite value into nan."""
        if not any(self.klass(f) == "scalar" for f in factors):
            return factors
        out = []
        for f in factors:
            base, ex = (f.args[0], f.args[1]) if f.is_Pow else (f, sp.S.One)
            if not base.is_Add or ex not in (1, -1) or self.klass(base) != "full":
                out.append(f)
                continue
            common = None
            for t in base.args:
                if self.klass(t) == "scalar":
                    continue
                mine = Counter(a for a in sp.Mul.make_args(t) if _safe_to_pull(a, self))
                common = mine if common is None else common & mine
            if not common:
                out.append(f)
                continue
            k = sp.Mul(*[a ** n for a, n in common.items()])
            out += [sp.Add(*[t / k for t in base.args]) ** ex, k ** ex]
        return out

    def _rank(self, e) -> int:
        k = self.klass(e)
        if e.is_Symbol or e.is_Number or k != "full":
            return 1
        return 0

    def _pow(self, e, dest, inner):
        base, ex = e.args
        if ex == 2:
            a = self.operand(base, inner)  # np.multiply(a, a, out=b) ran 2x slower (NumPy 2.4)
            self.lines.append(f"np.square({a}, out={dest})")
            self.release_if(a, dest)
        elif ex == sp.S.Half:
            a = self.operand(base, inner)
            self.lines.append(f"np.sqrt({a}, out={dest})")
            self.release_if(a, dest)
        elif ex == -1:
            a = self.operand(base, inner)
            self.lines.append(f"np.divide(1.0, {a}, out={dest})")
            self.release_if(a, dest)
        elif ex == -sp.S.Half:
            a = self.operand(base, inner)
            self.lines.append(f"np.sqrt({a}, out={dest})")
            self.lines.append(f"np.divide(1.0, {dest}, out={dest})")
            self.release_if(a, dest)
        else:
            a = self.operand(base, inner)
            b = self.operand(ex, None)
            self.lines.append(f"np.power({a}, {b}, out={dest})")
            self.release_if(a, dest)
            self.release(b)

    def _compare(self, e, dest, inner):
        op = _CMP[e.rel_op]
        a = self.operand(e.lhs, None, mask_ok=True)
        b = self.operand(e.rhs, None, mask_ok=True)
        self.lines.append(f"{op}({a}, {b}, out={dest})")
        self.release(a)
        self.release(b)

    def _piecewise(self, e, dest, inner):
        (v, cond), *rest = e.args
        if len(rest) == 1 and rest[0][1] == sp.true and rest[0][0] == 0 \
                and isinstance(cond, sp.Rel):
            # relu-like: max(x, 0) when the branch is the compared value
            if cond.rel_op == ">" and cond.lhs == v and cond.rhs == 0 and v.is_Symbol:
                self.lines.append(f"np.maximum({{{v.name}}}, {self.fill('0.0')}, out={dest})")
                return
            if v == 1:  # a 0/1 mask
                self._compare(cond, dest, inner)
                return
            # v * (cond): the mask in a boolean temporary
            bt = self.btemp()
            self._compare(cond, bt, None)
            a = self.operand(v, inner, mask_ok=True)
            self.lines.append(f"np.multiply({a}, {bt}, out={dest})")
            self.release(bt)
            self.release_if(a, dest)
            return
        self.lines.append(f"np.copyto({dest}, {self._scalar(e)})")


def rewrite_products(expr: sp.Expr, pull) -> sp.Expr:
    """`expr` with `pull` (Emitter._pull_scalars) applied to every product, inner first:
    the fused loops (loops.py) divide once per element where the expression has a
    scalar common to a denominator's terms, as the ufunc calls do."""
    if expr.is_Atom:
        return expr
    args = [rewrite_products(a, pull) for a in expr.args]
    if expr.is_Mul:
        return sp.Mul(*pull(args))
    return expr.func(*args) if any(a is not b for a, b in zip(args, expr.args)) else expr


def _safe_to_pull(a, em: "Emitter") -> bool:
    if em.klass(a) != "scalar":
        return False
    if a.is_Number:
        return a != 0
    return a.is_Pow and a.args[1].is_Number and a.args[1] < 0


def _negated(e):
    if e.is_Mul:
        c, rest = e.as_coeff_Mul()
        if c.is_Number and c < 0:
            return -e
    if e.is_Number and e < 0:
        return -e
    return None


def _inverted(e):
    if e.is_Pow and e.args[1] == -1:
        return e.args[0]
    return None


def _number(e) -> str:
    if e.is_Integer:
        return f"{int(e)}.0"
    return repr(float(e))


def emit(expr: sp.Expr, shapes: dict, dtype: str, alias: sp.Symbol | None):
    """(lines, number of float temps, number of boolean temps, fill numbers) for
    `{OUT} = expr` (see Emitter for the placeholders)."""
    if alias is not None:
        # writing {OUT} early is still safe when every read of the aliased leaf comes first
        free = Emitter(shapes, dtype, None)
        lines = free.emit(expr)
        leaf = "{" + alias.name + "}"
        last_read = max((k for k, ln in enumerate(lines) if leaf in ln), default=-1)
        first_write = min((k for k, ln in enumerate(lines) if _writes_out(ln)), default=0)
        if first_write >= last_read:
            return lines, free.n_t, free.n_b, free.fills
    em = Emitter(shapes, dtype, alias)
    lines = em.emit(expr)
    return lines, em.n_t, em.n_b, em.fills


def _writes_out(line: str) -> bool:
    """Whether a generated call writes {OUT}: as a ufunc's `out=` or as np.copyto's
    destination (a Piecewise or any expression printed whole is copied in)."""
    return "out={OUT}" in line or line.startswith("np.copyto({OUT},")


def _is_mask(e) -> bool:
    """Piecewise((1, comparison), (0, True))."""
    return isinstance(e, sp.Piecewise) and len(e.args) == 2 and e.args[0][0] == 1 \
        and isinstance(e.args[0][1], sp.Rel) and e.args[1][0] == 0 and e.args[1][1] == sp.true
