"""The IR: a Graph of Nodes, wrapping a networkx MultiDiGraph.

Design notes
------------
* Nodes are created in dependency order (an op's inputs exist before it), so the
  creation order *is* a topological order. Every walk below is a loop over that
  order or an explicit stack: nothing recurses over the graph.
* Nodes are interned (hash-consed): building the same op on the same inputs with
  the same attributes returns the node that already exists, so common
  subexpressions are shared from the start.
* `g.nx` is a `networkx.MultiDiGraph` (a subclass of `DiGraph`) keyed by Node
  objects; edge keys are input positions, so `a + a` has two edges.
* Every node records provenance: a scope path (set by layers or
  `with g.scope(...)`) and a role tag (`forward`, `backward`, `tangent`,
  `update`).
"""
from __future__ import annotations

import contextlib
import itertools
from typing import Any, Iterable, Iterator, Sequence

import networkx as nx
import numpy as np

from . import dtypes, limits
from .errors import DtypeError, GraphError, ShapeError

Shape = tuple  # tuple[int | None, ...]; None is the batch dimension bound at call time

LEAF_OPS = ("input", "param", "const")
ROLES = ("forward", "backward", "tangent", "update")


def fmt_shape(shape: Shape, sep: str = ",") -> str:
    """`(None, 3)` -> `B,3` (the form used in listings); with `sep="x"`, `Bx3` (a name tag)."""
    return sep.join("B" if d is None else str(d) for d in shape)


def fmt_type(node: "Node") -> str:
    return f"{dtypes.short(node.dtype)}[{fmt_shape(node.shape)}]"


def _check_shape(shape, what: str, allow_none: bool) -> Shape:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        shape = tuple(shape)
    except TypeError:
        raise ShapeError(f"{what}: shape must be a tuple of ints, got {shape!r}") from None
    out = []
    for d in shape:
        if d is None:
            if not allow_none:
                raise ShapeError(f"{what}: shape {shape} may not contain None (batch) here")
            out.append(None)
        elif isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0:
            out.append(int(d))
        else:
            raise ShapeError(f"{what}: bad dimension {d!r} in shape {shape}")
    if out.count(None) > 1:
        raise ShapeError(f"{what}: at most one None (batch) dimension, got {shape}")
    if limits.too_big(out):
        raise ShapeError(f"{what}: {limits.limit_text(out)}")
    return tuple(out)


def _as_array(value, dtype: np.dtype, what: str) -> np.ndarray:
    """`value` as an array of `dtype`; DtypeError/ShapeError instead of NumPy's errors.

    Complex values are refused (NumPy would drop the imaginary part), and so are
    strings, bytes, dates and Python objects: they are not numbers to compute with."""
    if isinstance(value, np.ndarray):
        src = value
    else:
        try:
            src = np.asarray(value)
        except (ValueError, TypeError) as e:  # ragged nested lists
            raise ShapeError(f"{what}: value is not a rectangular array of numbers ({e})") from None
    if src.dtype.kind not in "biuf":
        raise DtypeError(f"{what}: value has dtype {src.dtype} ({_KINDS.get(src.dtype.kind, 'not numbers')}); "
                         f"graphnn computes in {sorted(dtypes.ALLOWED)}")
    if limits.too_big(src.shape):
        raise ShapeError(f"{what}: {limits.limit_text(src.shape)}")
    return np.array(src, dtype=dtype)


_KINDS = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects",
          "M": "dates", "m": "time spans", "V": "raw records"}


class Node:
    """A handle on one node of a Graph. Arithmetic on nodes builds new nodes."""

    __slots__ = ("graph", "name", "op", "attrs", "shape", "dtype", "inputs", "scope",
                 "role", "index", "_value", "__weakref__")
    __array_ufunc__ = None  # make `ndarray * node` defer to Node.__rmul__

    def __init__(self, graph, name, op, attrs, shape, dtype, inputs, scope, role, index,
                 value=None):
        self.graph: Graph = graph
        self.name: str = name
        self.op: str = op
        self.attrs: dict = attrs
        self.shape: Shape = shape
        self.dtype: np.dtype = dtype
        self.inputs: tuple[Node, ...] = inputs
        self.scope: str = scope
        self.role: str = role
        self.index: int = index
        self._value = value  # constants only (params live in graph.values)

    # -- the stored value -------------------------------------------------------
    @property
    def value(self):
        """A constant's array; a parameter's current array (its `graph.values` entry);
        None for inputs and op nodes (their values exist only when a program runs)."""
        if self.op == "param":
            return self.graph.values.get(self.name)
        return self._value

    @value.setter
    def value(self, new) -> None:
        """Set a parameter's array (written to `graph.values`, shape and dtype checked).
        Constants are fixed and other nodes have no stored value: both raise GraphError."""
        if self.op != "param":
            what = "a constant is fixed (build a new one with g.const)" if self.op == "const" \
                else f"a {self.op} node has no stored value (compile it to compute one)"
            raise GraphError(f"cannot set {self.name!r}.value: {what}")
        arr = _as_array(new, self.dtype, f"param {self.name!r}")
        if arr.shape != self.shape:
            raise ShapeError(f"param {self.name!r}: new value has shape {arr.shape}, "
                             f"the parameter has shape {self.shape}")
        self.graph.values[self.name] = arr

    # -- introspection ---------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_leaf(self) -> bool:
        return self.op in LEAF_OPS

    @property
    def size(self) -> int | None:
        """Number of elements, or None when the batch dimension is unbound."""
        if None in self.shape:
            return None
        return limits.elements(self.shape)

    def named(self, name: str) -> "Node":
        """Give this node a readable name (returns the node, for chaining)."""
        self.graph.rename(self, name)
        return self

    def __repr__(self) -> str:
        return self.graph.format_node(self)

    def __iter__(self):
        raise TypeError(f"node {self.name!r} is symbolic and cannot be iterated; "
                        "index it explicitly")

    def __bool__(self):
        raise TypeError(f"node {self.name!r} is symbolic and has no truth value")

    __hash__ = object.__hash__

    # -- operators (the ops themselves live in graphnn.ops) ----------------------
    def __add__(self, o): return _api().add(self, o)
    def __radd__(self, o): return _api().add(o, self)
    def __sub__(self, o): return _api().sub(self, o)
    def __rsub__(self, o): return _api().sub(o, self)
    def __mul__(self, o): return _api().mul(self, o)
    def __rmul__(self, o): return _api().mul(o, self)
    def __truediv__(self, o): return _api().div(self, o)
    def __rtruediv__(self, o): return _api().div(o, self)
    def __pow__(self, o): return _api().pow(self, o)
    def __rpow__(self, o): return _api().pow(o, self)
    def __matmul__(self, o): return _api().matmul(self, o)
    def __rmatmul__(self, o): return _api().matmul(o, self)
    def __neg__(self): return _api().neg(self)
    def __pos__(self): return self
    def __abs__(self): return _api().abs(self)
    def __gt__(self, o): return _api().gt(self, o)
    def __lt__(self, o): return _api().lt(self, o)
    def __ge__(self, o): return _api().ge(self, o)
    def __le__(self, o): return _api().le(self, o)
    def __getitem__(self, idx): return _api().index(self, idx)

    @property
    def T(self) -> "Node":
        return _api().transpose(self)

    def transpose(self, *axes) -> "Node":
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _api().transpose(self, axes or None)

    def sum(self, axis=None, keepdims: bool = False) -> "Node":
        return _api().sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False) -> "Node":
        return _api().mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims: bool = False) -> "Node":
        return _api().max(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape) -> "Node":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _api().reshape(self, shape)

    def astype(self, dtype) -> "Node":
        return _api().cast(self, dtype)


def _api():
    global _api_module
    if _api_module is None:  # graph.py is imported by the ops: bound on first use
        from .ops import api
        _api_module = api
    return _api_module


_api_module = None


def _get_op():
    """registry.get_op (graph.py is imported by the registry's modules: bound on first use)."""
    global _get_op_fn
    if _get_op_fn is None:
        from .ops.registry import get_op
        _get_op_fn = get_op
    return _get_op_fn


_get_op_fn = None


def attr_key(value):
    """A hashable, order-stable form of an attribute value, or of a node's whole
    attribute dict: equal keys, equal attributes (interning and CSE compare by it)."""
    if isinstance(value, dict):
        if not value:
            return ()
        return tuple(sorted((k, attr_key(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(attr_key(v) for v in value)
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, float) and value != value:  # NaN is a valid attribute
        return ("nan",)
    return value


def attrs_items(attrs: dict) -> tuple:
    """A node's attributes as sorted (name, value) pairs: the key of a cache that
    rebuilds something from the attributes (`dict(key)` gives them back)."""
    return tuple(sorted(attrs.items()))


class Graph:
    """An explicit DAG of nodes. `g.nx` is the networkx graph."""

    def __init__(self, name: str = "graph", dtype="float64", seed: int = 0):
        self.name = str(name)
        self.dtype = dtypes.as_dtype(dtype)
        self._nx = nx.MultiDiGraph(name=self.name)
        self._nx_synced = 0  # nodes of _order already in _nx (filled in on access: see nx)
        self.values: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)
        self._order: list[Node] = []
        self._by_name: dict[str, Node] = {}
        self._intern: dict[tuple, Node] = {}
        self._scope: list[str] = []
        self._role: list[str] = ["forward"]
        self._counters: dict[str, Iterator[int]] = {}
        self._derived_ops: set[str] = set()

    # -- provenance ----------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self, name: str):
        """Nodes built inside get the scope path `outer/name` (for drawing and listings)."""
        self._scope.append(str(name))
        try:
            yield self
        finally:
            self._scope.pop()

    @contextlib.contextmanager
    def provenance(self, scope: str | None = None, role: str | None = None):
        """Set (not nest) the scope path and role of the nodes built inside."""
        if role is not None and role not in ROLES:
            raise GraphError(f"unknown role {role!r}; roles are {ROLES}")
        saved = self._scope
        if scope is not None:
            self._scope = [scope] if scope else []
        if role is not None:
            self._role.append(role)
        try:
            yield self
        finally:
            self._scope = saved
            if role is not None:
                self._role.pop()

    @property
    def current_scope(self) -> str:
        return "/".join(self._scope)

    @property
    def current_role(self) -> str:
        return self._role[-1]

    # -- leaves ----------------------------------------------------------------------
    def input(self, name: str, shape: Shape, dtype=None) -> Node:
        """A value fed at call time. `None` in `shape` is the batch dimension."""
        shape = _check_shape(shape, f"input {name!r}", allow_none=True)
        return self._leaf("input", name, shape, dtypes.as_dtype(dtype or self.dtype))

    def param(self, name: str, shape: Shape | None = None, init: str = "he_normal",
              value=None, seed: int | None = None, dtype=None) -> Node:
        """A trainable array, stored by name in `g.values`."""
        dt = dtypes.as_dtype(dtype or (value.dtype if isinstance(value, np.ndarray)
                                       and dtypes.is_float(value.dtype) else self.dtype))
        if value is not None:
            arr = _as_array(value, dt, f"param {name!r}")
            if shape is not None and tuple(shape) != arr.shape:
                raise ShapeError(f"param {name!r}: value has shape {arr.shape}, "
                                 f"declared shape {tuple(shape)}")
            shape = arr.shape
        else:
            if shape is None:
                raise ShapeError(f"param {name!r}: give a shape or a value")
            shape = _check_shape(shape, f"param {name!r}", allow_none=False)
            from .nn.init import initialize
            rng = np.random.default_rng(seed) if seed is not None else self.rng
            try:
                arr = initialize(init, shape, rng).astype(dt)
            except ValueError as e:  # an unknown initializer name
                raise GraphError(f"param {name!r}: {e}") from None
        node = self._leaf("param", name, tuple(arr.shape), dt)
        self.values[node.name] = arr
        return node

    def const(self, name: str | None, value, dtype=None) -> Node:
        """A fixed array baked into the graph (and into compiled code)."""
        arr = _as_array(value, dtypes.as_dtype(dtype) if dtype is not None else
                        (self.dtype if not isinstance(value, np.ndarray) or
                         dtypes.is_float(value.dtype) else value.dtype),
                        f"const {name!r}")
        if dtype is None and isinstance(value, np.ndarray) and dtypes.is_float(value.dtype):
            arr = arr.astype(value.dtype)
        dtypes.as_dtype(arr.dtype)
        arr.setflags(write=False)
        if name is None:
            key = ("const", arr.dtype.str, arr.shape, arr.tobytes())
            hit = self._intern.get(key)
            if hit is not None:
                return hit
            node = self._leaf("const", self._auto_name("const"), arr.shape, arr.dtype, value=arr)
            self._intern[key] = node
            return node
        return self._leaf("const", name, arr.shape, arr.dtype, value=arr)

    def _leaf(self, op, name, shape, dtype, value=None) -> Node:
        name = self._claim_name(name)
        return self._add(name, op, {}, shape, dtype, (), value)

    # -- op nodes --------------------------------------------------------------------
    def apply(self, op: str, inputs: Sequence[Node], attrs: dict[str, Any] | None = None,
              name: str | None = None) -> Node:
        """Build (or find, if interned) the node `op(*inputs, **attrs)`."""
        opdef = _get_op()(op)
        attrs = opdef.check_attrs(dict(attrs) if attrs else {})
        inputs = tuple(inputs)
        for i in inputs:
            if not isinstance(i, Node):
                raise GraphError(f"{op}: input {i!r} is not a Node")
            if i.graph is not self:
                raise GraphError(f"{op}: node {i.name!r} belongs to graph {i.graph.name!r}, "
                                 f"not {self.name!r}; nodes from two graphs cannot be mixed")
        key = (op, tuple(id(i) for i in inputs), attr_key(attrs))
        hit = self._intern.get(key)
        if hit is not None:
            if name is not None and hit.name != name:
                self.rename(hit, name)
            return hit
        shown = name if name is not None else self._peek_name(op)
        shape, dtype = opdef.infer(inputs, attrs, shown)
        node = self._add(self._claim_name(name) if name is not None else self._auto_name(op),
                         op, attrs, shape, dtype, inputs)
        self._intern[key] = node
        return node

    def _add(self, name, op, attrs, shape, dtype, inputs, value=None) -> Node:
        node = Node(self, name, op, attrs, shape, np.dtype(dtype), inputs,
                    "/".join(self._scope), self._role[-1], len(self._order), value)
        self._order.append(node)
        self._by_name[name] = node
        return node

    @property
    def nx(self) -> nx.MultiDiGraph:
        """The networkx view of the graph (edge keys are input positions).

        Nodes are only ever appended, so the networkx graph is brought up to date
        when it is asked for rather than on every `_add`: building (and rebuilding,
        in compiler passes) a large graph no longer pays for networkx's dicts."""
        order, g = self._order, self._nx
        if self._nx_synced < len(order):
            for node in order[self._nx_synced:]:
                g.add_node(node)
                for pos, i in enumerate(node.inputs):
                    g.add_edge(i, node, key=pos)
            self._nx_synced = len(order)
        return g

    # -- names -------------------------------------------------------------------------
    def _claim_name(self, name) -> str:
        if not isinstance(name, str) or not name:
            raise GraphError(f"node names must be non-empty strings, got {name!r}")
        if name in self._by_name:
            raise GraphError(f"duplicate name {name!r} in graph {self.name!r}")
        return name

    def _peek_name(self, op: str) -> str:
        return f"{op}_{len(self._order)}"

    def _auto_name(self, op: str) -> str:
        counter = self._counters.setdefault(op, itertools.count(1))
        while True:
            name = f"{op}_{next(counter)}"
            if name not in self._by_name:
                return name

    def rename(self, node: Node, name: str) -> None:
        if node.name == name:
            return
        self._claim_name(name)
        del self._by_name[node.name]
        if node.op == "param":
            self.values[name] = self.values.pop(node.name)
        node.name = name
        self._by_name[name] = node

    # -- introspection -----------------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        """All nodes in topological (creation) order."""
        return list(self._order)

    @property
    def inputs(self) -> list[Node]:
        return [n for n in self._order if n.op == "input"]

    @property
    def params(self) -> list[Node]:
        return [n for n in self._order if n.op == "param"]

    def __getitem__(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"graph {self.name!r} has no node named {name!r}") from None

    def __contains__(self, name) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._order)

    def ancestors(self, outputs: Iterable[Node], stop: Iterable[Node] = ()) -> list[Node]:
        """The nodes `outputs` depend on (themselves included), in topological order.

        Nodes in `stop` are included but not walked through (they act as inputs)."""
        stop_ids = {id(n) for n in stop}
        seen: dict[int, Node] = {}
        stack = list(outputs)
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen[id(n)] = n
            if id(n) not in stop_ids:
                stack.extend(n.inputs)
        return sorted(seen.values(), key=lambda n: n.index)

    def descendants_of(self, sources: Iterable[Node], within: Sequence[Node]) -> set[int]:
        """ids of the nodes in `within` (topologically ordered) that depend on `sources`."""
        reach = {id(n) for n in sources}
        for n in within:
            if id(n) not in reach and any(id(i) in reach for i in n.inputs):
                reach.add(id(n))
        return reach

    def consumers(self, node: Node) -> list[Node]:
        return [v for _, v in self.nx.out_edges(node)]

    # -- printing ------------------------------------------------------------------------
    def format_node(self, node: Node) -> str:
        lhs = f"{node.name}: {fmt_type(node)}"
        if node.op == "const":
            v = node.value
            rhs = f"const {v.item()!r}" if v.size == 1 and v.ndim == 0 else "const"
        elif node.is_leaf:
            rhs = node.op
        else:
            attrs = ""
            if node.attrs:
                attrs = "[" + ", ".join(f"{k}={_short_attr(v)}" for k, v in node.attrs.items()) + "]"
            rhs = f"{node.op}{attrs}({', '.join(i.name for i in node.inputs)})"
        notes = []
        if node.role != "forward":
            notes.append(node.role)
        if node.scope:
            notes.append(node.scope)
        return f"{lhs} = {rhs}" + (f"  # {' · '.join(notes)}" if notes else "")

    def format(self, nodes: Iterable[Node] | None = None) -> str:
        body = "\n".join("  " + self.format_node(n) for n in (nodes or self._order))
        return f"graph {self.name} {{\n{body}\n}}"

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return f"<graphnn.Graph {self.name!r}: {len(self._order)} nodes>"

    # -- files (see graphnn.io) -------------------------------------------------------------
    def save(self, path, derived: bool = False) -> None:
        """Save the model (see `graphnn.io.save`; `derived=True` keeps gradient/update nodes)."""
        from .io import save
        save(self, path, derived)


def _short_attr(v) -> str:
    if isinstance(v, float):
        return repr(v)
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."

