"""Symbolic mode: the SymPy meaning of a node, its closed-form gradient, its LaTeX.

`expression(node)` walks the ancestors of `node` in topological order (a loop,
no recursion over the graph) and applies each op's `OpDef.sym` to NumPy object
arrays of SymPy expressions: every element of every input and parameter is a
real `Symbol` (a scalar leaf keeps its name, `b`; an element of an array leaf is
`W1_0_1`), constants become exact SymPy numbers where their decimal form is
short (0.5 -> 1/2), otherwise Floats.

`grad(y, wrt, mode="symbolic")` differentiates the closed form of the scalar `y`
with `sympy.diff` (one derivative per element symbol), shares repeated work with
`sympy.cse(order="none")` and puts the result back into the graph as nodes
(role `backward`, scope of the node differentiated): element symbols become
`index` nodes of their leaf, SymPy operations map to graphnn ops through the
fixed table `SYMPY_TO_OP`, and the element gradients are stacked and reshaped
into the shape of w. The conversion walks SymPy trees with an explicit stack.

Limits (why: SymPy works on trees, not DAGs; a composed closed form grows
exponentially with depth, and SymPy recurses, so deep expressions hit Python's
recursion limit -- sympy#8469: nine nested sigmoids never finished):

* `max_size` (default `MAX_SIZE` = 10,000): the number of tree nodes of a
  node's expression (summed over its elements, shared subtrees counted every
  time they occur, as SymPy's algorithms see them). The derivatives may be at
  most `GRAD_SIZE_FACTOR` times that.
* `max_depth` (default `MAX_DEPTH` = 100): the depth of any element's tree.
* `max_piecewise` (default `MAX_PIECEWISE` = 4): how deeply `Piecewise`
  (relu, where, comparisons) may nest; SymPy rewrites conditions that contain
  a Piecewise into nested if-then-else forms whose size doubles at each level.

Sizes are measured with an iterative, memoized walk after every graph node and
estimated *before* building an element-wise node, so an expression that would
be too large is refused with a `GraphError` naming the node, quickly, instead
of hanging. `simplify` is never called.
"""
from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np
import sympy as sp

from ..errors import GraphError, ShapeError
from ..graph import Node
from ..ops import api
from ..ops.elementwise import ELEMENTWISE, derivative_expr
from ..ops.interpret import evaluate
from ..ops.registry import get_op

MAX_SIZE = 10_000
MAX_DEPTH = 100
MAX_PIECEWISE = 4
GRAD_SIZE_FACTOR = 20

__all__ = ["expression", "elements", "symbols", "latex", "grad", "local_derivative",
           "local_expression", "MAX_SIZE", "MAX_DEPTH", "MAX_PIECEWISE", "SYMPY_TO_OP"]


# -- sizes ------------------------------------------------------------------------------------

class _Sizer:
    """Tree size, depth and Piecewise nesting of SymPy expressions, memoized by identity."""

    def __init__(self):
        self.memo: dict[int, tuple[int, int, int]] = {}
        self.keep: list = []  # keeps measured objects alive so their ids stay unique

    def measure(self, e) -> tuple[int, int, int]:
        memo = self.memo
        got = memo.get(id(e))
        if got is not None:
            return got
        stack = [(e, False)]
        while stack:
            cur, expanded = stack.pop()
            if id(cur) in memo:
                continue
            args = cur.args if isinstance(cur, sp.Basic) else ()
            if not expanded and any(id(a) not in memo for a in args):
                stack.append((cur, True))
                stack.extend((a, False) for a in args if id(a) not in memo)
                continue
            size, depth, pw = 1, 1, 0
            for a in args:
                s, d, p = memo[id(a)]
                size += s
                depth = max(depth, d + 1)
                pw = max(pw, p)
            if isinstance(cur, sp.Piecewise):
                pw += 1
            memo[id(cur)] = (size, depth, pw)
            self.keep.append(cur)
        return memo[id(e)]

    def total(self, arr: np.ndarray) -> tuple[int, int, int]:
        size = depth = pw = 0
        for e in arr.flat:
            s, d, p = self.measure(e)
            size += s
            depth = max(depth, d)
            pw = max(pw, p)
        return size, depth, pw


class _Limits:
    def __init__(self, max_size, max_depth, max_piecewise):
        self.max_size = int(max_size)
        self.max_depth = int(max_depth)
        self.max_piecewise = int(max_piecewise)
        self.sizer = _Sizer()

    def check(self, node: Node, arr: np.ndarray, what: str = "expression", size_limit=None):
        size, depth, pw = self.sizer.total(arr)
        self.refuse_if(node, size, depth, pw, what, size_limit)

    def refuse_if(self, node, size, depth, pw, what="expression", size_limit=None, estimated=False):
        limit = self.max_size if size_limit is None else size_limit
        where = f"symbolic mode: {what} of node {node.name!r} ({node.op}, shape {node.shape})"
        est = "would have" if estimated else "has"
        hint = ("; symbolic mode is for small graphs with small fixed shapes -- use "
                "mode='reverse' or 'forward', or raise the limit")
        if size > limit:
            raise GraphError(f"{where} {est} {size} tree nodes, more than max_size={limit}{hint}")
        if depth > self.max_depth:
            raise GraphError(f"{where} {est} depth {depth}, more than max_depth={self.max_depth} "
                             f"(SymPy recurses and would hit Python's recursion limit){hint}")
        if pw > self.max_piecewise:
            raise GraphError(f"{where} {est} {pw} nested Piecewise (relu/where/comparisons), more "
                             f"than max_piecewise={self.max_piecewise} (SymPy expands nested "
                             f"conditions exponentially){hint}")


# -- leaves and constants ----------------------------------------------------------------------

def _number(v) -> sp.Expr:
    """An exact SymPy number where the decimal form is short (0.5 -> 1/2), else a Float."""
    if isinstance(v, (bool, np.bool_)):
        return sp.Integer(int(v))
    if isinstance(v, (int, np.integer)):
        return sp.Integer(int(v))
    f = float(v)
    if f != f:
        return sp.nan
    if f in (float("inf"), float("-inf")):
        return sp.oo if f > 0 else -sp.oo
    if f.is_integer() and abs(f) < 1e15:
        return sp.Integer(int(f))
    text = repr(f)
    digits = text.split("e")[0].replace("-", "").replace(".", "").lstrip("0")
    if len(digits) <= 8:
        return sp.Rational(text)
    return sp.Float(f, 17)


def _as_basic(arr) -> np.ndarray:
    """An object array whose elements are all SymPy objects."""
    arr = np.asarray(arr, dtype=object)
    if arr.ndim == 0:
        v = arr[()]
        return arr if isinstance(v, sp.Basic) else np.array(_sympify(v), dtype=object)
    out = np.empty(arr.shape, dtype=object)
    for i, v in enumerate(arr.flat):
        out.flat[i] = v if isinstance(v, sp.Basic) else _sympify(v)
    return out


def _sympify(v):
    if isinstance(v, (int, float, bool, np.number, np.bool_)):
        return _number(v)
    return sp.sympify(v)


class _Table:
    """Element symbols of leaves (and of cut nodes): symbol <-> (node, index)."""

    def __init__(self):
        self.of: dict[sp.Symbol, tuple[Node, tuple]] = {}
        self.names: set[str] = set()
        self.arrays: dict[int, np.ndarray] = {}
        self.batch: int = 1  # the size a batch (None) axis was bound to

    def symbol(self, name: str, node: Node, idx: tuple, integer: bool) -> sp.Symbol:
        while name in self.names:  # e.g. a scalar leaf named like another leaf's element
            name = name + "'"
        self.names.add(name)
        s = sp.Symbol(name, integer=True) if integer else sp.Symbol(name, real=True)
        self.of[s] = (node, idx)
        return s

    def leaf(self, node: Node, shape: tuple) -> np.ndarray:
        got = self.arrays.get(id(node))
        if got is not None:
            return got
        integer = node.dtype.kind in "iub"
        arr = np.empty(shape, dtype=object)
        if shape == ():
            arr[()] = self.symbol(node.name, node, (), integer)
        else:
            for idx in np.ndindex(*shape):
                arr[idx] = self.symbol(node.name + "_" + "_".join(map(str, idx)), node, idx, integer)
        self.arrays[id(node)] = arr
        return arr


def _bind(shape, batch: int) -> tuple:
    return tuple(batch if d is None else d for d in shape)


def _batch_of(order: Sequence[Node], shapes: Mapping | None) -> int:
    batch = None
    for name, shp in (shapes or {}).items():
        node = next((n for n in order if n.name == name), None)
        if node is None:
            continue
        shp = tuple(shp)
        if len(shp) != node.ndim or any(d is not None and d != s for d, s in zip(node.shape, shp)):
            raise ShapeError(f"symbolic: shapes[{name!r}] = {shp} does not fit node {name!r} "
                             f"of shape {node.shape}")
        for d, s in zip(node.shape, shp):
            if d is None:
                if batch is not None and s != batch:
                    raise ShapeError(f"symbolic: batch size {s} of {name!r} differs from {batch}")
                batch = int(s)
    return 1 if batch is None else batch


# -- the expression builder ----------------------------------------------------------------------

def _estimate(node: Node, args: list[np.ndarray], limits: _Limits, n_out: int):
    """Upper-ish estimate of an element-wise node's size before SymPy builds it."""
    spec = get_op(node.op).elementwise
    if spec is None:
        return None
    expr = spec.expr
    counts = {s: 0 for s in spec.arg_symbols}
    stack = [expr]
    rest = 0
    while stack:
        e = stack.pop()
        if e in counts:
            counts[e] += 1
        else:
            rest += 1
            stack.extend(e.args)
    size = depth = pw = 0
    own_pw = 1 if expr.has(sp.Piecewise) else 0
    for s, a in zip(spec.arg_symbols, args):
        s_a, d_a, p_a = limits.sizer.total(a)
        per = s_a / max(1, a.size)
        size += counts[s] * per
        depth = max(depth, d_a)
        pw = max(pw, p_a)
    return int(n_out * (size + rest)), depth + 1, pw + own_pw


def _evaluate(node: Node, opdef, args: list[np.ndarray]):
    if opdef.sym is not None:
        return opdef.sym(args, node.attrs, node)
    return evaluate(node, args)


def _build(outputs: Sequence[Node], shapes=None, cut: Sequence[Node] = (),
           limits: _Limits | None = None, table: _Table | None = None):
    """Object arrays of SymPy expressions for every ancestor of `outputs`.

    Nodes in `cut` (and stop_gradient nodes when `cut_stop_gradient`) get symbols
    of their own instead of their meaning."""
    limits = limits or _Limits(MAX_SIZE, MAX_DEPTH, MAX_PIECEWISE)
    table = table or _Table()
    g = outputs[0].graph
    order = g.ancestors(outputs, stop=cut)
    batch = _batch_of(order, shapes)
    cut_ids = {id(c) for c in cut}
    vals: dict[int, np.ndarray] = {}
    for node in order:
        shape = _bind(node.shape, batch)
        if node.op in ("input", "param") or id(node) in cut_ids:
            vals[id(node)] = table.leaf(node, shape)
            continue
        if node.op == "const":
            v = np.asarray(node.value)
            arr = np.empty(v.shape, dtype=object)
            for idx in np.ndindex(*v.shape):
                arr[idx] = _number(v[idx])
            vals[id(node)] = arr
            continue
        opdef = get_op(node.op)
        args = [vals[id(i)] for i in node.inputs]
        n_out = int(np.prod(shape, dtype=np.int64))
        est = _estimate(node, args, limits, n_out)
        if est is not None:
            limits.refuse_if(node, *est, estimated=True)
        try:
            out = _evaluate(node, opdef, args)
        except RecursionError:
            raise GraphError(f"symbolic mode: node {node.name!r} ({node.op}) is too deep for SymPy "
                             f"(RecursionError); lower the depth or use mode='reverse'") from None
        except GraphError:
            raise
        except Exception as e:  # an op whose meaning is not defined on SymPy values
            raise GraphError(f"symbolic mode: op {node.op!r} of node {node.name!r} has no "
                             f"symbolic meaning here ({type(e).__name__}: {e})") from None
        out = _as_basic(out)
        if out.shape != shape:
            try:
                out = _as_basic(np.broadcast_to(out, shape))
            except ValueError:
                raise GraphError(f"symbolic mode: op {node.op!r} of node {node.name!r} gave shape "
                                 f"{out.shape}, expected {shape}") from None
        limits.check(node, out)
        vals[id(node)] = out
    return vals, table


def elements(node: Node, shapes: Mapping | None = None, max_size: int = MAX_SIZE,
             max_depth: int = MAX_DEPTH, max_piecewise: int = MAX_PIECEWISE) -> np.ndarray:
    """The SymPy meaning of `node` as a NumPy object array (0-d for a scalar)."""
    _check_node(node)
    vals, _ = _build([node], shapes, limits=_Limits(max_size, max_depth, max_piecewise))
    return vals[id(node)]


def expression(node: Node, shapes: Mapping | None = None, max_size: int = MAX_SIZE,
               max_depth: int = MAX_DEPTH, max_piecewise: int = MAX_PIECEWISE):
    """The SymPy meaning of `node` for small fixed shapes.

    A batch dimension (None) is bound by `shapes={"x": (4, 2)}` or defaults to 1.
    Returns a SymPy expression for a scalar node, an `ImmutableMatrix` for a 2-d
    node and an `ImmutableDenseNDimArray` otherwise. Refuses (GraphError) nodes
    whose expression exceeds `max_size` tree nodes, `max_depth` levels or
    `max_piecewise` nested Piecewise (see the module docstring)."""
    return _to_sympy(elements(node, shapes, max_size, max_depth, max_piecewise))


def _to_sympy(arr: np.ndarray):
    if arr.ndim == 0:
        return arr[()]
    if arr.ndim == 2:
        return sp.ImmutableMatrix(arr.tolist())
    return sp.ImmutableDenseNDimArray(arr.tolist(), arr.shape)


def symbols(node: Node, shapes: Mapping | None = None):
    """The symbols `expression` uses for a leaf: a Symbol for a scalar, else an object array.

    Names: a scalar leaf keeps its name (`b`), an element of an array leaf is
    `name_i_j` (`W1_0_1`); float leaves are real, integer leaves integer."""
    _check_node(node)
    if not node.is_leaf or node.op == "const":
        raise GraphError(f"symbols: {node.name!r} is a {node.op}, not an input or param")
    batch = _batch_of([node], shapes)
    arr = _Table().leaf(node, _bind(node.shape, batch))
    return arr[()] if arr.ndim == 0 else arr


def latex(node: Node, shapes: Mapping | None = None, **limits) -> str:
    """LaTeX of `expression(node)` (no simplification)."""
    return sp.latex(expression(node, shapes, **limits))


def _check_node(node):
    if not isinstance(node, Node):
        raise GraphError(f"symbolic: expected a Node, got {type(node).__name__}")


# -- local derivatives (teaching helpers) ---------------------------------------------------------

def local_expression(node: Node) -> sp.Expr:
    """The element-wise op of `node` as a SymPy expression of its argument symbols x, y, ..."""
    _check_node(node)
    spec = get_op(node.op).elementwise
    if spec is None:
        raise GraphError(f"local_expression: {node.name!r} ({node.op}) is not an element-wise op")
    return spec.concrete(node.attrs)


def local_derivative(node: Node, k: int) -> sp.Expr:
    """d node / d input_k of an element-wise node, as a SymPy expression in the op's
    argument symbols (x, y, ... for inputs 0, 1, ...), parameters replaced by the
    node's attributes; e.g. sigmoid -> exp(-x)/(1 + exp(-x))**2."""
    _check_node(node)
    spec = get_op(node.op).elementwise
    if spec is None:
        raise GraphError(f"local_derivative: {node.name!r} ({node.op}) is not an element-wise op; "
                         "only element-wise ops have a scalar local derivative")
    if not isinstance(k, (int, np.integer)) or not 0 <= k < len(spec.args):
        raise GraphError(f"local_derivative: {node.name!r} ({node.op}) has {len(spec.args)} "
                         f"input(s), no input {k!r}")
    d = derivative_expr(spec, spec.args[int(k)])
    if spec.params:
        d = d.xreplace({sp.Symbol(p, real=True): sp.Float(node.attrs[p]) for p, _ in spec.params})
    return d


# -- SymPy -> graph ---------------------------------------------------------------------------------

# The fixed table from SymPy heads to graphnn ops (Add, Mul, Pow, Piecewise and
# relationals get dedicated handling below; numbers become constants).
SYMPY_TO_OP = {
    sp.exp: "exp", sp.log: "log", sp.tanh: "tanh", sp.Abs: "abs", sp.sign: "sign",
    sp.erf: "erf", sp.Max: "maximum", sp.Min: "minimum",
}
_REL_OP = {">": "gt", "<": "lt", ">=": "ge", "<=": "le", "==": "eq"}


class _Converter:
    """Turns SymPy expressions into scalar graph nodes, with an explicit stack."""

    def __init__(self, ref: Node, table: _Table):
        self.ref = ref  # a float node: constants take its dtype and graph
        self.g = ref.graph
        self.table = table
        self.memo: dict = {}
        self.bound: dict = {}  # cse symbols -> the expressions they stand for (converted lazily)

    def const(self, v) -> Node:
        return api.lift(np.asarray(v, dtype=self.ref.dtype), self.ref)

    def _parts(self, e):
        """(children, build) for one expression: build(list of child nodes) -> Node."""
        if e.is_Symbol:
            if e in self.bound:
                return [self.bound[e]], lambda ns: ns[0]
            hit = self.table.of.get(e)
            if hit is None:
                raise GraphError(f"symbolic mode: free symbol {e} has no node")
            leaf, idx = hit
            if idx == ():
                return [], lambda _: leaf
            if None in leaf.shape:  # the closed form holds for the bound batch size only
                axis = leaf.shape.index(None)
                guarded = api.apply("batch_guard", [leaf], axis=axis, size=self.table.batch)
                return [], lambda _: api.index(guarded, idx)
            return [], lambda _: api.index(leaf, idx)
        if e.is_Number or e.is_NumberSymbol:
            if e is sp.nan:
                return [], lambda _: self.const(np.nan)
            if e.is_infinite and e.is_extended_real:
                return [], lambda _: self.const(np.inf if e.is_extended_positive else -np.inf)
            if not e.is_real:
                raise GraphError(f"symbolic mode: constant {e} is not a real number")
            return [], lambda _: self.const(float(e))
        if e is sp.true:
            return [], lambda _: self.const(1.0)
        if e is sp.false:
            return [], lambda _: self.const(0.0)
        if e.is_Add:
            pos, neg = [], []
            for t in e.args:
                c, rest = t.as_coeff_Mul()
                if c.is_Number and c.is_negative:
                    neg.append(-t)
                else:
                    pos.append(t)
            n_pos = len(pos)

            def build_add(ns):
                ps, ms = ns[:n_pos], ns[n_pos:]
                acc = ps[0] if ps else api.neg(ms[0])
                for p in ps[1:]:
                    acc = acc + p
                for m in (ms if ps else ms[1:]):
                    acc = acc - m
                return acc
            return pos + neg, build_add
        if e.is_Mul:
            coeff, factors = e.as_coeff_mul()
            num, den = [], []
            for f in factors:
                if f.is_Pow and f.exp.is_Number and f.exp.is_negative:
                    den.append(f.base if f.exp == -1 else sp.Pow(f.base, -f.exp))
                else:
                    num.append(f)
            n_num = len(num)

            def build_mul(ns):
                nn, dd = ns[:n_num], ns[n_num:]
                top = None
                for x in nn:
                    top = x if top is None else top * x
                bot = None
                for x in dd:
                    bot = x if bot is None else bot * x
                if coeff == -1 and top is not None:
                    top = api.neg(top)
                elif coeff != 1:
                    c = self.const(float(coeff))
                    top = c if top is None else c * top
                if top is None:
                    top = self.const(1.0)
                return top if bot is None else top / bot
            return num + den, build_mul
        if e.is_Pow:
            base, ex = e.args
            if ex.is_Integer:
                n = int(ex)
                if n == 2:
                    return [base], lambda ns: api.square(ns[0])
                if n == 1:
                    return [base], lambda ns: ns[0]
                if n == -1:
                    return [base], lambda ns: self.const(1.0) / ns[0]
                if n < 0:
                    return [base], lambda ns: self.const(1.0) / (ns[0] ** self.const(float(-n)))
                return [base], lambda ns: ns[0] ** self.const(float(n))
            if ex == sp.S.Half:
                return [base], lambda ns: api.sqrt(ns[0])
            if ex == -sp.S.Half:
                return [base], lambda ns: self.const(1.0) / api.sqrt(ns[0])
            return [base, ex], lambda ns: ns[0] ** ns[1]
        if e.func in SYMPY_TO_OP:
            op = SYMPY_TO_OP[e.func]
            if op in ("maximum", "minimum"):
                def build_fold(ns, op=op):
                    acc = ns[0]
                    for x in ns[1:]:
                        acc = api.apply(op, [acc, x])
                    return acc
                return list(e.args), build_fold
            if len(e.args) != 1:
                raise GraphError(f"symbolic mode: {e.func.__name__} with {len(e.args)} arguments "
                                 "has no graphnn op")
            return [e.args[0]], lambda ns, op=op: api.apply(op, [ns[0]])
        if isinstance(e, sp.Heaviside):
            h0 = e.args[1] if len(e.args) > 1 else sp.S.Half
            arg = e.args[0]

            def build_heaviside(ns):
                u = ns[0]
                zero = self.const(0.0)
                return api.where(api.eq(u, zero), ns[1], api.gt(u, zero))
            return [arg, h0], build_heaviside
        if isinstance(e, sp.Piecewise):
            kids, has_else = [], False
            for ex_, cond in e.args:
                kids.append(ex_)
                if cond is sp.true:
                    has_else = True
                    break
                kids.append(cond)

            def build_piecewise(ns):
                if has_else:
                    acc = ns[-1]
                    pairs = ns[:-1]
                else:
                    acc = self.const(np.nan)
                    pairs = ns
                for i in range(len(pairs) - 2, -1, -2):
                    acc = api.where(pairs[i + 1], pairs[i], acc)
                return acc
            return kids, build_piecewise
        if isinstance(e, sp.core.relational.Relational):
            op = e.rel_op
            if op == "!=":
                return list(e.args), lambda ns: self.const(1.0) - api.eq(ns[0], ns[1])
            if op in _REL_OP:
                return list(e.args), lambda ns, op=_REL_OP[op]: api.apply(op, [ns[0], ns[1]])
        if isinstance(e, sp.And):
            def build_and(ns):
                acc = ns[0]
                for x in ns[1:]:
                    acc = acc * x
                return acc
            return list(e.args), build_and
        if isinstance(e, sp.Or):
            def build_or(ns):
                acc = ns[0]
                for x in ns[1:]:
                    acc = api.maximum(acc, x)
                return acc
            return list(e.args), build_or
        if isinstance(e, sp.ITE):  # if-then-else of conditions (SymPy folds nested Piecewise so)
            return list(e.args), lambda ns: api.where(ns[0], ns[1], ns[2])
        if isinstance(e, sp.Not):
            return [e.args[0]], lambda ns: self.const(1.0) - ns[0]
        name = getattr(e.func, "__name__", type(e).__name__)
        raise GraphError(f"symbolic mode: SymPy function {name!r} (in {str(e)[:80]}) has no "
                         f"graphnn op; supported: Add, Mul, Pow, Piecewise, relationals, And, Or, "
                         f"Not, ITE, Heaviside, {', '.join(f.__name__ for f in SYMPY_TO_OP)}")

    def __call__(self, expr) -> Node:
        memo = self.memo
        if expr in memo:
            return memo[expr]
        stack = [(expr, None)]
        while stack:
            e, plan = stack.pop()
            if e in memo:
                continue
            if plan is None:
                kids, build = self._parts(e)
                todo = [k for k in kids if k not in memo]
                if todo:
                    stack.append((e, (kids, build)))
                    stack.extend((k, None) for k in todo)
                    continue
                plan = (kids, build)
            kids, build = plan
            memo[e] = build([memo[k] for k in kids])
        return memo[expr]


# -- symbolic gradient ------------------------------------------------------------------------------

def _check_fixed(order: Sequence[Node], y: Node):
    for n in order:
        if None in n.shape:
            raise GraphError(f"symbolic mode needs fixed shapes: {n.op} {n.name!r} has shape "
                             f"{n.shape} (batch None) on the way to {y.name!r}; declare the input "
                             "with a fixed batch, or pass shapes={name: shape} to "
                             "gn.symbolic.grad (the result is then valid for that batch only)")


def grad(y: Node, wrt: Node | Sequence[Node], disconnected: str = "zeros",
         shapes: Mapping | None = None, max_size: int = MAX_SIZE, max_depth: int = MAX_DEPTH,
         max_piecewise: int = MAX_PIECEWISE) -> list[Node]:
    """Gradient nodes of scalar `y` by SymPy: closed form, `diff`, `cse`, back to nodes.

    Each w may be a leaf or an intermediate node (then it is cut: its elements
    become symbols, read back with `index` nodes of w). Shapes must be fixed;
    with `shapes=` a batch dimension is bound and the gradient is valid for that
    batch size only (the gradient of a node with a batch dimension then has the
    bound shape). Limits: see the module docstring."""
    if isinstance(wrt, Node):
        wrt = [wrt]
    wrt = list(wrt)
    _check_node(y)
    if y.shape != ():
        raise ShapeError(f"grad: {y.name!r} ({y.op}) has shape {y.shape}; grad needs a scalar")
    if disconnected not in ("zeros", "raise"):
        raise GraphError(f"disconnected must be 'zeros' or 'raise', got {disconnected!r}")
    g = y.graph
    for w in wrt:
        if not isinstance(w, Node) or w.graph is not g:
            raise GraphError(f"symbolic grad: {w!r} is not a node of graph {g.name!r}")
        if w.dtype.kind != "f":
            raise GraphError(f"symbolic grad: {w.name!r} has dtype {w.dtype}; only float nodes "
                             "have gradients")
    if shapes is None:
        _check_fixed(g.ancestors([y]), y)
    limits = _Limits(max_size, max_depth, max_piecewise)
    anc = {id(n) for n in g.ancestors([y])}
    # stop_gradient nodes are cut: their elements are symbols (derivative 0 through them)
    stops = [n for n in g.ancestors([y]) if n.op == "stop_gradient"]

    groups: list[tuple[list[Node], list[Node]]] = []  # (wrt in group, cut)
    leaves = [w for w in wrt if w.is_leaf]
    if leaves:
        groups.append((leaves, []))
    for w in wrt:
        if not w.is_leaf:
            groups.append(([w], [w]))

    result: dict[int, Node] = {}
    for ws, cut in groups:
        result.update(_grad_group(y, ws, cut + stops, shapes, limits, anc, disconnected))
    return [result[id(w)] for w in wrt]


def _grad_group(y, ws, cut, shapes, limits, anc, disconnected):
    g = y.graph
    table = _Table()
    live = [w for w in ws if id(w) in anc]
    for w in ws:
        if id(w) not in anc and disconnected == "raise":
            raise GraphError(f"{y.name!r} does not depend on {w.name!r} (disconnected); pass "
                             "disconnected='zeros' for a zero gradient")
    vals, table = _build([y], shapes, cut=cut, limits=limits, table=table)
    E = vals[id(y)][()]
    batch = table.batch = _batch_of(g.ancestors([y], stop=cut), shapes)
    exprs, spans = [], {}
    grad_limit = limits.max_size * GRAD_SIZE_FACTOR
    size = 0
    free = E.free_symbols
    for w in live:
        syms = vals.get(id(w))
        if syms is None:  # on a path only through a stop_gradient
            syms = table.leaf(w, _bind(w.shape, batch))
        start = len(exprs)
        for s in syms.flat:
            if s not in free:
                exprs.append(sp.S.Zero)
                continue
            try:
                d = sp.diff(E, s)
            except RecursionError:
                raise GraphError(f"symbolic mode: d {y.name!r} / d {w.name!r} is too deep for "
                                 "SymPy (RecursionError); use mode='reverse'") from None
            d = d.replace(sp.DiracDelta, lambda *a: sp.S.Zero) if d.has(sp.DiracDelta) else d
            exprs.append(d)
            size += limits.sizer.measure(d)[0]
            if size > grad_limit:
                raise GraphError(f"symbolic mode: the derivatives of {y.name!r} with respect to "
                                 f"{w.name!r} have more than {grad_limit} tree nodes "
                                 f"(GRAD_SIZE_FACTOR x max_size); use mode='reverse'")
        spans[id(w)] = (start, len(exprs), syms.shape)
    try:
        repl, reduced = sp.cse(exprs, symbols=(sp.Dummy(f"cse{i}") for i in itertools.count()),
                               order="none")
    except RecursionError:
        raise GraphError(f"symbolic mode: cse of d {y.name!r} is too deep for SymPy; "
                         "use mode='reverse'") from None
    out = {}
    conv = _Converter(ws[0], table)
    conv.bound.update(repl)  # cse temporaries, shared by every w, converted when first used
    for w in ws:
        with g.provenance(scope=w.scope, role="backward"):
            if id(w) not in spans:
                out[id(w)] = api.zeros_like(w)
                continue
            start, stop, shape = spans[id(w)]
            elems = reduced[start:stop]
            if all(e.is_Number for e in elems):
                out[id(w)] = g.const(None, np.array([float(e) for e in elems],
                                                    dtype=w.dtype).reshape(shape))
                continue
            nodes = [conv(e) for e in elems]
            if shape == ():
                out[id(w)] = nodes[0]
            else:
                out[id(w)] = api.reshape(api.stack(nodes), shape)
    return out
