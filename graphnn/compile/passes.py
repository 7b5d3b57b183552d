"""Rewrite passes: each a function from a `Function` to a new `Function`.

A `Function` is a graph together with the nodes a program returns (and the
parameter updates it performs). Passes are named, run once each in a fixed
order (no fixed-point iteration), linear in the number of nodes, and logged.
A pass that finds nothing to do returns its input unchanged (no copy).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..graph import Graph, Node, attr_key
from ..ops.interpret import evaluate

log = logging.getLogger("graphnn.compile")

FOLD_MAX_ELEMENTS = 1 << 16  # larger constant results stay computed at run time


@dataclass
class Function:
    graph: Graph
    outputs: list[Node]
    updates: list[tuple[Node, Node]] = field(default_factory=list)  # (param, new value)
    cut: list[Node] = field(default_factory=list)  # nodes fed as inputs (not computed)

    def roots(self) -> list[Node]:
        return list(self.outputs) + [v for _, v in self.updates] + [p for p, _ in self.updates]

    def order(self) -> list[Node]:
        # cached: passes, the printer and the hash each ask, and a 60k-node walk costs ~0.2 s;
        # keyed by roots and cut (a node's inputs never change, so neither does the walk)
        roots = self.roots()
        key = (tuple(map(id, roots)), tuple(map(id, self.cut)))
        cached = self.__dict__.get("_order")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_order"] = (key, self.graph.ancestors(roots, stop=self.cut))
        return list(cached[1])


def rebuild(fn: Function, rewrite: Callable[[Node, list[Node], Graph], Node | None]) -> Function:
    """Copy the live part of `fn` into a new graph, letting `rewrite` replace nodes.

    Interning in the new graph merges identical nodes (CSE); leaves keep names."""
    src = fn.graph
    dst = Graph(src.name, dtype=src.dtype)
    dst.values = src.values  # same parameter arrays (programs read them at call time)
    m: dict[int, Node] = {}
    cut = {id(n) for n in fn.cut}
    saved = dst._scope, dst._role
    for node in fn.order():
        # each node keeps its provenance (set directly: a context manager per node
        # was a tenth of a rebuild)
        dst._scope, dst._role = ([node.scope] if node.scope else []), [node.role]
        if node.is_leaf or id(node) in cut:
            if id(node) in cut and not node.is_leaf:
                new = dst._leaf("input", node.name, node.shape, node.dtype)
            elif node.op == "const":  # folded constants may have taken its auto name
                name = node.name if node.name not in dst else dst._auto_name("const")
                new = dst._leaf("const", name, node.shape, node.dtype, value=node.value)
            else:
                new = dst._leaf(node.op, node.name, node.shape, node.dtype)
        else:
            ins = [m[id(i)] for i in node.inputs]
            new = rewrite(node, ins, dst)
            if new is None:
                new = _copy(dst, node, ins)
        m[id(node)] = new
    dst._scope, dst._role = saved
    return Function(dst, [m[id(o)] for o in fn.outputs],
                    [(m[id(p)], m[id(v)]) for p, v in fn.updates],
                    [m[id(c)] for c in fn.cut])


def _copy(dst: Graph, node: Node, ins: list[Node]) -> Node:
    """`node` rebuilt in `dst` on `ins` (interned, keeping its name where free).

    When the inputs have the shapes and dtypes of the originals, the node's shape
    and dtype are known: skip re-inference (rebuilding a 60k-node graph spent
    most of its time re-checking shapes that cannot have changed)."""
    if any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(ins, node.inputs)):
        before = len(dst)
        new = dst.apply(node.op, ins, node.attrs)
        if len(dst) > before and node.name not in dst:
            dst.rename(new, node.name)
        return new
    key = (node.op, tuple(id(i) for i in ins), attr_key(node.attrs))
    hit = dst._intern.get(key)
    if hit is not None:
        return hit
    name = node.name if node.name not in dst else dst._auto_name(node.op)
    new = dst._add(name, node.op, node.attrs, node.shape, node.dtype, tuple(ins))
    dst._intern[key] = new
    return new


# -- the passes ----------------------------------------------------------------------------

def dead_code_elimination(fn: Function) -> Function:
    """Keep only what the outputs and updates need."""
    live_ops = sum(1 for n in fn.order() if not n.is_leaf)
    if live_ops == sum(1 for n in fn.graph.nodes if not n.is_leaf):
        return fn  # at most unused leaves (e.g. constants just folded away): printing skips them
    return rebuild(fn, lambda node, ins, g: None)


def constant_folding(fn: Function) -> Function:
    """Evaluate ops whose inputs are all constants (results up to FOLD_MAX_ELEMENTS)."""
    order = fn.order()
    foldable = {id(n) for n in order if n.op == "const"}
    cut = {id(c) for c in fn.cut}
    hit = False
    for n in order:
        if n.inputs and all(id(i) in foldable for i in n.inputs) and n.size is not None \
                and n.size <= FOLD_MAX_ELEMENTS and id(n) not in cut:
            foldable.add(id(n))
            hit = True
    if not hit:
        return fn

    def rewrite(node, ins, g):
        if all(i.op == "const" for i in ins) and node.size is not None and node.size <= FOLD_MAX_ELEMENTS:
            value = evaluate(node, [i.value for i in ins])
            return g.const(None, np.asarray(value, dtype=node.dtype))
        return None
    return rebuild(fn, rewrite)


def _is_const(n: Node, v: float) -> bool:
    return n.op == "const" and n.value.size >= 1 and bool(np.all(n.value == v))


def algebraic_identities(fn: Function) -> Function:
    """x*1 -> x, x+0 -> x, x-0 -> x, x/1 -> x, x**1 -> x, --x -> x, x-x -> 0.

    A rewrite applies only when the result keeps the node's shape and dtype."""

    def rewrite(node, ins, g):
        op = node.op
        keep = None
        if op == "mul":
            keep = ins[0] if _is_const(ins[1], 1) else ins[1] if _is_const(ins[0], 1) else None
        elif op == "add":
            keep = ins[0] if _is_const(ins[1], 0) else ins[1] if _is_const(ins[0], 0) else None
        elif op in ("sub", "div", "pow"):
            if _is_const(ins[1], 0 if op == "sub" else 1):
                keep = ins[0]
            elif op == "sub" and ins[0] is ins[1]:
                from ..ops import api
                z = api.zeros_like(ins[0])
                keep = z if z.shape == node.shape else None
        elif op == "neg" and ins[0].op == "neg":
            keep = ins[0].inputs[0]
        if keep is not None and keep.shape == node.shape and keep.dtype == node.dtype:
            return keep
        return None

    def applies(node):  # the same tests on the unrewritten inputs, building nothing
        ins, op = node.inputs, node.op
        if op in ("mul", "add", "sub", "div", "pow"):
            unit = 0 if op in ("add", "sub") else 1
            cands = [ins[0]] if _is_const(ins[1], unit) else []
            if op in ("mul", "add") and _is_const(ins[0], unit):
                cands.append(ins[1])
            if any(c.shape == node.shape and c.dtype == node.dtype for c in cands):
                return True
            return op == "sub" and ins[0] is ins[1]
        return op == "neg" and ins[0].op == "neg"

    if not any(applies(n) for n in fn.order() if n.inputs):
        return fn  # nothing to rewrite: no copy (rebuilding 60k nodes costs seconds)
    return rebuild(fn, rewrite)


def common_subexpressions(fn: Function) -> Function:
    """Merge identical nodes. Graphs built through `Graph.apply` are already interned;
    this pass matters for graphs loaded from files or assembled by hand."""
    seen = set()
    for n in fn.order():
        if not n.inputs:  # leaves are distinct nodes by construction
            continue
        key = (n.op, tuple(map(id, n.inputs)), attr_key(n.attrs))  # as interning compares
        if key in seen:
            return rebuild(fn, lambda node, ins, g: None)
        seen.add(key)
    return fn


PIPELINE: list[Callable[[Function], Function]] = [
    dead_code_elimination,
    constant_folding,
    algebraic_identities,
    common_subexpressions,
    dead_code_elimination,
]


def optimize(fn: Function, passes=None) -> tuple[Function, list[dict]]:
    report = []
    for p in passes or PIPELINE:
        before = len(fn.order())
        t0 = time.perf_counter()
        fn = p(fn)
        after = len(fn.order())
        entry = {"pass": p.__name__, "nodes_before": before, "nodes_after": after,
                 "seconds": time.perf_counter() - t0}
        log.info("%-24s %6d -> %6d nodes  %.4fs", p.__name__, before, after, entry["seconds"])
        report.append(entry)
    return fn, report
