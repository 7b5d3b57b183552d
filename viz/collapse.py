"""Which drawn unit each node belongs to: itself, its collapsed scope, a folded run, or a chunk.

`depth=k` keeps k levels of scope clusters and collapses every node whose
scope is deeper into one unit per scope prefix of length k+1. A layer with no
sub-layers (a scope no other scope sits in, e.g. a LayerNorm) at level k is
one box too: `depth=1` draws one box per layer, the containers (Residual,
Sequential) as clusters around them. Consecutive
collapsed scopes that are structurally identical (same ops, attributes,
shapes and wiring) and feed one another fold into one unit marked "x N".
All of it is linear in the number of nodes (loops over topological order).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from graphnn.graph import Node, attr_key


@dataclass
class Unit:
    key: tuple
    label_scope: str                 # scope path of the collapsed scope (or first of a run)
    members: list[Node] = field(default_factory=list)
    cluster: tuple = ()              # scope clusters it sits in
    role: str = "forward"
    folded: int = 1                  # > 1: a run of identical blocks
    last_scope: str = ""
    chunk: bool = False


@dataclass
class Plan:
    unit_of: dict                    # id(node) -> Unit (absent: node drawn on its own)
    units: list[Unit]
    depth: int | None
    count: int                       # number of drawn boxes (single nodes + units)


def _parts(node: Node) -> list[str]:
    return node.scope.split("/") if node.scope else []


def max_depth(nodes) -> int:
    return max((len(_parts(n)) for n in nodes), default=0)


def _signature(members: list[Node]) -> tuple:
    local = {id(n): i for i, n in enumerate(members)}
    sig = []
    for n in members:
        ins = tuple(("l", local[id(i)]) if id(i) in local else ("x", i.shape) for i in n.inputs)
        sig.append((n.op, repr(attr_key(n.attrs)), n.shape, n.dtype.str, ins))
    return tuple(sig)


def _leaf_scopes(nodes: list[Node]) -> set[str]:
    """Scopes with no other scope inside them (layers without sub-layers)."""
    scopes = {n.scope for n in nodes if n.scope}
    inner = set()
    for s in scopes:
        parts = s.split("/")
        inner.update("/".join(parts[:k]) for k in range(1, len(parts)))
    return scopes - inner


def plan(nodes: list[Node], depth: int | None, fold: bool = True) -> Plan:
    unit_of: dict[int, Unit] = {}
    units: dict[tuple, Unit] = {}
    single = 0
    leaves = _leaf_scopes(nodes) if depth else set()
    for n in nodes:
        parts = _parts(n)
        if depth is None or len(parts) < depth or \
                (len(parts) == depth and n.scope not in leaves):
            single += 1
            continue
        cut = depth + 1 if len(parts) > depth else depth    # a leaf layer at level k: one box
        key = (n.role, "/".join(parts[:cut]))
        u = units.get(key)
        if u is None:
            u = units[key] = Unit(key, key[1], cluster=tuple(parts[:cut - 1]), role=n.role)
        u.members.append(n)
        unit_of[id(n)] = u
    ordered = list(units.values())  # dict order = order of first member = topological
    if fold and len(ordered) > 1:
        ordered = _fold(ordered, unit_of)
    return Plan(unit_of, ordered, depth, single + len(ordered))


def _fold(ordered: list[Unit], unit_of: dict) -> list[Unit]:
    sigs = {id(u): _signature(u.members) for u in ordered}
    out: list[Unit] = []
    run: list[Unit] = []

    def flush():
        if len(run) >= 2:
            first = run[0]
            f = Unit(("fold",) + first.key, first.label_scope, cluster=first.cluster, role=first.role,
                     folded=len(run), last_scope=run[-1].label_scope)
            for u in run:
                f.members.extend(u.members)
                for m in u.members:
                    unit_of[id(m)] = f
            out.append(f)
        else:
            out.extend(run)
        run.clear()

    for u in ordered:
        if run:
            prev = run[-1]
            prev_ids = {id(m) for m in prev.members}
            feeds = any(id(i) in prev_ids for m in u.members for i in m.inputs)
            if (u.role == prev.role and u.cluster == prev.cluster and sigs[id(u)] == sigs[id(prev)]
                    and feeds):
                run.append(u)
                continue
            flush()
        run.append(u)
    flush()
    return out


def chunk(nodes: list[Node], p: Plan, max_nodes: int) -> Plan:
    """Last resort for big graphs without enough scopes: group unscoped runs of nodes by order."""
    singles = [n for n in nodes if id(n) not in p.unit_of]
    budget = max(1, max_nodes - len(p.units))
    size = -(-len(singles) // budget)
    if size <= 1:
        return p
    units = list(p.units)
    for i in range(0, len(singles), size):
        members = singles[i:i + size]
        u = Unit(("chunk", i), f"nodes {members[0].name} .. {members[-1].name}", members=members,
                 chunk=True)
        for m in members:
            p.unit_of[id(m)] = u
        units.append(u)
    return Plan(p.unit_of, units, p.depth, len(units))


def auto(nodes: list[Node], max_nodes: int, fold: bool = True) -> tuple[Plan, str]:
    """The deepest collapse that fits in `max_nodes` boxes, and a note saying what was done."""
    deepest = max_depth(nodes)
    p = None
    for k in range(deepest - 1, -1, -1):
        p = plan(nodes, k, fold)
        if p.count <= max_nodes:
            return p, (f"{len(nodes)} nodes > max_nodes={max_nodes}: collapsed to scope depth {k} "
                       f"({p.count} boxes); pass depth= or max_nodes= to change")
    p = p or plan(nodes, None, fold)
    p = chunk(nodes, p, max_nodes)
    return p, (f"{len(nodes)} nodes > max_nodes={max_nodes}: collapsed by scope and into runs of "
               f"consecutive nodes ({p.count} boxes); pass max_nodes= to change")
