"""Backpropagation (and forward mode) step by step: the chain-rule lines for any graph.

`backprop_steps(loss, feeds)` gives one `Step` per node in reverse topological
order. Each step has the node, every term of its adjoint (one per use of the
node: consumer, local derivative named and as SymPy, incoming adjoint, the
contribution, with numbers), the adjoint as a sum when the node fans out, and
the adjoint as one expression in the names of the graph (lecture 001:
dE/du2 = dE/dyhat dyhat/du2 = 2(yhat - y) sigma'(u2)).

Expressions use node names as symbols. Nodes the user did not name
(`sub_1`, `const_3`) are inlined into their definition, so `(yhat - y)**2`
reads as such. Every expression is capped (`max_ops`) and replaced by its
symbol (dE/dname) when it would grow larger, so deep graphs stay readable.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import sympy as sp

from graphnn.autodiff import forward as fwd
from graphnn.errors import GraphError
from graphnn.graph import Node, attrs_items, fmt_type
from graphnn.ops.api import ACTIVATIONS
from graphnn.ops.elementwise import ELEMENTWISE, derivative_expr
from graphnn.transient import transient

from . import evaluate as ev
from . import flow
from . import rules
from . import symbols as S

MAX_OPS = 40
_AUTO = re.compile(r"^(.+)_\d+$")
NAMED_FNS = {a for a in ACTIVATIONS if a in ELEMENTWISE and len(ELEMENTWISE[a].args) == 1}


def _auto_named(n: Node) -> bool:
    m = _AUTO.match(n.name)
    return bool(m) and (m.group(1) == n.op or n.op == "const")


def _number(v: np.ndarray):
    x = float(np.asarray(v).reshape(()))
    if x.is_integer() and abs(x) < 1e15:
        return sp.Integer(int(x))
    r = sp.Rational(x).limit_denominator(64)   # 0.5 is 1/2, so 0.5 * 2(yhat - y) reads (yhat - y)
    return r if float(r) == x else sp.Float(x, 6)


def _params(spec, attrs):
    return {sp.Symbol(p, real=True): sp.Float(attrs[p]) for p, _ in spec.params}


class Exprs:
    """Forward expressions of nodes: `short` (named nodes as symbols) and `full` (in leaves)."""

    def __init__(self, order: list[Node], max_ops: int = MAX_OPS):
        self.max_ops = max_ops
        self.short: dict[int, sp.Expr] = {}
        self.full: dict[int, sp.Expr | None] = {}
        self.definition: dict[int, sp.Expr] = {}
        for n in order:
            if n.op == "const":
                e = _number(n.value) if n.value.size == 1 and n.value.ndim == 0 else S.node_symbol(n.name)
                self.short[id(n)] = self.full[id(n)] = e
                continue
            if n.is_leaf:
                self.short[id(n)] = self.full[id(n)] = S.node_symbol(n.name)
                continue
            d = self._define(n, [self.short[id(i)] for i in n.inputs])
            self.definition[id(n)] = d
            small = sp.count_ops(d) <= max_ops
            self.short[id(n)] = d if (_auto_named(n) and small) else S.node_symbol(n.name)
            ins = [self.full[id(i)] for i in n.inputs]
            f = None if any(i is None for i in ins) else self._define(n, ins)
            self.full[id(n)] = f if f is not None and sp.count_ops(f) <= 5 * max_ops else None

    @staticmethod
    def _define(n: Node, args: list) -> sp.Expr:
        spec = ELEMENTWISE.get(n.op)
        if spec is not None:
            if n.op in NAMED_FNS:
                return S.named_fn(n.op)(args[0])
            return spec.concrete(n.attrs).xreplace(dict(zip(spec.arg_symbols, args)))
        if n.op == "matmul":
            a, b = n.inputs
            if a.ndim == 1 and b.ndim == 1:
                return S.VizDot(*args)
            return S.VizMatProd(*args)
        return S.generic_fn(n.op)(*args)


@functools.lru_cache(maxsize=None)
def _numeric(op: str, k: int, attrs: tuple):
    """NumPy function of the op's arguments: d op / d argument k (lambdify is slow: cached)."""
    spec = ELEMENTWISE[op]
    d = derivative_expr(spec, spec.args[k]).xreplace(_params(spec, dict(attrs)))
    from graphnn.ops.runtime import erf
    return sp.lambdify(spec.arg_symbols, d, modules=[{"erf": erf}, "numpy"])


@dataclass
class Local:
    """d consumer / d input: named (sigma'(u2)), explicit (SymPy), value, or a LaTeX description."""
    named: sp.Expr | None
    explicit: sp.Expr | None
    value: np.ndarray | None
    description: str | None = None   # LaTeX, for rules that are not a number per element
    mathml: str | None = None        # the same rule as MathML (what the page shows)


def local_derivative(v: Node, k: int, ex: Exprs, values: dict, kind: str = "backward",
                     of: str = "L") -> Local:
    u = v.inputs[k]
    args = [ex.short[id(i)] for i in v.inputs]
    spec = ELEMENTWISE.get(v.op)
    if spec is not None:
        sym = spec.arg_symbols
        d = derivative_expr(spec, spec.args[k]).xreplace(_params(spec, v.attrs))
        explicit = rules.lecture_form(v.op, args[0]) if v.op in NAMED_FNS else None
        if explicit is None:
            explicit = d.xreplace(dict(zip(sym, args)))
        named = S.named_fn(v.op, prime=True)(args[0]) if v.op in NAMED_FNS else explicit
        value = None
        if all(id(i) in values for i in v.inputs):
            f = _numeric(v.op, k, attrs_items(v.attrs))
            with np.errstate(all="ignore"):
                value = np.broadcast_to(np.asarray(f(*[values[id(i)] for i in v.inputs]), dtype=float),
                                        np.broadcast_shapes(*[values[id(i)].shape for i in v.inputs]))
        return Local(named, explicit, value)
    if v.op == "matmul":
        a, b = v.inputs
        if a.ndim == 1 and b.ndim == 1:
            other = args[1 - k]
            return Local(other, other, values.get(id(v.inputs[1 - k])))
    count = None
    if v.op == "mean" and id(u) in values and id(v) in values:
        count = values[id(u)].size // max(1, values[id(v)].size)
    tex, mml = rules.rule(v, k, kind, of, count)
    if v.op == "sum":
        return Local(sp.Integer(1), sp.Integer(1), None, tex, mml)
    if v.op == "mean" and count:
        c = sp.Rational(1, count)
        return Local(c, c, None, tex, mml)
    return Local(None, None, None, tex, mml)


@dataclass
class Term:
    """One use of the node: consumer `consumer` takes it as input `position`."""
    consumer: Node
    position: int
    local: Local
    incoming: np.ndarray | None       # adjoint of the consumer (reverse) / tangent of the input (forward)
    contribution: np.ndarray | None   # incoming x local, as the VJP/JVP computed it
    expr: sp.Expr | None = None       # the term as an expression


@dataclass
class Step:
    index: int
    kind: str                          # "backward" or "forward"
    node: Node
    of: str                            # the loss (backward) or the seed (forward)
    definition: sp.Expr | None         # the node's forward definition (None for leaves)
    value: np.ndarray | None
    derivative: np.ndarray | None      # adjoint (backward) / tangent (forward) value
    terms: list[Term] = field(default_factory=list)
    expr: sp.Expr | None = None        # the adjoint/tangent in the graph's names
    expanded: sp.Expr | None = None    # ... in leaves only, for parameters/inputs (backward)

    @property
    def name(self) -> str:
        return self.node.name

    def symbol(self) -> sp.Expr:
        return S.Deriv("adj", self.of, self.node.name) if self.kind == "backward" else \
            S.Deriv("tan", "", self.node.name)

    def _factor(self, e):
        return sp.factor_terms(e) if e is not None else None

    # -- the chain-rule lines --------------------------------------------------------------
    def chain_latex(self) -> str:
        lhs = S.latex(self.symbol())
        if not self.terms:
            return lhs + (" = 1" if self.kind == "backward" else r" \text{ (seed direction)}")
        return lhs + " = " + " + ".join(self._term_latex(t) for t in self.terms)

    def _term_latex(self, t: Term) -> str:
        if self.kind == "backward":
            c, n = t.consumer.name, self.node.name
            return S.latex(S.Deriv("adj", self.of, c)) + r"\frac{\partial %s}{\partial %s}" % (
                S.symbol_latex(c), S.symbol_latex(n))
        i = self.node.inputs[t.position].name
        return r"\frac{\partial %s}{\partial %s}" % (S.symbol_latex(self.node.name), S.symbol_latex(i)) + \
            S.latex(S.Deriv("tan", "", i))

    def expr_latex(self) -> str | None:
        return None if self.expr is None else S.latex(self._factor(self.expr))

    def expr_text(self) -> str | None:
        return None if self.expr is None else S.text(self._factor(self.expr))

    def local_lines(self) -> list[str]:
        """One LaTeX line per local derivative: d consumer / d node = named = explicit."""
        out = []
        for t in self.terms:
            c, n = (t.consumer, self.node) if self.kind == "backward" else (self.node, self.node.inputs[t.position])
            head = r"\frac{\partial %s}{\partial %s}" % (S.symbol_latex(c.name), S.symbol_latex(n.name))
            parts = [head]
            if t.local.named is not None:
                parts.append(S.latex(sp.factor_terms(t.local.named)))
                if t.local.explicit is not None and t.local.explicit != t.local.named:
                    parts.append(S.latex(sp.factor_terms(t.local.explicit)))
            elif t.local.description:
                parts = [t.local.description]      # the rule names both sides itself
            out.append(" = ".join(parts))
        return out

    def numbers(self) -> str:
        """The numbers: each term incoming x local = contribution, then the sum."""
        lines = []
        for t in self.terms:
            who = t.consumer.name if self.kind == "backward" else self.node.inputs[t.position].name
            inc = ev.summary(t.incoming) if t.incoming is not None else "?"
            loc = ev.summary(t.local.value) if t.local.value is not None else \
                f"({t.consumer.op if self.kind == 'backward' else self.node.op} rule)"
            con = ev.summary(t.contribution) if t.contribution is not None else "?"
            lines.append(f"via {who}: {inc} x {loc} -> {con}")
        if self.derivative is not None:
            lines.append((f"d{self.of}/d{self.node.name}" if self.kind == "backward" else
                          f"tangent of {self.node.name}") + f" = {ev.summary(self.derivative)}")
        return "\n".join(lines)

    def title(self) -> str:
        d = "" if self.definition is None else " = " + S.text(self.definition)
        return f"{self.node.name}{d}   [{fmt_type(self.node)}]"

    def text(self) -> str:
        """Everything as plain text (what the tests and a terminal read)."""
        lines = [self.title(), S.text(self.symbol()) + " = " + (" + ".join(
            (f"{S.text(S.Deriv('adj', self.of, t.consumer.name))} * d{t.consumer.name}/d{self.node.name}"
             if self.kind == "backward" else
             f"d{self.node.name}/d{self.node.inputs[t.position].name} * {self.node.inputs[t.position].name}'")
            for t in self.terms) or ("1" if self.kind == "backward" else "seed"))]
        if self.expr is not None:
            lines.append("  = " + self.expr_text())
        if self.expanded is not None:
            lines.append("  = " + S.text(self._factor(self.expanded)))
        for t in self.terms:
            if t.local.named is not None:
                lines.append(f"  local: {S.text(sp.factor_terms(t.local.named))}" + (
                    f" = {S.text(sp.factor_terms(t.local.explicit))}"
                    if t.local.explicit != t.local.named else ""))
        lines.append(self.numbers())
        return "\n".join(lines)

    def __str__(self):
        return self.text()


class Steps(list):
    """The steps, with what is needed to draw them (`root`, `feeds`); displays itself in Jupyter."""
    root: Node
    feeds: dict
    kind: str

    def _repr_html_(self) -> str:
        from .page import steps_fragment
        return steps_fragment(self)

    def html(self, path) -> str:
        from .page import steps_html
        return steps_html(self, path)


def _term_expr(incoming, local: Local, max_ops: int):
    if local.named is None:
        return None
    return incoming * local.named


def backprop_steps(loss: Node, feeds: Mapping | None = None, wrt=None, max_ops: int = MAX_OPS) -> Steps:
    """One step per node from `loss` back to the inputs and params, in the lecture's order:
    a node comes as soon as every node that uses it is done, parameters first (so the output
    layer's weights come right after the output layer, as in lecture 004).

    The graph is left as it was (the adjoint nodes are built transiently)."""
    if not isinstance(loss, Node):
        raise GraphError(f"backprop_steps: expected the loss Node, got {type(loss).__name__}")
    with transient(loss.graph):
        return _backprop_steps(loss, feeds, wrt, max_ops)


def _backprop_steps(loss: Node, feeds, wrt, max_ops: int) -> Steps:
    gr = flow.compute(loss, feeds, wrt)
    order, values = gr.forward, gr.values
    ex = Exprs(order, max_ops)
    uses: dict[int, list[tuple[Node, int]]] = {}
    for v in order:
        for k, u in enumerate(v.inputs):
            if (id(u), id(v), k) in gr.edge:
                uses.setdefault(id(u), []).append((v, k))
    adj_expr: dict[int, sp.Expr | None] = {id(loss): sp.Integer(1)}
    steps = Steps()
    for n in _lecture_order(order, gr, uses):
        a = gr.adjoint.get(id(n))
        step = Step(len(steps), "backward", n, loss.name, ex.definition.get(id(n)),
                    values.get(id(n)), values.get(id(a)))
        exprs = []
        for v, k in uses.get(id(n), []):
            loc = local_derivative(v, k, ex, values, "backward", loss.name)
            av = adj_expr.get(id(v))
            incoming = av if av is not None and sp.count_ops(av) <= max_ops else S.Deriv("adj", loss.name, v.name)
            t = Term(v, k, loc, gr.adjoint_value(v), gr.edge_value(n, v, k),
                     _term_expr(incoming, loc, max_ops))
            step.terms.append(t)
            exprs.append(t.expr)
        if n is not loss:
            adj_expr[id(n)] = None if (not exprs or any(e is None for e in exprs)) else sp.Add(*exprs)
        step.expr = adj_expr[id(n)]
        if n.is_leaf and step.expr is not None:
            step.expanded = _expand(step.expr, ex, order)
        steps.append(step)
    steps.root, steps.feeds, steps.kind = loss, dict(feeds or {}), "backward"
    return steps


def _lecture_order(order: list[Node], gr, uses: dict) -> list[Node]:
    """Reverse topological order as the lectures walk it: a node is ready once every node
    using it is done; among ready nodes parameters and inputs go first, then the most
    recently built node. So dE/dw2 follows dE/du2 (output layer first), wherever the
    parameters were declared."""
    import heapq
    have = [n for n in order if id(n) in gr.adjoint]
    waiting = {id(n): 0 for n in have}
    for n in have:
        for v, _ in uses.get(id(n), []):
            if id(v) in gr.adjoint:
                waiting[id(n)] += 1
    heap = [(1, -n.index, n) for n in have if waiting[id(n)] == 0]
    heapq.heapify(heap)
    out, seen = [], set()
    while heap:
        _, _, n = heapq.heappop(heap)
        if id(n) in seen:
            continue
        seen.add(id(n))
        out.append(n)
        for u in n.inputs:
            if id(u) not in waiting or id(u) in seen:
                continue
            waiting[id(u)] -= sum(1 for v, _ in uses.get(id(u), []) if v is n)
            if waiting[id(u)] <= 0:
                heapq.heappush(heap, (0 if u.op == "param" else 2 if u.op == "input" else 1,
                                      -u.index, u))
    out += [n for n in reversed(have) if id(n) not in seen]   # (unreachable: kept for safety)
    return out


def _jvp_part(n: Node, k: int, tu: Node, feeds, values: dict):
    """Input k's part of n's tangent, as a number: n's JVP rule with only that input moving
    (built in the graph: forward_steps runs inside `transient`, so it is removed after)."""
    from graphnn.ops.registry import get_op
    ts = [tu if j == k else None for j in range(len(n.inputs))]
    try:
        with n.graph.provenance(scope=n.scope, role="tangent"):
            part = get_op(n.op).jvp(n, ts)
        if part is None:
            return None
        return ev.evaluate([part], feeds, cache=values)[id(part)]
    except (GraphError, ValueError, TypeError):   # a rule needing every tangent: total shown
        return None


def _expand(e: sp.Expr, ex: Exprs, order: list[Node]):
    """Replace named intermediate nodes by their definitions in leaves (None if too large)."""
    sub = {}
    for n in order:
        if not n.is_leaf and ex.full.get(id(n)) is not None:
            sub[S.node_symbol(n.name)] = ex.full[id(n)]
    if not any(s in sub for s in e.free_symbols):
        return None
    out = e.xreplace(sub)
    return out if sp.count_ops(out) <= 5 * ex.max_ops else None


def forward_steps(y: Node, feeds: Mapping | None = None, wrt=None, max_ops: int = MAX_OPS) -> Steps:
    """Forward mode, step by step: the tangent of every node along one direction.

    wrt: a Node (direction: ones), {node: direction array}, or None (the first parameter).
    The graph is left as it was (the tangent nodes are built transiently)."""
    if not isinstance(y, Node):
        raise GraphError(f"forward_steps: expected a Node, got {type(y).__name__}")
    with transient(y.graph):
        return _forward_steps(y, feeds, wrt, max_ops)


def _forward_steps(y: Node, feeds, wrt, max_ops: int) -> Steps:
    g = y.graph
    order = g.ancestors([y])
    if wrt is None:
        params = [n for n in order if n.op == "param"]
        if not params:
            raise GraphError(f"forward_steps: {y.name!r} depends on no parameter; pass wrt=")
        wrt = params[0]
    if isinstance(wrt, Node):
        wrt = {wrt: np.ones(wrt.shape, dtype=wrt.dtype)}
    if not isinstance(wrt, Mapping) or not wrt:
        raise GraphError(f"forward_steps: wrt must be a Node or {{node: direction}}, got {wrt!r}")
    seeds = {}
    for k, v in wrt.items():
        if not isinstance(k, Node) or k.graph is not g:
            raise GraphError(f"forward_steps: {k!r} is not a node of graph {g.name!r}")
        arr = np.asarray(v, dtype=k.dtype)
        if arr.shape != k.shape:
            raise GraphError(f"forward_steps: direction for {k.name!r} has shape {arr.shape}, "
                             f"node has {k.shape}")
        with g.provenance(scope=k.scope, role="tangent"):
            seeds[k] = g.const(None, arr)
    tan = fwd.tangents([y], seeds)
    values = ev.evaluate(list(order) + list(tan.values()), feeds)
    ex = Exprs(order, max_ops)
    t_expr: dict[int, sp.Expr | None] = {}
    steps = Steps()
    seed_name = ", ".join(k.name for k in seeds)
    for n in order:
        t = tan.get(id(n))
        if t is None:
            continue
        step = Step(len(steps), "forward", n, seed_name, ex.definition.get(id(n)), values.get(id(n)),
                    values.get(id(t)))
        if n in seeds:
            t_expr[id(n)] = S.Deriv("tan", "", n.name)
        else:
            exprs = []
            for k, u in enumerate(n.inputs):
                tu = tan.get(id(u))
                if tu is None:
                    continue
                loc = local_derivative(n, k, ex, values, "forward", seed_name)
                te = t_expr.get(id(u))
                incoming = te if te is not None and sp.count_ops(te) <= max_ops else S.Deriv("tan", "", u.name)
                contrib = None
                if loc.value is not None and id(tu) in values:
                    contrib = np.asarray(loc.value) * values[id(tu)]
                elif id(tu) in values:
                    contrib = _jvp_part(n, k, tu, feeds, values)
                term = Term(n, k, loc, values.get(id(tu)), contrib,
                            None if loc.named is None else loc.named * incoming)
                step.terms.append(term)
                exprs.append(term.expr)
            t_expr[id(n)] = None if (not exprs or any(e is None for e in exprs)) else sp.Add(*exprs)
        step.expr = t_expr[id(n)]
        steps.append(step)
    steps.root, steps.feeds, steps.kind = y, dict(feeds or {}), "forward"
    steps.wrt = {k: np.asarray(v, dtype=k.dtype) for k, v in wrt.items()}   # the direction
    return steps
