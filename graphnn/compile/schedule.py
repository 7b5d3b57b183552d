"""The lowering every target prints: `lower(function, caps) -> Schedule`.

A schedule is data, no code strings. It says, for a Function (outputs and
parameter updates), what runs and where values live:

* `kernels`: the straight-line statements in order, one small dataclass each
  (a fused element-wise group with its SymPy expression and leaves, a matmul, a
  bias-folded affine layer and its gradient, a reduction, a softmax, a dot
  product, an opaque op), each with the `memory.Statement` the buffer planner
  read;
* `plan`: the buffer plan of those statements (`memory.py`), where a value
  computed into a flat-buffer view or a `[h, 1]` buffer names a symbolic
  buffer (`FlatView`, `AugView`) that each target names as it likes;
* `groups`: the update region, grouped by structure into `UpdateGroup`s whose
  parameters, gradients and optimizer state may be views of one flat buffer
  per role (`update_plan.py` plans them);
* views read through (`transparent`), 2-D transposes kept as views (`views`),
  element-wise nodes fused into their consumer (`inline`), accepted bias folds,
  values that need a copy before the parameter updates (`snapshots`).

Targets (compile/targets/) render a schedule: NumPy ufunc calls, CuPy kernels,
a CUDA C file. What a target can run switches optional rewrites (`Caps`).
The plan depends only on the graph, so it is the same for every target that
asks for the same capabilities.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import sympy as sp

from ..graph import Node
from . import aliasing, fusion, memory
from .fast_common import _attrs_key, _dname, _is_ew, _small_int_const
from .passes import Function
from .printer import comment_name, comment_text
from .update_plan import UpdatePlan

_VIEW_OPS = ("stop_gradient",)
_BROADCAST = ("broadcast_like", "broadcast_to")
_EXPR_CACHE: dict = {}
# unary ops whose value is > 0 exactly where their input is (NaN: neither)
_SIGN_OF_INPUT = ("relu",)  # structure key -> (expr, key, names of the symbols it uses)


@dataclass(frozen=True)
class Caps:
    """What a target can run, switching the optional rewrites of the lowering."""
    bias_fold: bool = True         # `[h, 1] @ [W; b]`: the bias rides in the matmul
    dot_reductions: bool = True    # `sum(a * b)` as one dot product
    transpose_views: str = "all"   # 2-D transposes as views: "all", or "matmul" (read as flags)
    max_group: int = fusion.MAX_GROUP
    fresh_outputs: bool = True     # returned values in buffers of their own (allocated per
                                   # call by the array targets instead of copied at return)


# -- symbolic buffers: decided by the lowering, named by each target ------------------------

@dataclass(frozen=True)
class FlatView:
    """Member `member`'s view of slot `slot` of flat update group `group`."""
    group: int
    slot: int
    member: int


@dataclass(frozen=True)
class AugView:
    """The `h` part of the `[h, 1]` buffer of a bias fold (h: the node id)."""
    node: int


# -- kernels ----------------------------------------------------------------------------------

@dataclass(eq=False)
class Kernel:
    node: Node
    statement: memory.Statement


@dataclass(eq=False)
class Fused(Kernel):
    """An element-wise group: `expr` over leaf symbols L0.. (and S-symbols for unary
    values computed earlier), `leaves` the nodes it reads."""
    expr: sp.Expr
    leaves: list
    key: tuple               # structure key (same key, same expression)
    all_leaves: list         # every leaf symbol's node, by index
    sub_leaves: dict         # S-symbol name -> node


@dataclass(eq=False)
class Matmul(Kernel):
    pass


@dataclass(eq=False)
class Affine(Kernel):
    """`h @ W + b` as `[h, 1] @ [W; b]` (a bias fold)."""
    fold: "Fold"


@dataclass(eq=False)
class AffineGrad(Kernel):
    """Both gradients of a folded layer: `[h, 1].T @ dz` into `[gW; gb]`."""
    fold: "Fold"


@dataclass(eq=False)
class Reduce(Kernel):
    """A sum or mean over some axes, into a buffer."""


@dataclass(eq=False)
class ReduceAll(Kernel):
    """A sum or mean to a 0-d value."""


@dataclass(eq=False)
class Dot(Kernel):
    """`sum(a * b)` (or its mean) as one dot product of `product`'s inputs."""
    product: Node


@dataclass(eq=False)
class Softmax(Kernel):
    pass


@dataclass(eq=False)
class CopyIn(Kernel):
    """A fed array copied beside its column of ones (a bias fold's `[h, 1]`)."""


@dataclass(eq=False)
class Opaque(Kernel):
    """Any other op: printed from the target's table. `fixed`: the symbolic buffer it
    is copied into, if any."""
    fixed: object = None


# -- the update region ------------------------------------------------------------------------

@dataclass(eq=False)
class Fold:
    """An affine layer `a = add(m = matmul(h, W), b)` whose bias rides in the matmul,
    and its gradients gW = h.T @ dz, gb = sum(dz, 0)."""
    a: Node
    m: Node
    h: Node
    W: Node
    b: Node
    gW: Node
    gb: Node
    dz: Node
    slot: int = -1          # the gradient slot of W's member
    param_slot: int = -1    # the parameter slot
    group: int = -1         # the flat group, its member index and the [W; b] element range
    member: int = -1
    span: tuple = (0, 0)


@dataclass(eq=False)
class Member:
    """One component of the update region: element-wise nodes that update `params`,
    reading `leaves` (kinds: ("s", id) a shared scalar, ("p", k) params[k], ("f",) a
    full-shape value, ("o", shape) another shape)."""
    nodes: list
    leaves: list
    params: list
    sig: tuple
    shape: tuple
    kinds: list


@dataclass(eq=False)
class Slot:
    """A role of a flat group: kind "p" (a parameter) or "f" (a full-shape leaf such
    as a gradient); `nodes[j]` is member j's; `fixed[j]`: computed straight into its
    view (else copied in before the update)."""
    index: int
    kind: str
    nodes: list
    fixed: list


@dataclass(eq=False)
class UpdateGroup:
    """Members with the same structure. A flat group (`flat`) keeps every role in one
    buffer of `total` elements, member j at [offsets[j], offsets[j+1])."""
    index: int
    members: list
    sig: tuple
    flat: bool = False
    dtype: str = "float64"
    total: int | None = None
    offsets: list = field(default_factory=list)
    slots: list = field(default_factory=list)
    scratch: set = field(default_factory=set)   # slots nothing reads after this group
    folds: list = field(default_factory=list)   # accepted folds whose W is in this group


@dataclass(eq=False)
class Schedule:
    function: Function
    caps: Caps
    args: list                      # argument nodes, in order
    kernels: list                   # the straight line, in order
    plan: memory.Plan
    groups: list                    # UpdateGroups
    region: set                     # ids of update-region nodes
    transparent: dict               # id -> the node a view or broadcast reads through to
    views: set                      # ids of 2-D transposes printed as views
    inline: set                     # ids of element-wise nodes fused into a consumer
    folds: dict                     # key -> accepted Fold
    fixed: dict                     # id -> symbolic buffer (FlatView or AugView)
    base_of: dict                   # a transpose view -> the value it views
    batch_consts: list              # counts that depend on the batch size only
    foreign_read: set               # params read by another update component
    snapshots: list                 # values copied before the parameter updates
    late_updates: list              # (param, value) updates outside the region

    def source_of(self, n: Node) -> Node:
        return read_through(n, self.transparent)

    def __str__(self) -> str:
        """One line per kernel (what it computes, where the value lives) and per update
        group: the plan a target prints, readable (`print(prog.schedule)`)."""
        graph = comment_text(self.function.graph.name)
        lines = [f"schedule of graph {graph}: "
                 f"{len(self.args)} arguments, {len(self.kernels)} kernels, "
                 f"{len(self.plan.buffers)} buffers, {len(self.groups)} update groups"]
        for k in self.kernels:
            n = k.node
            what = f"{n.op}({', '.join(comment_name(self.source_of(i)) for i in n.inputs)})"
            if isinstance(k, Fused):
                names = {fusion.leaf_symbol(j): sp.Symbol(comment_name(leaf))
                         for j, leaf in enumerate(k.all_leaves)}
                names.update({sp.Symbol(s, real=True): sp.Symbol(comment_name(leaf))
                              for s, leaf in k.sub_leaves.items()})
                what = str(k.expr.xreplace(names))
            elif isinstance(k, (Affine, AffineGrad)):
                f = k.fold
                what = (f"[{comment_name(f.h)}, 1] @ [{comment_name(f.W)}; "
                        f"{comment_name(f.b)}]" if isinstance(k, Affine) else
                        f"[{comment_name(f.h)}, 1].T @ {comment_name(f.dz)}")
            elif isinstance(k, CopyIn):
                what = f"{comment_name(n)} copied beside a column of ones"
            elif isinstance(k, Dot):
                what = f"{n.op}(" + " * ".join(comment_name(i) for i in k.product.inputs) + ")"
            lines.append(f"  {type(k).__name__:<10} {comment_name(n)} = {what}"
                         f"  -> {_where(self.plan.buffer.get(id(n)), self.plan)}")
        for g in self.groups:
            ops = " · ".join(sorted({n.op for n in g.members[0].nodes}))
            how = (f"flat: {g.total} elements, slots " +
                   ", ".join(f"{'param' if s.kind == 'p' else 'leaf'} {s.index}" for s in g.slots)
                   if g.flat else "one member at a time")
            folds = f"; {len(g.folds)} bias folds" if g.folds else ""
            lines.append(f"  group {g.index}: {len(g.members)} members ({ops}), {how}{folds}")
        return "\n".join(lines)


def read_through(n: Node, transparent: dict) -> Node:
    """The node a value reads through to (views and broadcasts the plan does not print)."""
    while id(n) in transparent:
        n = transparent[id(n)]
    return n


def _where(b, plan) -> str:
    if isinstance(b, FlatView):
        return f"flat group {b.group}, slot {b.slot}, member {b.member}"
    if isinstance(b, AugView):
        return "the [h, 1] buffer of a bias fold"
    if b in plan.fresh:
        return f"{b}, returned (a new array at each call)"
    return b or "a new value"


def _operands_first(expr, leaves, all_leaves, sub_leaves) -> list:
    """`leaves` with the array factors of a product first (`dz * (z > 0)`, the gradient
    of relu): writing the product into the factor is a true in-place call,
    `np.multiply(mask, dz, out=dz)`, where writing it into `z`'s buffer touches a
    third array (23 against 33 us at 128 x 256 float64, NumPy 2.4). Sums keep the
    graph's order: their other terms are chains that run in place."""
    direct = {a for a in expr.args if a.is_Symbol} if expr.is_Mul else set()
    symbol = {id(l): fusion.leaf_symbol(k) for k, l in enumerate(all_leaves)}
    symbol.update({id(l): sp.Symbol(s, real=True) for s, l in sub_leaves.items()})
    return sorted(leaves, key=lambda l: symbol.get(id(l)) not in direct)


def lower(fn: Function, caps: Caps = Caps()) -> Schedule:
    """Plan `fn` for a target with capabilities `caps`."""
    return Lowering(fn, caps).run()


class Lowering(UpdatePlan):
    """The planning passes, in order: classification (views, broadcasts read
    through, transposes as views), fusion, dot reductions, the update region and its
    groups (update_plan.py), the straight-line kernels, the buffer plan."""

    def __init__(self, fn: Function, caps: Caps = Caps()):
        self.fn = fn
        self.caps = caps
        self.order = list(fn.order())
        self.cut = {id(c) for c in fn.cut}
        self.outputs = {id(o) for o in fn.outputs}
        self.update_of = {id(v): p for p, v in fn.updates}  # value -> param (last wins)
        self.consumers: dict[int, list[Node]] = defaultdict(list)
        for n in self.order:
            for i in n.inputs:
                self.consumers[id(i)].append(n)
        self.param_views = aliasing.updated_views(self.order, {id(p) for p, _ in fn.updates},
                                                  self.cut)
        self.region: set[int] = set()
        self.transparent: dict[int, Node] = {}
        self.alias: set[int] = set()
        self.fold_cands: dict[int, Fold] = {}
        self.inline: set[int] = set()
        self.dots: dict[int, Node] = {}
        self.groups: list[UpdateGroup] = []
        self.folds: dict[int, Fold] = {}
        self.fixed: dict[int, object] = {}
        self.foreign_read: set[int] = set()
        self.base_of: dict[int, int] = {}
        self.batch_consts: list[Node] = []

    def run(self) -> Schedule:
        self.classify()
        args = [n for n in self.order if self.is_arg(n)]
        self.groups = self.plan_updates()
        kernels = self.kernels()
        region_leaves = {id(self.source_of(leaf)) for grp in self.groups
                         for member in grp.members for leaf in member.leaves}
        late = [(p, v) for p, v in self.fn.updates if id(v) not in self.region]
        keep = self.outputs | region_leaves | {id(self.source_of(v)) for _, v in late}
        plan = memory.plan([k.statement for k in kernels], base_of=self.base_of, keep=keep)
        for k in kernels:
            if isinstance(k, Opaque) and k.fixed is not None:
                plan.buffer[id(k.node)] = k.fixed
        snapshots = aliasing.needs_snapshot(
            [v for _, v in late] + list(self.fn.outputs), self.order,
            {id(p) for p, _ in self.fn.updates}, self.cut)
        return Schedule(self.fn, self.caps, args, kernels, plan, self.groups, self.region,
                        self.transparent, self.alias, self.inline, self.folds, self.fixed,
                        self.base_of, self.batch_consts, self.foreign_read, list(snapshots), late)

    # -- classification ---------------------------------------------------------------------
    def is_arg(self, n: Node) -> bool:
        return n.op in ("input", "param") or id(n) in self.cut

    def classify(self) -> None:
        order = self.order
        self.region = self.update_region()
        alias: set[int] = set()            # 2-D transposes printed as views (no statement)
        transparent: dict[int, Node] = {}  # broadcast feeding only element-wise code
        for n in order:
            if n.is_leaf or id(n) in self.cut:
                continue
            cons = self.consumers[id(n)]
            if n.op in _BROADCAST and cons and id(n) not in self.outputs and \
                    id(n) not in self.update_of and all(_is_ew(c) for c in cons):
                transparent[id(n)] = self.source_of(n.inputs[0], transparent)
            elif n.op in _VIEW_OPS and id(n) not in self.outputs:
                transparent[id(n)] = self.source_of(n.inputs[0], transparent)
            elif n.op == "transpose" and n.ndim == 2 and id(n) not in self.outputs and \
                    n.attrs.get("axes") in (None, (1, 0)):  # a swap, not (0, 1)
                alias.add(id(n))
        if self.caps.transpose_views == "matmul":  # read only as a GEMM's transpose flag
            alias = {k for k in alias if self.consumers[k] and all(
                c.op == "matmul" and c.ndim == 2 and all(i.ndim == 2 for i in c.inputs)
                for c in self.consumers[k])}
        self.transparent = transparent
        self.alias = alias
        self.fold_cands = self.fold_candidates() if self.caps.bias_fold else {}
        # fusion: inline single-consumer element-wise nodes into their consumer
        inline, size = set(), {}
        for n in order:
            if n.is_leaf or id(n) in self.cut or id(n) in self.region or not _is_ew(n) \
                    or n.shape == ():
                continue
            total = 1
            for i in set(n.inputs):
                i = self.source_of(i)
                if self._inlinable(i, n) and total + size[id(i)] <= self.caps.max_group:
                    inline.add(id(i))
                    total += size[id(i)]
            size[id(n)] = total
        self.inline = inline
        for k in [k for k, c in self.fold_cands.items() if id(c.h) in inline]:
            del self.fold_cands[k]
        self.dots = self._dot_reductions() if self.caps.dot_reductions else {}

    def _dot_reductions(self) -> dict[int, Node]:
        """Full sums (and means) of a product of two arrays, `sum(a * b)`: one dot
        product instead of a multiply into a buffer and a reduction (the MSE loss is one)."""
        out = {}
        for n in self.order:
            if n.op not in ("sum", "mean") or n.shape != () or id(n) in self.cut:
                continue
            x = self.source_of(n.inputs[0])
            if x.op != "mul" or x.ndim == 0 or id(x) in self.cut or id(x) in self.outputs or \
                    id(x) in self.update_of or id(x) in self.region or id(x) in self.inline or \
                    id(x) in self.fold_cands or not all(
                        c is n or c.op == "count" or (id(c) in self.transparent and c.op ==
                                                      "broadcast_like" and c.inputs[0] is not x)
                        for c in self.consumers[id(x)]):  # others read x's shape only
                continue
            ins = [self.source_of(i) for i in x.inputs]
            if all(i.shape == x.shape and i.dtype == x.dtype and id(i) not in self.inline
                   and i.op != "const" for i in ins):
                out[id(n)] = x
        return out

    def source_of(self, n: Node, transparent=None) -> Node:
        return read_through(n, self.transparent if transparent is None else transparent)

    def _inlinable(self, i: Node, c: Node) -> bool:
        if i.is_leaf or id(i) in self.cut or not _is_ew(i) or i.shape != c.shape:
            return False
        if id(i) in self.outputs or id(i) in self.update_of or id(i) in self.region or \
                id(i) in self.fold_cands:
            return False
        users = {id(u) for u in self._users(i)}
        return users == {id(c)}

    def _users(self, n: Node) -> list[Node]:
        """Consumers, looking through transparent views."""
        out, stack = [], list(self.consumers[id(n)])
        while stack:
            u = stack.pop()
            if id(u) in self.transparent:
                stack.extend(self.consumers[id(u)])
            else:
                out.append(u)
        return out

    # -- the straight line ------------------------------------------------------------------------
    def kernels(self) -> list[Kernel]:
        """The statements of the straight line (the update region is the groups')."""
        out: list[Kernel] = []
        fold_of_a = {id(f.a): f for f in self.folds.values()}
        fold_of_grad = {id(getattr(f, r)): f for f in self.folds.values() for r in ("gW", "gb")}
        folded_mm = {id(f.m) for f in self.folds.values()}
        dotted = {id(x) for x in self.dots.values()}
        grad_printed: set[int] = set()
        augs: set[int] = set()
        for f in self.folds.values():
            h = f.h
            if id(h) in augs:
                continue
            augs.add(id(h))
            if self.is_arg(h):  # a fed array: copied beside the ones at each call
                out.append(CopyIn(h, memory.Statement(uses=[id(h)])))
            else:  # computed: written straight into the view
                self.fixed[id(h)] = AugView(id(h))

        def request(n, **kw):
            fixed = self.fixed.get(id(n))
            fresh = self.caps.fresh_outputs and fixed is None and id(n) in self.outputs
            return memory.Request(id(n), n.shape, _dname(n.dtype), fixed=fixed, fresh=fresh, **kw)

        for n in self.order:
            if n.is_leaf or id(n) in self.cut or id(n) in self.transparent or \
                    id(n) in self.inline or id(n) in self.region or id(n) in folded_mm or \
                    id(n) in dotted:
                continue
            if id(n) in fold_of_a:
                f = fold_of_a[id(n)]
                out.append(Affine(n, memory.Statement(uses=[id(f.h)], defines=[request(n)]), f))
                continue
            if id(n) in fold_of_grad:
                f = fold_of_grad[id(n)]
                if id(f) in grad_printed:
                    continue
                grad_printed.add(id(f))
                st = memory.Statement(uses=[id(f.h), id(self.source_of(f.dz))],
                                      defines=[request(f.gW), request(f.gb)])
                out.append(AffineGrad(n, st, f))
                continue
            if id(n) in self.alias:
                src = self.source_of(n.inputs[0])
                self.base_of[id(n)] = self.base_of.get(id(src), id(src))
                continue
            fixed = self.fixed.get(id(n))
            uses = [id(self.source_of(i)) for i in n.inputs]
            if n.shape != () and _is_ew(n):
                expr, leaves, key, all_leaves, sub_leaves = self.group_expr(n)
                may = () if id(n) in self.outputs else tuple(  # (a node read once)
                    id(l) for l in _operands_first(expr, leaves, all_leaves, sub_leaves)
                    if l.shape == n.shape and l.dtype == n.dtype
                    and sum(m is l for m in leaves) == 1)
                st = memory.Statement(uses=[id(l) for l in leaves],
                                      defines=[request(n, may_alias=may)])
                out.append(Fused(n, st, expr, leaves, key, all_leaves, sub_leaves))
            elif n.op == "matmul" and n.shape != () and n.inputs[0].ndim >= 1:
                out.append(Matmul(n, memory.Statement(uses=uses, defines=[request(n)])))
            elif n.op in ("sum", "mean") and n.shape != ():
                out.append(Reduce(n, memory.Statement(uses=uses[:1], defines=[request(n)])))
            elif n.op in ("softmax", "log_softmax") and n.shape != () and \
                    n.dtype.kind == "f" and n.inputs[0].dtype == n.dtype:
                out.append(Softmax(n, memory.Statement(uses=uses[:1], defines=[request(n)])))
            elif id(n) in self.dots and fixed is None:
                x = self.dots[id(n)]
                st = memory.Statement(uses=[id(self.source_of(i)) for i in x.inputs])
                out.append(Dot(n, st, x))
            elif n.op in ("sum", "mean") and fixed is None:
                out.append(ReduceAll(n, memory.Statement(uses=uses[:1])))
            elif n.op == "count" and fixed is None:
                self.batch_consts.append(n)  # depends on the batch size only: set at allocation
            else:
                st = memory.Statement(uses=uses)
                if fixed is None:  # the op's code may return a view of an input
                    st.views = {id(n): tuple(uses)}
                out.append(Opaque(n, st, fixed))
        return out

    # -- fused element-wise groups ----------------------------------------------------------------
    def group_expr(self, root: Node):
        """(SymPy expression over leaf symbols, the leaves it reads, its structure key,
        every leaf by index, S-symbol leaves) of the fused tree at `root`."""
        leaves: list[Node] = []
        index: dict[int, int] = {}
        key_parts = []

        def leaf(n):
            n = self.source_of(n)
            small = _small_int_const(n)
            if small is not None:  # 1, 2, -1 ... as numbers, so SymPy can simplify them
                key_parts.append(("int", small))
                return sp.Integer(small)
            if id(n) not in index:
                index[id(n)] = len(leaves)
                leaves.append(n)
                key_parts.append(("leaf", self._klass(n, root), n.dtype.str))
            return fusion.leaf_symbol(index[id(n)])

        # post-order over the inlined tree (bounded by max_group, explicit stack)
        exprs: dict[int, tuple] = {}
        stack = [(root, False)]
        while stack:
            n, done = stack.pop()
            if done:
                args = []
                for i in n.inputs:
                    s = self.source_of(i)
                    if id(s) in self.inline and id(s) in exprs:
                        args.append(exprs[id(s)])
                    else:
                        args.append(leaf(i))
                exprs[id(n)] = (n, args)
                continue
            stack.append((n, True))
            for i in reversed(n.inputs):
                s = self.source_of(i)
                if id(s) in self.inline and id(s) not in exprs:
                    stack.append((s, False))
        # structure key: ops in post-order with their argument wiring
        wiring = []
        pos = {}
        for k, (nid, (n, args)) in enumerate(exprs.items()):
            pos[nid] = k
            wiring.append((n.op, _attrs_key(n), n.dtype.str,
                           tuple(("n", pos[id(self.source_of(i))]) if id(self.source_of(i)) in pos
                                 else ("i", _small_int_const(self.source_of(i)))
                                 if id(self.source_of(i)) not in index
                                 else ("l", index[id(self.source_of(i))]) for i in n.inputs)))
        subs = self._substitutions(leaves, root)
        # a value that is itself a leaf of the group is read through that leaf's symbol:
        # one symbol per node (an in-place write aliases one symbol, see fusion.emit)
        as_leaf = {id(node): index[id(node)] for _, _, _, node in subs if id(node) in index}
        # relu's mask read through relu's value, unless that value lives in a [h, 1] view
        # (strided: the mask would be slower to read and z's buffer is not freed by it)
        masks = {id(node) for _, op, _, node in subs
                 if op in _SIGN_OF_INPUT and id(node) not in self.fixed}
        key = (tuple(wiring), tuple(p for p in key_parts if p[0] == "leaf"),
               tuple((k, op, ak, as_leaf.get(id(node)), id(node) in masks)
                     for k, op, ak, node in subs))
        hit = _EXPR_CACHE.get(key)
        if hit is None:
            built: dict[int, sp.Expr] = {}
            for nid, (n, _) in exprs.items():
                args = []
                for i in n.inputs:
                    s = self.source_of(i)
                    small = _small_int_const(s)
                    args.append(built[id(s)] if id(s) in built else sp.Integer(small)
                                if small is not None else fusion.leaf_symbol(index[id(s)]))
                built[nid] = fusion.substitute(n.op, _attrs_key(n), args)
            expr = built[id(root)]
            extra = {}
            for k, op, ak, node in subs:
                f = fusion.substitute(op, ak, [fusion.leaf_symbol(k)])
                extra[f] = fusion.leaf_symbol(as_leaf[id(node)]) if id(node) in as_leaf else \
                    sp.Symbol(f"S{k}_{op}", real=True)
                if id(node) in masks:  # relu's gradient mask `z > 0` as `relu(z) > 0`:
                    # z need not stay alive for the backward pass (relu runs in place)
                    extra[sp.Gt(fusion.leaf_symbol(k), 0)] = sp.Gt(extra[f], 0)
            if extra:
                expr = expr.xreplace(extra)
            hit = _EXPR_CACHE[key] = (expr, key, frozenset(s.name for s in expr.free_symbols))
        expr, key, used = hit
        # substitution symbols become leaves
        sub_leaves = {}
        for k, op, ak, node in subs:
            sname = f"S{k}_{op}"
            if sname in used and id(node) not in as_leaf:
                sub_leaves[sname] = node
        live = [l for k, l in enumerate(leaves) if fusion.leaf_symbol(k).name in used]
        return expr, live + list(sub_leaves.values()), key, list(leaves), sub_leaves

    def _substitutions(self, leaves, root):
        """Unary element-wise values of a leaf already computed earlier (tanh(z) = h)."""
        out = []
        for k, l in enumerate(leaves):
            if l.shape == ():
                continue
            for c in self.consumers[id(l)]:
                if c.index >= root.index or len(c.inputs) != 1 or not _is_ew(c) or \
                        id(c) in self.inline or id(c) in self.transparent or id(c) in self.region:
                    continue
                out.append((k, c.op, _attrs_key(c), c))
        return out

    def _klass(self, n: Node, root: Node):
        if n.shape == ():
            return "scalar"
        if n.shape == root.shape:
            return "full"
        return n.shape
