"""`gn.check_gradients`: every differentiation mode against central finite differences.

For every parameter, float input and intermediate node on the way to a scalar
loss, the gradient of the loss with respect to that node is computed by reverse
mode, forward mode and symbolic mode, and compared with central finite
differences, all in float64.

How each node is checked
------------------------
* The loss graph is first copied (the caller's graph is left untouched) into a
  float64 graph whose batch dimension is bound to the batch size of `feeds`, so
  every node has a static shape.
* Finite differences perturb the node itself: a parameter or input through its
  feed, an intermediate node by compiling the loss with the node as a cut point
  (`gn.compile(loss, inputs=[node])`) and feeding it. At most `max_elements`
  elements per node are sampled (seeded), with step `eps * max(1, |value|)`.
* reverse: `gn.grad(loss, nodes)` (one backward pass for all nodes), compared on
  the sampled elements.
* forward: one JVP per node along a random direction v (`gn.jvp(loss, {node: v})`),
  compared with the central difference of the loss along v: one number per node
  (any wrong component of the gradient changes it, with probability 1).
* symbolic: `gn.grad(loss, [node], mode="symbolic")` where SymPy's size limits
  (`symbolic_max_size`) allow; otherwise the mode is skipped for that node and
  the reason is in `row.notes["symbolic"]`.

A mode passes on a node when every compared value satisfies
`|g - fd| <= atol + rtol * |fd|`. Finite differences are wrong across kinks
(relu, leaky_relu, prelu, abs, sign at 0; maximum/minimum with ties): a node
whose check fails while the loss's path from it crosses a kink (an input of
such an op within the finite-difference step of 0) is reported as `at_kink`
(with the kink in `row.notes["kink"]`), not as a failure: there the derivative
the modes compute is one of the one-sided ones and no central difference can
confirm it. Check at another point to test those nodes.

Report fields (stable; the drawing code colours nodes by `row.passed`, keyed
by `row.name`):

* `report.rows`: one `GradientRow` per node, in topological order, with
  `name`, `op`, `kind` ('param' | 'input' | 'intermediate'), `shape` (batch
  bound), `scope`, `checked` (number of elements compared by finite
  differences), `abs_err[mode]` and `rel_err[mode]` (max abs error and max
  relative error `|g - fd| / max(|fd|, atol)` against finite differences, None
  when the mode was skipped), `mode_passed[mode]` (True / False / None when
  skipped), `notes[mode]` (why a mode was skipped or failed), `grad_max`
  (max |finite-difference gradient| seen) and `passed` (every mode that ran
  passed).
* `report.ok`, `report.failed()`, `report[name]`, `str(report)` (a table),
  `report.to_dict()` (JSON-ready).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..errors import GraphError, ShapeError
from ..graph import Graph, Node

MODES = ("reverse", "forward", "symbolic")
SYMBOLIC_MAX_SIZE = 2000


@dataclass
class GradientRow:
    name: str
    op: str
    kind: str
    shape: tuple
    scope: str = ""
    checked: int = 0
    abs_err: dict = field(default_factory=dict)
    rel_err: dict = field(default_factory=dict)
    mode_passed: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    grad_max: float = 0.0
    at_kink: bool = False

    @property
    def passed(self) -> bool:
        """Every mode that ran agreed with finite differences (a node at a kink is not failed:
        finite differences are not defined there)."""
        return self.at_kink or all(v is not False for v in self.mode_passed.values())

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "kind": self.kind, "shape": list(self.shape),
                "scope": self.scope, "checked": self.checked, "abs_err": dict(self.abs_err),
                "rel_err": dict(self.rel_err), "mode_passed": dict(self.mode_passed),
                "at_kink": self.at_kink,
                "notes": dict(self.notes), "grad_max": self.grad_max, "passed": self.passed}


@dataclass
class GradientReport:
    rows: list
    modes: tuple
    settings: dict

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.rows)

    def failed(self) -> list:
        return [r for r in self.rows if not r.passed]

    def __getitem__(self, name: str) -> GradientRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row for node {name!r}")

    def __contains__(self, name) -> bool:
        return any(r.name == name for r in self.rows)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "modes": list(self.modes), "settings": dict(self.settings),
                "rows": [r.to_dict() for r in self.rows]}

    def __str__(self) -> str:
        head = ["node", "op", "kind", "shape", "n"] + [f"{m} abs/rel" for m in self.modes] + ["ok"]
        body = []
        for r in self.rows:
            cells = [r.name, r.op, r.kind, "x".join(map(str, r.shape)) or "()", str(r.checked)]
            for m in self.modes:
                if r.mode_passed.get(m) is None:
                    cells.append("skipped")
                else:
                    a, e = r.abs_err[m], r.rel_err[m]
                    cells.append(f"{a:.1e}/{e:.1e}" + ("" if r.mode_passed[m] else " !"))
            cells.append("kink" if r.at_kink else "yes" if r.passed else "NO")
            body.append(cells)
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
                  for i, h in enumerate(head)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
        n_bad = len(self.failed())
        kinks = [r for r in self.rows if r.at_kink]
        lines.append(f"{len(self.rows)} nodes checked, {n_bad} failed"
                     + (f", {len(kinks)} at a kink" if kinks else "")
                     + f" (rtol={self.settings['rtol']}, atol={self.settings['atol']}, "
                     f"eps={self.settings['eps']})")
        if kinks:
            lines.append("at a kink: the loss's path from these nodes crosses a point where it "
                         "is not differentiable (" + kinks[0].notes.get("kink", "") + "); finite "
                         "differences cannot check them there: not failures, check at another point")
        return "\n".join(lines)
        return "\n".join(lines)

    __repr__ = __str__


# -- a float64, batch-bound copy of the loss graph ------------------------------------------------

def bound_float64_copy(outputs: Sequence[Node], batch: int | None, suffix: str = "check"):
    """Copy the ancestors of `outputs` into a new float64 graph with the batch bound.

    Returns (graph, {id(original node): copy}). Names, scopes and roles are kept;
    parameter values are float64 copies. Used by check_gradients and ntk."""
    src = outputs[0].graph
    dst = Graph(f"{src.name}_{suffix}", dtype="float64")
    bind = (lambda s: tuple(batch if d is None else d for d in s)) if batch is not None \
        else (lambda s: s)
    m: dict[int, Node] = {}

    def f64(dt):
        return np.dtype("float64") if dt.kind == "f" else dt

    for node in src.ancestors(outputs):
        with dst.provenance(scope=node.scope, role=node.role):
            if node.op == "param":
                v = np.asarray(src.values[node.name])
                new = dst.param(node.name, value=v.astype(f64(v.dtype)), dtype=f64(v.dtype))
            elif node.op == "input":
                new = dst.input(node.name, bind(node.shape), dtype=f64(node.dtype))
            elif node.op == "const":
                new = dst.const(node.name, node.value.astype(f64(node.value.dtype)))
            else:
                attrs = dict(node.attrs)
                if "dtype" in attrs and np.dtype(attrs["dtype"]).kind == "f":
                    attrs["dtype"] = "float64"
                if node.op == "reshape" and batch is not None:
                    attrs["shape"] = bind(attrs["shape"])
                before = len(dst)
                new = dst.apply(node.op, [m[id(i)] for i in node.inputs], attrs)
                if len(dst) > before and new.name != node.name and node.name not in dst:
                    dst.rename(new, node.name)
        m[id(node)] = new
    return dst, m


def _batch_from_feeds(order: Sequence[Node], feeds: Mapping) -> int | None:
    batch = None
    for n in order:
        if n.op != "input" or None not in n.shape or n.name not in feeds:
            continue
        v = np.asarray(feeds[n.name])
        if v.ndim != n.ndim:
            raise ShapeError(f"feed {n.name!r}: expected {n.ndim} dims for shape {n.shape}, "
                             f"got {v.shape}")
        b = v.shape[n.shape.index(None)]
        if batch is not None and b != batch:
            raise ShapeError(f"feed {n.name!r}: batch size {b} differs from {batch}")
        batch = b
    return batch


def _call(prog, feeds: dict):
    return prog(**{k: v for k, v in feeds.items() if k in prog.arg_names})


_KINK_OPS = ("relu", "leaky_relu", "prelu", "abs", "sign")
_TIE_OPS = ("maximum", "minimum")


def _mark_kinks(gc: Graph, L: Node, tcs, rows, feeds64: dict, value: dict, eps: float) -> None:
    """Mark failed rows whose path to the loss crosses a kink within the finite-difference
    step (see the module docstring)."""
    from ..compile import compile as gn_compile
    order = gc.ancestors([L])
    kinks = [n for n in order if n.op in _KINK_OPS + _TIE_OPS]
    failed = [k for k, r in enumerate(rows) if not r.passed]
    if not kinks or not failed:
        return
    args = [n.inputs[0] if n.op in _KINK_OPS else n.inputs[0] - n.inputs[1] for n in kinks]
    try:
        got = _call(gn_compile(args, optimize=False), feeds64)
    except Exception:   # no values, no claim: the failures stand
        return
    if len(args) == 1:
        got = [got]
    scale = max([1.0] + [float(np.max(np.abs(v))) for v in value.values() if np.size(v)])
    at = []
    for n, a in zip(kinks, got):
        a = np.asarray(a, dtype=np.float64)
        close = np.abs(a) <= 2 * eps * scale
        if np.any(close):
            at.append((n, int(np.count_nonzero(close))))
    for k in failed:
        reach = gc.descendants_of([tcs[k]], order)
        hit = [(n, c) for n, c in at if id(n) in reach]
        if hit:
            rows[k].at_kink = True
            n, c = hit[0]
            rows[k].notes["kink"] = (f"{n.op} {n.name!r} has {c} input element(s) at its kink"
                                     if n.op in _KINK_OPS else
                                     f"{n.op} {n.name!r} has {c} tie(s)")


def _kind(node: Node) -> str:
    return "param" if node.op == "param" else "input" if node.op == "input" else "intermediate"


def check_gradients(loss: Node, feeds: Mapping, wrt: Sequence[Node] | None = None,
                    modes: Sequence[str] = MODES, eps: float = 1e-6, max_elements: int = 64,
                    symbolic_max_size: int = SYMBOLIC_MAX_SIZE, rtol: float = 1e-6,
                    atol: float = 1e-8, seed: int = 0) -> GradientReport:
    """Compare reverse, forward and symbolic gradients of `loss` with central differences.

    `wrt` defaults to every parameter, float input and intermediate float node
    on the way to `loss`. See the module docstring for the method and the
    fields of the returned `GradientReport`."""
    from ..compile import compile as gn_compile
    from . import forward, reverse, symbolic

    if not isinstance(loss, Node):
        raise GraphError(f"check_gradients: loss must be a Node, got {type(loss).__name__}")
    if loss.shape != ():
        raise ShapeError(f"check_gradients: loss {loss.name!r} must be a scalar, has shape "
                         f"{loss.shape}")
    modes = tuple(modes)
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise GraphError(f"check_gradients: unknown mode(s) {bad}; choose from {MODES}")
    if not isinstance(feeds, Mapping):
        raise GraphError("check_gradients: feeds must be a dict {input name: array}")
    if not (eps > 0) or max_elements < 1:
        raise GraphError(f"check_gradients: need eps > 0 and max_elements >= 1, got eps={eps}, "
                         f"max_elements={max_elements}")
    g = loss.graph
    order = g.ancestors([loss])
    names = {n.name for n in order}
    unknown = [k for k in feeds if k not in names]
    if unknown:
        raise GraphError(f"check_gradients: feed(s) {unknown} are not inputs of {loss.name!r}")
    missing = [n.name for n in order if n.op == "input" and n.name not in feeds]
    if missing:
        raise GraphError(f"check_gradients: missing feed(s) {missing}")
    if wrt is None:
        targets = [n for n in order if n.dtype.kind == "f" and n.op != "const"]
    else:
        targets = list(wrt)
        for t in targets:
            if not isinstance(t, Node) or t.graph is not g:
                raise GraphError(f"check_gradients: {t!r} is not a node of graph {g.name!r}")
            if t.dtype.kind != "f" or t.op == "const":
                raise GraphError(f"check_gradients: {t.name!r} ({t.op}, {t.dtype}) has no "
                                 "gradient to check")
    extra = [t for t in targets if t.name not in names]  # not on the way to loss: gradient 0
    batch = _batch_from_feeds(order, feeds)
    gc, m = bound_float64_copy([loss] + extra, batch)
    L = m[id(loss)]
    tcs = [m[id(t)] for t in targets]
    feeds64 = {}
    for n in gc.inputs:
        v = np.asarray(feeds[n.name]) if n.name in feeds else None
        if v is None:
            continue
        feeds64[n.name] = v.astype(np.float64) if n.dtype.kind == "f" else v
        if v.shape != n.shape:
            raise ShapeError(f"feed {n.name!r}: expected shape {n.shape}, got {v.shape}")
    rng = np.random.default_rng(seed)

    # values of every target at the point
    inter = [t for t in tcs if not t.is_leaf]
    base = gn_compile([L] + inter, optimize=False)
    outs = _call(base, {**feeds64})
    value = {id(t): np.array(o, dtype=np.float64) for t, o in zip(inter, outs[1:])}
    for t in tcs:
        if t.op == "param":
            value[id(t)] = np.array(gc.values[t.name], dtype=np.float64)
        elif t.op == "input":
            value[id(t)] = np.array(feeds64[t.name], dtype=np.float64)

    loss_prog = gn_compile(L)
    rows: list[GradientRow] = []
    fd: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # id -> (flat indices, fd values)
    directions: dict[int, tuple[np.ndarray, float]] = {}  # id -> (v, fd along v)
    for t, orig in zip(tcs, targets):
        prog = loss_prog if t.is_leaf else gn_compile(L, inputs=[t])
        v0 = value[id(t)]

        def lossat(v, t=t, prog=prog):
            return float(_call(prog, {**feeds64, t.name: v}))
        n = v0.size
        idx = np.sort(rng.choice(n, size=min(n, max_elements), replace=False)) if n else \
            np.zeros(0, dtype=int)
        vals = np.empty(len(idx))
        for k, i in enumerate(idx):
            h = eps * max(1.0, abs(v0.flat[i]))
            vp, vm = v0.copy(), v0.copy()
            vp.flat[i] += h
            vm.flat[i] -= h
            vals[k] = (lossat(vp) - lossat(vm)) / (2 * h)
        fd[id(t)] = (idx, vals)
        if "forward" in modes:
            d = rng.standard_normal(v0.shape)
            h = eps * max(1.0, float(np.max(np.abs(v0))) if n else 1.0)
            directions[id(t)] = (d, (lossat(v0 + h * d) - lossat(v0 - h * d)) / (2 * h))
        row = GradientRow(orig.name, orig.op, _kind(orig), t.shape, orig.scope, len(idx))
        row.grad_max = float(np.max(np.abs(vals))) if len(vals) else 0.0
        rows.append(row)

    def compare(row, mode, got, ref):
        got = np.asarray(got, dtype=np.float64).ravel()
        ref = np.asarray(ref, dtype=np.float64).ravel()
        if got.size == 0:
            row.abs_err[mode], row.rel_err[mode], row.mode_passed[mode] = 0.0, 0.0, True
            return
        diff = np.abs(got - ref)
        diff = np.where(np.isnan(diff), np.inf, diff)
        row.abs_err[mode] = float(np.max(diff))
        row.rel_err[mode] = float(np.max(diff / np.maximum(np.abs(ref), atol)))
        row.mode_passed[mode] = bool(np.all(diff <= atol + rtol * np.abs(ref)))

    def fail_all(mode, rows_, exc):
        for r in rows_:
            r.abs_err[mode] = r.rel_err[mode] = float("inf")
            r.mode_passed[mode] = False
            r.notes[mode] = f"{type(exc).__name__}: {exc}"

    if "reverse" in modes:
        try:
            grads = reverse.grad(L, tcs)
            got = _call(gn_compile(grads), feeds64) if grads else []
        except Exception as e:  # a broken rule is a failed check, not a crash
            fail_all("reverse", rows, e)
        else:
            for t, r, gv in zip(tcs, rows, got):
                idx, vals = fd[id(t)]
                compare(r, "reverse", np.asarray(gv).ravel()[idx], vals)

    if "forward" in modes:
        try:
            jvps = []
            for t in tcs:
                d, _ = directions[id(t)]
                with gc.provenance(scope=t.scope, role="tangent"):
                    dn = gc.const(None, d)
                jvps.append(forward.jvp(L, {t: dn}))
            got = _call(gn_compile(jvps), feeds64) if jvps else []
        except Exception as e:
            fail_all("forward", rows, e)
        else:
            for t, r, gv in zip(tcs, rows, got):
                compare(r, "forward", gv, directions[id(t)][1])

    if "symbolic" in modes:
        sym_nodes: list[tuple[int, Node]] = []
        leaves = [(k, t) for k, t in enumerate(tcs) if t.is_leaf]
        groups = ([[k for k, _ in leaves]] if leaves else []) + \
            [[k] for k, t in enumerate(tcs) if not t.is_leaf]
        for ks in groups:
            try:
                gs = symbolic.grad(L, [tcs[k] for k in ks], max_size=symbolic_max_size)
            except GraphError as e:
                for k in ks:
                    rows[k].mode_passed["symbolic"] = None
                    rows[k].abs_err["symbolic"] = rows[k].rel_err["symbolic"] = None
                    rows[k].notes["symbolic"] = f"skipped: {e}"
                continue
            except Exception as e:
                fail_all("symbolic", [rows[k] for k in ks], e)
                continue
            sym_nodes += list(zip(ks, gs))
        if sym_nodes:
            try:
                got = _call(gn_compile([n for _, n in sym_nodes]), feeds64)
            except Exception as e:
                fail_all("symbolic", [rows[k] for k, _ in sym_nodes], e)
            else:
                for (k, _), gv in zip(sym_nodes, got):
                    idx, vals = fd[id(tcs[k])]
                    compare(rows[k], "symbolic", np.asarray(gv).ravel()[idx], vals)

    _mark_kinks(gc, L, tcs, rows, feeds64, value, eps)
    settings = {"eps": eps, "max_elements": max_elements, "rtol": rtol, "atol": atol,
                "symbolic_max_size": symbolic_max_size, "seed": seed, "batch": batch}
    return GradientReport(rows, modes, settings)
