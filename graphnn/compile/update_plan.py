"""The update region of a training step, planned (a mixin of schedule.Lowering).

Parameter updates that have the same structure (SGD on every parameter, Adam on
every parameter, ...) run once on flat buffers: the parameters, their gradients
and optimizer state are views into one flat array per role, so an optimizer
update is a handful of whole-buffer operations (or one fused loop, or one GPU
kernel), and the gradients are computed straight into their views. Affine
layers whose weight and bias sit side by side in those buffers fold the bias
into the matmul (`[h, 1] @ [W; b]`).

This module decides all of that as data (`UpdateGroup`, `Slot`, `Fold`); the
targets name the buffers and print the code.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import sympy as sp

from ..graph import Node
from . import fusion
from .fast_common import _attrs_key, _dname, _flat_group, _is_ew


class UpdatePlan:
    """The update-region half of the lowering: the region, its components grouped
    by structure, bias folds, and the flat layout of each group."""

    def update_region(self) -> set[int]:
        cand: set[int] = set()
        for p, v in self.fn.updates:
            if p.shape == () or not _is_ew(v) or v.shape != p.shape:
                continue
            stack = [v]
            while stack:
                n = stack.pop()
                if id(n) in cand or n.is_leaf or id(n) in self.cut or not _is_ew(n) \
                        or n.shape != p.shape:
                    continue
                cand.add(id(n))
                stack.extend(n.inputs)
        updated_vals = {id(v) for _, v in self.fn.updates}
        for n in reversed(self.order):
            if id(n) not in cand:
                continue
            if id(n) in self.outputs or any(id(c) not in cand for c in self.consumers[id(n)]):
                if not (id(n) in updated_vals and all(id(c) in cand for c in self.consumers[id(n)])
                        and id(n) not in self.outputs):
                    cand.discard(id(n))
        return cand

    def fold_candidates(self) -> dict:
        """Affine layers `add(matmul(h, W), b)` whose bias can ride inside the matmul.

        With W and b adjacent in the flat parameter buffer, `[W; b]` is one (k+1, n)
        view, and with h kept beside a column of ones (`[h, 1]`, a (B, k+1) buffer)
        the layer is one matmul `[h, 1] @ [W; b]`; the gradients of W and b (adjacent
        in the flat gradient buffer) are one matmul too: `[h, 1].T @ dz`. That removes
        the bias add and the bias-gradient reduction. Here: the structural part; the
        flat-buffer part is checked when the update groups are known (plan_updates)."""
        from .schedule import Fold
        upd = {id(p) for p, _ in self.fn.updates}
        out = {}
        for a in self.order:
            if a.op != "add" or a.ndim != 2 or id(a) in self.cut or id(a) in self.outputs \
                    or id(a) in self.update_of or id(a) in self.region:
                continue
            m, b = a.inputs
            if m.op != "matmul":
                b, m = m, b
            b = self.source_of(b)
            if m.op != "matmul" or b.op != "param" or id(b) not in upd:
                continue
            h, W = m.inputs
            if W.op != "param" or id(W) not in upd or W.ndim != 2 or h.ndim != 2 or \
                    b.shape != (W.shape[1],) or m.shape != a.shape or W is b or \
                    len({a.dtype, m.dtype, h.dtype, W.dtype, b.dtype}) != 1:
                continue
            if [id(c) for c in self.consumers[id(m)]] != [id(a)] or id(m) in self.outputs \
                    or id(m) in self.update_of or id(m) in self.cut:
                continue
            if self.is_arg(h):
                if h.op == "param":
                    continue
            elif h.is_leaf or not _is_ew(h) or id(h) in self.region or id(h) in self.outputs \
                    or id(h) in self.update_of or id(h) in self.transparent:
                continue
            grads = None  # gW = matmul(transpose(h), dz) and gb = sum(dz, axis=0)
            for t in self.consumers[id(h)]:
                if t.op != "transpose" or id(t) not in self.alias:
                    continue
                for gW in self.consumers[id(t)]:
                    if gW.op != "matmul" or gW.inputs[0] is not t or gW.shape != W.shape:
                        continue
                    dz = gW.inputs[1]
                    for gb in self.consumers[id(dz)]:
                        if gb.op == "sum" and gb.attrs.get("axis") == (0,) and \
                                not gb.attrs.get("keepdims") and gb.shape == b.shape:
                            grads = (gW, gb, dz)
            if grads is None:
                continue
            out[id(a)] = Fold(a=a, m=m, h=h, W=W, b=b, gW=grads[0], gb=grads[1], dz=grads[2])
        return out

    def plan_updates(self) -> list:
        """Components of the update region, grouped by identical structure, with their
        accepted folds and flat layouts."""
        from .schedule import Member, UpdateGroup
        region = self.region
        self.folds = {}
        if not region:
            return []
        parent = {}

        def find(a):
            while parent.setdefault(a, a) != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for n in self.order:
            if id(n) in region:
                find(id(n))
                for i in n.inputs:
                    if id(i) in region:
                        parent[find(id(i))] = find(id(n))
        comps: dict[int, list[Node]] = defaultdict(list)
        for n in self.order:
            if id(n) in region:
                comps[find(id(n))].append(n)
        writes: dict[int, list[Node]] = defaultdict(list)  # value -> params it updates
        for p, v in self.fn.updates:
            if id(v) in region:
                writes[id(v)].append(p)
        members = []
        for nodes in comps.values():
            local = {id(n): k for k, n in enumerate(nodes)}
            leaves: list[Node] = []
            lidx: dict[int, int] = {}
            wiring = []
            for n in nodes:
                refs = []
                for i in n.inputs:
                    if id(i) in local:
                        refs.append(("n", local[id(i)]))
                        continue
                    s = self.source_of(i)
                    if id(s) not in lidx:
                        lidx[id(s)] = len(leaves)
                        leaves.append(s)
                    refs.append(("l", lidx[id(s)]))
                wiring.append((n.op, _attrs_key(n), n.dtype.str, tuple(refs)))
            shape = nodes[0].shape
            params = [p for n in nodes for p in writes.get(id(n), [])]
            kinds = []
            for l in leaves:
                if l.shape == ():
                    kinds.append(("s", id(l)))       # shared scalar: the same node
                elif l.shape == shape:
                    kinds.append(("p", params.index(l)) if l in params else ("f",))
                else:
                    kinds.append(("o", l.shape))
            outs = tuple((local[id(n)], params.index(p)) for n in nodes for p in writes.get(id(n), []))
            sig = (tuple(wiring), tuple(kinds), outs)
            members.append(Member(nodes, leaves, params, sig, shape, kinds))
        # a param one component updates and another reads (itself or through a view,
        # `A - B.T`): write it last
        for m in members:
            own = {id(p) for p in m.params}
            for l in m.leaves:
                self.foreign_read |= set(self.param_views.get(id(l), ())) - own
        by_sig: dict = {}
        for m in members:
            by_sig.setdefault(m.sig, []).append(m)
        groups = [UpdateGroup(gi, ms, sig) for gi, (sig, ms) in enumerate(by_sig.items())]
        self._accept_folds(groups)
        self._layout(groups)
        return groups

    def _accept_folds(self, groups) -> None:
        """Keep the candidates whose W and b are updated by one flat group with their
        gradients as the same flat slot, and place b's member right after W's."""
        member = {}
        for gi, grp in enumerate(groups):
            for mb in grp.members:  # (Adam's member updates W and its two moments)
                for p in mb.params:
                    member[id(p)] = (gi, mb)
        partner = {}
        for key, c in self.fold_cands.items():
            (gi, mW), (gj, mb) = member.get(id(c.W), (None, None)), member.get(id(c.b), (-1, None))
            if gi != gj or not _flat_group(groups[gi].members):
                continue
            slots = [k for k, l in enumerate(mW.leaves) if l is c.gW]
            if len(slots) != 1 or mW.kinds[slots[0]][0] != "f" or \
                    mb.leaves[slots[0]] is not c.gb or c.W not in mW.leaves or \
                    mb.leaves[mW.leaves.index(c.W)] is not c.b or \
                    not (self._can_fix(c.gW) and self._can_fix(c.gb)) or \
                    id(mW) in partner or id(mb) in partner.values():
                continue
            c.slot, c.param_slot = slots[0], mW.leaves.index(c.W)
            partner[id(mW)] = id(mb)
            self.folds[key] = c
        if not partner:
            return
        for grp in groups:
            placed = []
            by_id = {id(x): x for x in grp.members}
            follows = set(partner.values())
            for x in grp.members:
                if id(x) in follows:
                    continue
                placed.append(x)
                if id(x) in partner:
                    placed.append(by_id[partner[id(x)]])
            grp.members = placed

    def _layout(self, groups) -> None:
        """Flat buffers: each group's slots, which leaves are computed straight into
        their views (`self.fixed`), scratch slots, and the folds' [W; b] ranges."""
        from .schedule import FlatView, Slot
        readers = Counter(id(l) for grp in groups for mb in grp.members for l in mb.leaves)
        read_late = {id(self.source_of(v)) for _, v in self.fn.updates} | \
            {id(self.source_of(o)) for o in self.fn.outputs}
        for gi, grp in enumerate(groups):
            ms = grp.members
            m0 = ms[0]
            grp.flat = _flat_group(ms)
            grp.dtype = _dname(m0.nodes[0].dtype)
            if not grp.flat:
                continue
            sizes = [math.prod(m.shape) for m in ms]
            grp.total = sum(sizes)
            grp.offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
            for k, kind in enumerate(m0.kinds):
                if kind[0] == "p":
                    grp.slots.append(Slot(k, "p", [m.params[kind[1]] for m in ms], []))
                elif kind[0] == "f":
                    ls = [m.leaves[k] for m in ms]
                    fixed, seen = [], set()
                    for j, l in enumerate(ls):
                        fix = self._can_fix(l) and id(l) not in seen and id(l) not in self.fixed
                        if fix:
                            self.fixed[id(l)] = FlatView(gi, k, j)
                        fixed.append(fix)
                        seen.add(id(l))
                    grp.slots.append(Slot(k, "f", ls, fixed))
                    if all(readers[id(l)] == 1 and id(l) not in read_late for l in ls):
                        grp.scratch.add(k)  # this group's copy, read by nobody after it
            self._place_folds(grp)

    def _place_folds(self, grp) -> None:
        """The (k+1, n) ranges [W; b] and [gW; gb] of the accepted folds in this group."""
        ms = grp.members
        pos = {id(p): j for j, m in enumerate(ms) for p in m.params}
        for key, f in list(self.folds.items()):
            j = pos.get(id(f.W))
            if j is None:
                continue
            k, n = f.W.shape
            if j + 1 >= len(ms) or ms[j + 1].leaves[f.param_slot] is not f.b or \
                    id(f.gW) not in self.fixed or id(f.gb) not in self.fixed:
                del self.folds[key]
                continue
            f.group, f.member = grp.index, j
            f.span = (grp.offsets[j], grp.offsets[j] + (k + 1) * n)
            grp.folds.append(f)

    def _can_fix(self, l: Node) -> bool:
        if l.is_leaf or id(l) in self.cut or id(l) in self.alias or id(l) in self.transparent \
                or id(l) in self.outputs or id(l) in self.inline or id(l) in self.region:
            return False
        return (_is_ew(l) and l.shape != ()) or l.op == "matmul" or (l.op in ("sum", "mean")
                                                                       and l.shape != ())


def component_exprs(member, updates, source_of):
    """The roots of a component (update values and multi-use nodes, which are
    materialized) and, per node, its SymPy expression over leaf symbols `Lk` and
    root symbols `Rj` (j: the node's position in the component), the leaves it
    reads, and the params each root writes."""
    nodes, leaves = member.nodes, member.leaves
    local = {id(n): k for k, n in enumerate(nodes)}
    writes = defaultdict(list)
    for p, v in updates:
        if id(v) in local:
            writes[id(v)].append(p)
    uses = defaultdict(int)
    for n in nodes:
        for i in set(n.inputs):
            if id(i) in local:
                uses[id(i)] += 1
    roots = [n for n in nodes if writes.get(id(n)) or uses[id(n)] != 1]
    root_ids = {id(n) for n in roots}
    root_pos = {id(r): j for j, r in enumerate(roots)}
    expr_of: dict[int, sp.Expr] = {}
    reads: dict[int, set] = {}
    for n in nodes:
        args, rd = [], set()
        for i in n.inputs:
            if id(i) in local:
                if id(i) in root_ids:
                    args.append(sp.Symbol(f"R{local[id(i)]}", real=True))
                else:
                    args.append(expr_of[id(i)])
                    rd |= reads[id(i)]
            else:
                k = leaves.index(source_of(i))
                args.append(fusion.leaf_symbol(k))
                rd.add(k)
        expr_of[id(n)] = fusion.substitute(n.op, _attrs_key(n), args)
        reads[id(n)] = rd
    return roots, root_pos, expr_of, reads, writes


def component_leaf_exprs(member, updates, source_of):
    """(roots, writes, full): each root's expression over the component's leaves only
    (the roots it reads substituted in), for targets that compute a whole component
    in one kernel (CuPy, CUDA)."""
    nodes = member.nodes
    roots, root_pos, expr_of, reads, writes = component_exprs(member, updates, source_of)
    local = {id(n): k for k, n in enumerate(nodes)}
    full: dict[int, sp.Expr] = {}
    for r in roots:  # in graph order: every root after the roots it reads
        e = expr_of[id(r)]
        sub = {sp.Symbol(f"R{local[id(q)]}", real=True): full[id(q)] for q in roots
               if id(q) in full and sp.Symbol(f"R{local[id(q)]}", real=True) in e.free_symbols}
        full[id(r)] = e.xreplace(sub) if sub else e
    return roots, writes, full
