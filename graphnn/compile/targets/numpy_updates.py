"""The update region of a schedule, printed (a mixin of the NumPy target).

The schedule's update groups (compile/update_plan.py) say which parameters,
gradients and optimizer-state values are views of one flat buffer per role; this
mixin names those buffers and views (module-level lines), and prints each
group's update once, through its first member: a handful of whole-buffer NumPy
calls in the order that makes the most of them in place, or one loop compiled by
Numba (loops.py). The CuPy and CUDA targets override `_emit_component` with one
kernel per component.
"""
from __future__ import annotations

import itertools

import sympy as sp

from ...graph import Node
from .. import fusion, loops
from ..fast_common import _call_cost, _shape_code, _tag
from ..printer import comment_name, comment_text, unique_name
from ..schedule import FlatView
from ..update_plan import component_exprs


class UpdatePrinting:
    """Names flat buffers and views and prints the update code of each group."""

    def print_groups(self) -> None:
        """Flat buffers, views, and the group code (appended to self.tail)."""
        for grp in self.schedule.groups:
            ms = grp.members
            if not grp.flat:
                for m in ms:
                    self._emit_component(m, {}, None, grp.dtype)
                continue
            total, offs, label = grp.total, grp.offsets, f"{grp.index}"
            self.globals_.append(f"# group {grp.index}: {len(ms)} parameters updated by the same rule "
                                 f"({' · '.join(sorted({n.op for n in ms[0].nodes}))}), {total} elements")

            def flat_buffer(tag, views, optional=False):
                fname = self.claim(f"_flat{label}_{tag}")
                self.declare_flat(fname, total, grp.dtype,
                                  [(v, shape, a, b) for (v, shape), a, b in zip(views, offs[:-1], offs[1:])],
                                  optional)
                return fname

            slot_names, scratch = {}, {}
            for slot in grp.slots:
                k = slot.index
                if slot.kind == "p":
                    views = [(self.claim(f"_v_{self.namer(p)}"), p.shape) for p in slot.nodes]
                    slot_names[k] = flat_buffer(comment_text(self.namer(slot.nodes[0])).lower() + "s",
                                                views)
                    for p, (vname, _) in zip(slot.nodes, views):
                        self.flat_params.append((p, vname))
                    continue
                views = [(self.claim(f"_g_{self.namer(l)}"), l.shape) for l in slot.nodes]
                slot_names[k] = flat_buffer(f"leaf{k}", views, optional=True)
                for j, (l, (vname, _)) in enumerate(zip(slot.nodes, views)):
                    if slot.fixed[j]:  # computed straight into its view
                        self.names[FlatView(grp.index, k, j)] = vname
                    else:
                        self.copy_into_flat(vname, l)
                if k in grp.scratch:
                    scratch[k] = slot_names[k]
            self._fold_views(grp, slot_names)
            self._emit_component(ms[0], slot_names, total, grp.dtype, flat_label=label,
                                 scratch=scratch)

    def declare_flat(self, name: str, total: int, dtype: str, views, optional: bool) -> None:
        """A flat buffer of `total` elements and its views [(name, shape, start, end)];
        `optional` views are left out when nothing else names them."""
        self.globals_.append(f"{name} = {self.xp}.zeros({total}, dtype={self.xp}.{dtype})")
        for vname, shape, a, b in views:
            line = f"{vname} = {name}[{a}:{b}].reshape({_shape_code(shape)})"
            if optional:
                self.optional_views[line] = vname
            self.globals_.append(line)

    def copy_into_flat(self, view: str, value: Node) -> None:
        """`value` (computed elsewhere) copied into its flat-buffer view before the update."""
        self.tail.append((f"{self.xp}.copyto({view}, {{{id(value)}}})  # into flat buffer", value))

    def _fold_views(self, grp, slot_names) -> None:
        """The (k+1, n) views [W; b] and [gW; gb] of the group's bias folds."""
        for f in grp.folds:
            W, b = f.W, f.b
            k, n = W.shape
            a, e = f.span
            shape = _shape_code((k + 1, n))
            Wb = self.claim(f"_v_{self.namer(W)}_{self.namer(b)}")
            self.globals_.append(f"{Wb} = {slot_names[f.param_slot]}[{a}:{e}].reshape({shape})"
                                 f"  # [{comment_name(W)}; {comment_name(b)}]")
            gWb = self.claim(f"_g_{self.namer(f.gW)}_{self.namer(f.gb)}")
            self.globals_.append(f"{gWb} = {slot_names[f.slot]}[{a}:{e}].reshape({shape})"
                                 f"  # their gradients, one matmul")
            self.fold_views[id(f)] = (Wb, gWb)

    def _emit_component(self, m, slot_names, total, dtype, flat_label=None, scratch=None):
        """Code for one component (or a whole flat group through its first member).

        `scratch` maps leaf slots to flat gradient buffers that nothing reads after
        this component: once a slot's last reader has run, its buffer serves as a
        temporary, so updates run in place (`g *= lr; p -= g`) instead of writing a
        third array, which costs NumPy about three times as much on large buffers.
        The roots (values the component materializes) are emitted in the order that
        makes the most calls in place (every order is tried when there are few)."""
        nodes = m.nodes
        roots, root_pos, expr_of, reads, writes = component_exprs(m, self.fn.updates, self.source_of)
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
        shape = (total,) if total is not None else m.shape
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
        leaves = m.leaves
        slot_of = {id(l): k for k, l in enumerate(leaves)}
        for r in roots:
            if not loops.printable(expr_of[id(r)]):
                return False
            for p in writes.get(id(r), []):
                if id(p) in self.foreign_read or slot_of.get(id(p)) not in slot_names:
                    return False  # written where the loop cannot: a later reader waits for it
        if any(kind[0] not in ("s", "p", "f") or (kind[0] != "s" and k not in slot_names)
               for k, kind in enumerate(m.kinds)):
            return False
        taken = {"i", "math", "min", "abs", "range", "numba"}  # the loop's own names

        def local(base: str) -> str:
            return unique_name(base, taken)

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
            if m.kinds[k][0] == "s" and leaves[k].op == "const":  # a literal, as NumPy prints it
                literals[fusion.leaf_symbol(k)] = loops.literal(float(leaves[k].value))
                continue
            if m.kinds[k][0] == "s":
                name = local(self.namer(leaves[k]))
                scalars.append(name)
                invariant.add(sp.Symbol(name, real=True))
                call_scalars.append(f"float({self.value_of_late(leaves[k])})")
            else:
                name = local(array(slot_names[k]) + "_i")
                loads.append((name, array(slot_names[k])))
            subs[fusion.leaf_symbol(k)] = sp.Symbol(name, real=True)
        nodes = m.nodes
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
        leaves, nodes = m.leaves, m.nodes
        pidx = {id(p): k for k, p in enumerate(m.params)}
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
                        "full" if leaves[k].shape == m.shape else "other")
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
        k = m.leaves.index(p) if p in m.leaves else None
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

    # -- module parts ------------------------------------------------------------------------------

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
