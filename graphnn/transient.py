"""Build nodes in a graph for a moment: everything added inside is removed on exit.

Looking at a graph must not change it (issue 17 #8): drawing gradients,
stepping through backprop and checking gradients build reverse- and
forward-mode nodes in the graph they look at (derivatives are nodes of the
same graph, by design). Inside ``with transient(g):`` they are built as usual;
on exit the graph is put back as it was: its node list, names, interning
table, auto-name counters, networkx view and parameter values of new params.
Node objects built inside stay valid Python objects (a drawing or a Steps list
may keep them to show their values) but are no longer part of the graph.
"""
from __future__ import annotations

import contextlib
import itertools
import sys
import weakref
from typing import Iterator

from .graph import Graph


@contextlib.contextmanager
def transient(g: Graph) -> Iterator[Graph]:
    """Nodes (and params) added to `g` inside the block are removed when it ends."""
    n = len(g._order)
    counters = {}
    for op, c in list(g._counters.items()):
        nxt = next(c)                      # itertools.count has no peek: read and re-create
        counters[op] = nxt
        g._counters[op] = itertools.count(nxt)
    value_names = set(g.values)
    try:
        yield g
    finally:
        added = g._order[n:]
        if added:
            del g._order[n:]
            gone = {id(a) for a in added}
            for a in added:
                if g._by_name.get(a.name) is a:
                    del g._by_name[a.name]
            g._intern = {k: v for k, v in g._intern.items() if id(v) not in gone}
            if g._nx_synced > n:
                g._nx.remove_nodes_from(added)
                g._nx_synced = n
            layers = sys.modules.get("graphnn.nn.layers")
            state = layers._IN_USE.get(g) if layers is not None else None
            if state is not None and state[0] > n:
                state[0] = n
        g._counters = {op: itertools.count(v) for op, v in counters.items()}
        for name in set(g.values) - value_names:
            if name not in g._by_name:
                del g.values[name]


# -- nodes built for training, not part of the user's model ----------------------------------

_DERIVED: "weakref.WeakKeyDictionary[Graph, set[int]]" = weakref.WeakKeyDictionary()


def mark_derived(g: Graph, nodes) -> None:
    """Record `nodes` as built by graphnn for training (a Trainer's penalty, objective,
    gradients, updates, optimizer state): `gn.save` leaves them out unless asked."""
    _DERIVED.setdefault(g, set()).update(id(n) for n in nodes)


def model_nodes(g: Graph) -> list:
    """The nodes the user built (gradients asked for with gn.grad included), without those a
    Trainer added for training, unless a node of the user's depends on them."""
    derived = _DERIVED.get(g)
    if not derived:
        return g.nodes
    return g.ancestors([n for n in g.nodes if id(n) not in derived])
