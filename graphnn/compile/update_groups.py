"""The update region of a training step, planned and printed (a mixin of FastPrinter).

Parameter updates that have the same structure (SGD on every parameter, Adam on
every parameter, ...) run once on flat buffers: the parameters, their gradients
and optimizer state are views into one flat array per role, so an optimizer
update is a handful of whole-buffer operations (or one fused Numba loop, or one
GPU kernel), and the gradients are computed straight into their views. Affine
layers whose weight and bias sit side by side in those buffers fold the bias
into the matmul (`[h, 1] @ [W; b]`).
"""
from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict

import numpy as np
import sympy as sp

from ..graph import Node
from . import fusion, loops
from .fast_common import (_attrs_key, _call_cost, _dname, _flat_group, _is_ew, _shape_code,
                          _tag, _unique)
from .printer import comment_name, comment_text


class UpdateGroups:
    """The update-region half of FastPrinter: finding the region, grouping its
    components by structure, flat buffers and their views, bias folds, and the code
    of each component."""

    def _update_region(self) -> set[int]:
        cand: set[int] = set()
        shape_of: dict[int, tuple] = {}
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
                shape_of[id(n)] = p.shape
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

    # -- printing ----------------------------------------------------------------------------

    def _accept_folds(self, groups) -> None:
        """Keep the candidates whose W and b are updated by one flat group with their
        gradients as the same flat slot, and place b's member right after W's."""
        self.folds: dict[int, dict] = {}
        member = {}
        for gi, grp in enumerate(groups):
            for mb in grp["members"]:  # (Adam's member updates W and its two moments)
                for p in mb["params"]:
                    member[id(p)] = (gi, mb)
        partner = {}
        for key, c in self.fold_cands.items():
            (gi, mW), (gj, mb) = member.get(id(c["W"]), (None, None)), member.get(id(c["b"]), (-1, None))
            if gi != gj or not _flat_group(groups[gi]["members"]):
                continue
            slots = [k for k, l in enumerate(mW["leaves"]) if l is c["gW"]]
            if len(slots) != 1 or mW["kinds"][slots[0]][0] != "f" or \
                    mb["leaves"][slots[0]] is not c["gb"] or c["W"] not in mW["leaves"] or \
                    mb["leaves"][mW["leaves"].index(c["W"])] is not c["b"] or \
                    not (self._can_fix(c["gW"]) and self._can_fix(c["gb"])) or \
                    id(mW) in partner or id(mb) in partner.values():
                continue
            c["slot"], c["param_slot"] = slots[0], mW["leaves"].index(c["W"])
            partner[id(mW)] = id(mb)
            self.folds[key] = c
        if not partner:
            return
        for grp in groups:
            ms, placed = grp["members"], []
            by_id = {id(x): x for x in ms}
            follows = set(partner.values())
            for x in ms:
                if id(x) in follows:
                    continue
                placed.append(x)
                if id(x) in partner:
                    placed.append(by_id[partner[id(x)]])
            grp["members"] = placed

    def _fold_candidates(self) -> dict[int, dict]:
        """Affine layers `add(matmul(h, W), b)` whose bias can ride inside the matmul.

        With W and b adjacent in the flat parameter buffer, `[W; b]` is one (k+1, n)
        view, and with h kept beside a column of ones (`[h, 1]`, a (B, k+1) buffer)
        the layer is one matmul `[h, 1] @ [W; b]`; the gradients of W and b (adjacent
        in the flat gradient buffer) are one matmul too: `[h, 1].T @ dz`. That removes
        the bias add and the bias-gradient reduction. Here: the structural part; the
        flat-buffer part is checked when the update groups are known (_groups)."""
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
            out[id(a)] = dict(a=a, m=m, h=h, W=W, b=b, gW=grads[0], gb=grads[1], dz=grads[2])
        return out

    def _groups(self):
        """Components of the update region, grouped by identical structure."""
        region = self.region
        self.fixed_buffer: dict[int, str] = {}
        self.flat_params: list[tuple[Node, str]] = []
        self.tail: list[tuple[str, Node]] = []
        self.deferred: list[tuple[str, Node]] = []  # writes that must wait for every read
        self.foreign_read: set[int] = set()
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
            members.append({"nodes": nodes, "leaves": leaves, "params": params, "sig": sig,
                            "shape": shape, "kinds": kinds})
        # a param one component updates and another reads (itself or through a view,
        # `A - B.T`): write it last
        for m in members:
            own = {id(p) for p in m["params"]}
            for l in m["leaves"]:
                self.foreign_read |= set(self.param_views.get(id(l), ())) - own
        by_sig: dict = {}
        for m in members:
            by_sig.setdefault(m["sig"], []).append(m)
        groups = [{"members": ms, "sig": sig} for sig, ms in by_sig.items()]
        self._accept_folds(groups)
        self._plan_groups(groups)
        return groups

    def _plan_groups(self, groups):
        """Flat buffers, views, and the group code (appended to self.tail)."""
        readers = Counter(id(l) for grp in groups for mb in grp["members"] for l in mb["leaves"])
        read_late = {id(self.source_of(v)) for _, v in self.fn.updates} | \
            {id(self.source_of(o)) for o in self.fn.outputs}
        for gi, grp in enumerate(groups):
            ms = grp["members"]
            m0 = ms[0]
            flat = _flat_group(ms)
            dtype = _dname(m0["nodes"][0].dtype)
            if not flat:
                for m in ms:
                    self._emit_component(m, {}, None, dtype)
                continue
            sizes = [math.prod(m["shape"]) for m in ms]
            total = sum(sizes)
            offs = np.concatenate([[0], np.cumsum(sizes)]).tolist()
            label = f"{gi}"
            self.globals_.append(f"# group {gi}: {len(ms)} parameters updated by the same rule "
                                 f"({' · '.join(sorted({n.op for n in m0['nodes']}))}), {total} elements")

            def flat_buffer(tag, views, optional=False):
                fname = self.claim(f"_flat{label}_{tag}")
                self.globals_.append(f"{fname} = {self.xp}.zeros({total}, dtype={self.xp}.{dtype})")
                for (vname, shape), a, b in zip(views, offs[:-1], offs[1:]):
                    line = f"{vname} = {fname}[{a}:{b}].reshape({_shape_code(shape)})"
                    if optional:
                        self.optional_views[line] = vname
                    self.globals_.append(line)
                return fname

            slot_names, scratch = {}, {}
            for k, kind in enumerate(m0["kinds"]):
                if kind[0] == "p":
                    ps = [m["params"][kind[1]] for m in ms]
                    views = [(self.claim(f"_v_{self.namer(p)}"), p.shape) for p in ps]
                    fname = flat_buffer(comment_text(self.namer(ps[0])).lower() + "s", views)
                    slot_names[k] = fname
                    for p, (vname, _) in zip(ps, views):
                        self.flat_params.append((p, vname))
                elif kind[0] == "f":
                    ls = [m["leaves"][k] for m in ms]
                    views = [(self.claim(f"_g_{self.namer(l)}"), l.shape) for l in ls]
                    fname = flat_buffer(f"leaf{k}", views, optional=True)
                    slot_names[k] = fname
                    seen = set()
                    for l, (vname, _) in zip(ls, views):
                        if self._can_fix(l) and id(l) not in seen and id(l) not in self.fixed_buffer:
                            self.fixed_buffer[id(l)] = vname
                        else:
                            self.tail.append((f"{self.xp}.copyto({vname}, {{{id(l)}}})  # into flat buffer",
                                              l))
                        seen.add(id(l))
                    if all(readers[id(l)] == 1 and id(l) not in read_late for l in ls):
                        scratch[k] = fname  # this group's copy, read by nobody after it
            self._fold_views(ms, slot_names, offs)
            self._emit_component(m0, slot_names, total, dtype, flat_label=label, scratch=scratch)

    def _fold_views(self, ms, slot_names, offs) -> None:
        """The (k+1, n) views [W; b] and [gW; gb] of the accepted folds in this group."""
        pos = {id(p): j for j, m in enumerate(ms) for p in m["params"]}
        for key, f in list(self.folds.items()):
            j = pos.get(id(f["W"]))
            if j is None:
                continue
            W, b = f["W"], f["b"]
            k, n = W.shape
            if j + 1 >= len(ms) or ms[j + 1]["leaves"][f["param_slot"]] is not b or \
                    not self.fixed_buffer.get(id(f["gW"])) or not self.fixed_buffer.get(id(f["gb"])):
                del self.folds[key]
                continue
            a, e = offs[j], offs[j] + (k + 1) * n
            shape = _shape_code((k + 1, n))
            f["Wb"] = self.claim(f"_v_{self.namer(W)}_{self.namer(b)}")
            self.globals_.append(f"{f['Wb']} = {slot_names[f['param_slot']]}[{a}:{e}].reshape({shape})"
                                 f"  # [{comment_name(W)}; {comment_name(b)}]")
            f["gWb"] = self.claim(f"_g_{self.namer(f['gW'])}_{self.namer(f['gb'])}")
            self.globals_.append(f"{f['gWb']} = {slot_names[f['slot']]}[{a}:{e}].reshape({shape})"
                                 f"  # their gradients, one matmul")

    def _can_fix(self, l: Node) -> bool:
        if l.is_leaf or id(l) in self.cut or id(l) in self.alias or id(l) in self.transparent \
                or id(l) in self.outputs or id(l) in self.inline or id(l) in self.region:
            return False
        return (_is_ew(l) and l.shape != ()) or l.op == "matmul" or (l.op in ("sum", "mean")
                                                                       and l.shape != ())

    def _component_exprs(self, m):
        """The roots of a component (update values and multi-use nodes, which are
        materialized) and, per node, its SymPy expression over leaf symbols `Lk` and
        root symbols `Rj` (j: the node's position in the component), the leaves it
        reads, and the params each root writes."""
        nodes, leaves = m["nodes"], m["leaves"]
        local = {id(n): k for k, n in enumerate(nodes)}
        writes = defaultdict(list)
        for p, v in self.fn.updates:
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
                    k = leaves.index(self.source_of(i))
                    args.append(fusion.leaf_symbol(k))
                    rd.add(k)
            expr_of[id(n)] = fusion.substitute(n.op, _attrs_key(n), args)
            reads[id(n)] = rd
        return roots, root_pos, expr_of, reads, writes

    def _component_leaf_exprs(self, m):
        """(roots, writes, full): each root's expression over the component's leaves only
        (the roots it reads substituted in), for targets that compute a whole component
        in one kernel (CuPy, CUDA)."""
        nodes = m["nodes"]
        roots, root_pos, expr_of, reads, writes = self._component_exprs(m)
        local = {id(n): k for k, n in enumerate(nodes)}
        full: dict[int, sp.Expr] = {}
        for r in roots:  # in graph order: every root after the roots it reads
            e = expr_of[id(r)]
            sub = {sp.Symbol(f"R{local[id(q)]}", real=True): full[id(q)] for q in roots
                   if id(q) in full and sp.Symbol(f"R{local[id(q)]}", real=True) in e.free_symbols}
            full[id(r)] = e.xreplace(sub) if sub else e
        return roots, writes, full

    def _emit_component(self, m, slot_names, total, dtype, flat_label=None, scratch=None):
        """Code for one component (or a whole flat group through its first member).

        `scratch` maps leaf slots to flat gradient buffers that nothing reads after
        this component: once a slot's last reader has run, its buffer serves as a
        temporary, so updates run in place (`g *= lr; p -= g`) instead of writing a
        third array, which costs NumPy about three times as much on large buffers.
        The roots (values the component materializes) are emitted in the order that
        makes the most calls in place (every order is tried when there are few)."""
        nodes = m["nodes"]
        roots, root_pos, expr_of, reads, writes = self._component_exprs(m)
        deps = [{root_pos[id(nodes[int(s.name[1:])])] for s in expr_of[id(r)].free_symbols
                 if s.name.startswith("R")} for r in roots]
        scratch = scratch or {}
        orders = [list(range(len(roots)))]
        if scratch and 1 < len(roots) <= 5:
            orders = [list(o) for o in itertools.permutations(range(len(roots)))
                      if all(deps[r] <= set(o[:k]) for k, r in enumerate(o))]
        plans = [self._plan_roots(m, roots, root_pos, expr_of, reads, writes, o, slot_names,
                                  total, dtype, scratch) for o in orders]
        best = min(plans, key=lambda pl: pl["cost"])  # min keeps the first (natural) of ties
        if self._emit_loop(m, roots, expr_of, writes, best, slot_names, total, dtype, flat_label):
            return
        shape = (total,) if total is not None else m["shape"]
        renamed = {}
        for j, _ in best["roots"]:
            dest = best["code"][j][0]
            if dest.startswith("_upd"):  # a materialized value of its own: a buffer
                renamed[dest] = self.claim(dest)
                self.globals_.append(f"{renamed[dest]} = {self.xp}.zeros({_shape_code(shape)}, "
                                     f"dtype={self.xp}.{dtype})")
        for j, r in best["roots"]:
            dest, ps, lines, fmt, n_t, n_b, fills, deferred = best["code"][j]
            dest = renamed.get(dest, dest)
            fmt = {s: renamed.get(v, v) for s, v in fmt.items()}
            for k in range(n_t):
                fmt.setdefault(f"T{k}", self.global_temp(shape, dtype, k))
            for k in range(n_b):
                fmt[f"B{k}"] = self.global_temp(shape, "bool", k)
            for k, number in enumerate(fills):
                fmt[f"F{k}"] = self.fill(shape, dtype, number)
            what = f"'{comment_name(r)}'" + (f" (and the same for every parameter of group "
                                                   f"{flat_label})" if total is not None else "")
            upd = ", ".join(f"'{comment_name(p)}'" for p in ps)
            self.tail.append((f"# {what}: {r.op} · update" + (f" -> {upd} in place"
                                                             if ps and not deferred else ""), r))
            for ln in lines:
                self.tail.append((ln.format(**fmt), r))
            self.deferred.extend((t.replace("{DEST}", dest), r) for t in deferred)

    def _emit_loop(self, m, roots, expr_of, writes, best, slot_names, total, dtype,
                   flat_label) -> bool:
        """Print a flat group's update as one fused loop (loops.py) when that pays
        and means the same; returns False to leave it to the NumPy calls."""
        if self.kernels == "numpy" or total is None or dtype != "float64":
            return False
        calls = sum(len(best["code"][j][2]) for j, _ in best["roots"])
        if self.kernels == "auto" and (total < loops.MIN_ELEMENTS or calls < loops.MIN_CALLS
                                       or not loops.available()):
            return False
        leaves = m["leaves"]
        slot_of = {id(l): k for k, l in enumerate(leaves)}
        for r in roots:
            if not loops.printable(expr_of[id(r)]):
                return False
            for p in writes.get(id(r), []):
                if id(p) in self.foreign_read or slot_of.get(id(p)) not in slot_names:
                    return False  # written where the loop cannot: a later reader waits for it
        if any(kind[0] not in ("s", "p", "f") or (kind[0] != "s" and k not in slot_names)
               for k, kind in enumerate(m["kinds"])):
            return False
        taken = {"i", "math", "min", "abs", "range", "numba"}  # the loop's own names

        def local(base: str) -> str:
            return _unique(base, taken)

        used = sorted({int(s.name[1:]) for r in roots for s in expr_of[id(r)].free_symbols
                       if s.name.startswith("L")})
        array_of: dict[str, str] = {}  # flat buffer -> loop parameter

        def array(buf: str) -> str:
            if buf not in array_of:
                array_of[buf] = local(buf.lstrip("_"))
            return array_of[buf]

        subs, literals, scalars, call_scalars, loads = {}, {}, [], [], []
        invariant: set = set()
        for k in used:
            if m["kinds"][k][0] == "s" and leaves[k].op == "const":  # a literal, as NumPy prints it
                literals[fusion.leaf_symbol(k)] = loops.literal(float(leaves[k].value))
                continue
            if m["kinds"][k][0] == "s":
                name = local(self.namer(leaves[k]))
                scalars.append(name)
                invariant.add(sp.Symbol(name, real=True))
                call_scalars.append(f"float({self.value_of_late(leaves[k])})")
            else:
                name = local(array(slot_names[k]) + "_i")
                loads.append((name, array(slot_names[k])))
            subs[fusion.leaf_symbol(k)] = sp.Symbol(name, real=True)
        nodes = m["nodes"]
        root_name = {}
        for r in roots:
            root_name[id(r)] = local(self.namer(r))
            subs[sp.Symbol(f"R{nodes.index(r)}", real=True)] = sp.Symbol(root_name[id(r)], real=True)
        printer = loops.LoopPrinter({subs.get(s, s): t for s, t in literals.items()},
                                    frozenset(invariant))
        shapes = {s: "scalar" if s in invariant or s in literals else "full"
                  for s in list(subs.values()) + list(literals)}
        pull = fusion.Emitter(shapes, dtype, None)._pull_scalars
        steps, notes = [], []
        for r in roots:  # in graph order, so every root comes after the roots it reads
            stores = [array(slot_names[slot_of[id(p)]]) for p in writes.get(id(r), [])]
            expr = fusion.rewrite_products(expr_of[id(r)].xreplace(subs), pull)
            steps.append((root_name[id(r)], printer.doprint(expr), stores))
            ps = ", ".join(f"'{comment_name(p)}'" for p in writes.get(id(r), []))
            notes.append(f"'{comment_name(r)}'" + (f" -> {ps}" if ps else ""))
        name = self.claim(f"_loop{flat_label}")
        arrays = list(array_of.values())
        self.loops += loops.kernel_source(
            name, arrays, scalars, loads, steps,
            f"Group {flat_label}: {'; '.join(notes)}; one pass over {total} elements.")
        args = list(array_of) + call_scalars
        r0 = roots[-1]
        self.tail.append((f"# group {flat_label} ({len(roots)} values, {calls} NumPy calls): "
                          f"one fused loop, in place (Numba)", r0))
        self.tail.append((f"{name}({', '.join(args)})", r0))
        return True

    def _plan_roots(self, m, roots, root_pos, expr_of, reads, writes, order, slot_names, total,
                    dtype, scratch) -> dict:
        """The code of a component's roots emitted in `order`, and its estimated cost
        (one per in-place call, more for a call writing a third array or a copy)."""
        leaves, nodes = m["leaves"], m["nodes"]
        pidx = {id(p): k for k, p in enumerate(m["params"])}
        leaf_of_param = {id(l): k for k, l in enumerate(leaves) if id(l) in pidx}
        rank = {r: k for k, r in enumerate(order)}
        last_read: dict[int, int] = {}  # leaf -> position (in order) of its last reading root
        for j, r in enumerate(roots):
            for k in reads[id(r)]:
                last_read[k] = max(last_read.get(k, -1), rank[j])

        def leaf_name(k):
            if total is not None and k in slot_names:
                return slot_names[k]
            return self.value_of_late(leaves[k])

        code, names, cost = {}, {}, 0.0
        for pos, j in enumerate(order):
            r = roots[j]
            expr = expr_of[id(r)]
            ps = writes.get(id(r), [])
            dest, alias, deferred = None, None, []
            if ps:
                p = ps[0]
                k = leaf_of_param.get(id(p))
                old_read_later = (k is not None and last_read.get(k, -1) > pos) or \
                    id(p) in self.foreign_read
                if not old_read_later:
                    dest = slot_names[leaves.index(p)] if (total is not None and id(p) in leaf_of_param
                                                           and leaves.index(p) in slot_names) \
                        else (self._param_flat(p, m, slot_names, total) if total is not None
                              else self.namer(p))
                    alias = fusion.leaf_symbol(k) if k is not None and k in reads[id(r)] else None
            if dest is None:
                dest = f"_upd{len(self.globals_)}_{self.namer(r)}"
                for p in ps:
                    target = (self._param_flat(p, m, slot_names, total) if total is not None
                              else self.namer(p))
                    deferred.append(f"{self.xp}.copyto({target}, {{DEST}})  # update '{comment_name(p)}'")
                    cost += 2.5
            names[j] = dest
            shapes, fmt = {}, {}
            for s in expr.free_symbols:
                if s.name.startswith("R"):
                    fmt[s.name] = names[root_pos[id(nodes[int(s.name[1:])])]]
                    shapes[s] = "full"
                else:
                    k = int(s.name[1:])
                    fmt[s.name] = leaf_name(k)
                    shapes[s] = "scalar" if leaves[k].shape == () else (
                        "full" if leaves[k].shape == m["shape"] else "other")
            key = (expr, alias, tuple(sorted((s.name, c) for s, c in shapes.items())))
            hit = self._emit_memo.get(key)
            if hit is None:
                hit = self._emit_memo[key] = fusion.emit(expr, shapes, dtype, alias)
            lines, n_t, n_b, fills = hit
            fmt["OUT"] = dest
            # temporaries in dead scratch buffers: slots no later root reads, or read by
            # this root only up to the call that first writes the temporary
            free = [k for k in scratch if last_read.get(k, -1) < pos]
            soon = [k for k in scratch if last_read.get(k, -1) == pos]
            taken = set()
            for t in range(n_t):
                reg = f"{{T{t}}}"
                first = next((i for i, ln in enumerate(lines) if f"out={reg}" in ln), None)
                if first is None:
                    continue
                pick = next((k for k in free if k not in taken), None)
                if pick is None:
                    pick = next((k for k in soon if k not in taken and all(
                        i <= first for i, ln in enumerate(lines) if f"{{L{k}}}" in ln)), None)
                if pick is not None:
                    taken.add(pick)
                    fmt[f"T{t}"] = scratch[pick]
            full = {s.name for s, c in shapes.items() if c == "full"}
            cost += sum(_call_cost(ln, fmt, full) for ln in lines)
            code[j] = (dest, ps, lines, fmt, n_t, n_b, fills, deferred)
        return {"cost": cost, "code": code, "names": names,
                "roots": [(j, roots[j]) for j in order]}

    def _param_flat(self, p, m, slot_names, total):
        k = m["leaves"].index(p) if p in m["leaves"] else None
        if k is not None and k in slot_names:
            return slot_names[k]
        return self.namer(p)

    def global_temp(self, shape, dtype, k) -> str:
        key = (shape, dtype, k)
        if key not in self.gtemps:
            name = self.claim(f"_utmp{k}_{dtype}_{_tag(shape)}")
            self.gtemps[key] = name
            self.globals_.append(f"{name} = {self.xp}.empty({_shape_code(shape)}, dtype={self.xp}.{dtype})")
        return self.gtemps[key]

    def value_of_late(self, n: Node) -> str:
        """A placeholder resolved after buffer planning."""
        return "{" + str(id(n)) + "}"

    # -- module parts ----------------------------------------------------------------------------------

    def _adopt_source(self, args, arg_ids):
        # table-driven (not one statement per parameter): a depth-1024 step has 2048
        # parameters, and Python's compiler is slow on long straight-line module code
        views = {id(p): v for p, v in self.flat_params}
        pairs = [(k, a, views[id(a)]) for k, a in enumerate(args) if id(a) in views]
        out = ["# parameters kept in flat buffers: (argument position, graph name, view)",
               "FLAT_ARGS = (" + "".join(f"\n    ({k}, {a.name!r}, {v})," for k, a, v in pairs)
               + ("\n)" if pairs else ")"), "", "",
               "def _adopt(values):",
               '    """Copy parameters into the flat buffers; make values[name] their views."""',
               "    for _, name, view in FLAT_ARGS:",
               "        if name in values:",
               f"            {self.xp}.copyto(view, values[name])",
               "            values[name] = view",
               "", "",
               "def _foreign(*args):",
               '    """Run on arrays that are not the adopted views: copy in, step, copy out."""',
               "    own = list(args)",
               "    for k, _, view in FLAT_ARGS:",
               f"        {self.xp}.copyto(view, args[k])",
               "        own[k] = view",
               "    result = step(*own)",
               "    for k, _, view in FLAT_ARGS:",
               f"        {self.xp}.copyto(args[k], view)",
               "    return result"]
        return out + ["", ""]
