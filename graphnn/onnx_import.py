"""`gn.from_onnx`: an ONNX model as a graphnn Graph.

Every ONNX node becomes ordinary graphnn nodes (built through the op registry), so
an imported model prints, differentiates, compiles and draws like any other graph.
The op table is in `onnx_ops.py`; this module reads and checks the file, tracks
values, names and scopes.

Values. An ONNX tensor is either a graphnn Node or a folded NumPy array. Integer
initializers, `Constant`s and everything computed only from them (the
`Shape -> Gather -> Unsqueeze -> Concat -> Reshape` chains exporters write for
static shapes) are folded at import; a shape that holds the batch dimension holds
the `BATCH` marker there, and a Reshape to it keeps the batch axis as None.
Float initializers become params (trainable; consts with `trainable=False`).

Names and scopes. Inputs keep their ONNX names, initializers become params of
the same name, and the node computing an ONNX output is named after it. The
scope of an ONNX node is its module path: torch's `pkg.torch.onnx.name_scopes`
metadata (dynamo exporter) or the path in the node name (`/encoder/layer.0/attn/
MatMul` -> `encoder/layer.0/attn`), so drawings collapse by module.

Bad files raise `FormatError`: undecodable protobuf, names read before they are
defined (dangling or cyclic), absurd shapes or sizes, external data (never read:
a file must not make graphnn open other paths), and ops or attributes graphnn does
not implement (the message names op, node and opset; nothing is approximated).
"""
from __future__ import annotations

import ast
import math
import os
from typing import Any

import numpy as np

from .errors import FormatError, GraphError, GraphnnError
from .graph import Graph, Node

MAX_ELEMENTS = 1 << 28      # any one tensor (initializer, constant, input) at most this big
MAX_NODES = 200_000
MAX_NAME = 4096


class _Batch:
    """The batch dimension inside a folded shape (an object array entry)."""
    __slots__ = ()

    def __repr__(self):
        return "BATCH"

    def _same(self, o, neutral):
        if isinstance(o, (int, np.integer)) and o == neutral:
            return self
        raise FormatError(f"shape arithmetic on the batch dimension ({self!r} with {o!r}) is "
                          f"not supported: export with a fixed shape or a plain batch axis")

    def __mul__(self, o): return self._same(o, 1)
    __rmul__ = __mul__
    def __floordiv__(self, o): return self._same(o, 1)
    __truediv__ = __floordiv__
    def __add__(self, o): return self._same(o, 0)
    __radd__ = __add__
    def __sub__(self, o): return self._same(o, 0)
    def __eq__(self, o): return o is self
    def __ne__(self, o): return o is not self
    def __hash__(self): return 17
    def __int__(self):
        raise FormatError("the batch dimension has no fixed value here")
    __index__ = __int__


BATCH = _Batch()


class BatchTimes:
    """k * the batch size: a folded element count that involves the batch axis (what
    `ReduceProd(Shape(x))` gives); it becomes a node only when cast to a float."""
    __slots__ = ("k",)

    def __init__(self, k: int):
        self.k = int(k)

    def __repr__(self):
        return f"{self.k}*BATCH"

_ONNX_DTYPES = {1: "float32", 11: "float64", 7: "int64", 6: "int32", 9: "bool"}


def _onnx():
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - onnx is in the test extra
        raise ImportError("reading ONNX files needs the `onnx` package (pip install onnx)") from e
    return onnx


def load_model(model) -> Any:
    """A ModelProto from a path, bytes or a ModelProto; FormatError for anything else."""
    onnx = _onnx()
    if isinstance(model, onnx.ModelProto):
        _check_strings(model)
        return model
    try:
        if isinstance(model, (bytes, bytearray)):
            data = bytes(model)
        else:
            with open(os.fspath(model), "rb") as f:
                data = f.read()
    except (OSError, TypeError) as e:
        raise FormatError(f"cannot read ONNX model {model!r}: {e}") from None
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError and friends
        raise FormatError(f"not an ONNX model (protobuf does not decode): {e}") from None
    if not m.HasField("graph"):
        raise FormatError("not an ONNX model: it has no graph")
    _check_strings(m)
    return m


def _check_strings(message) -> None:
    """Every string field is text: protobuf hands undecodable ones back as bytes."""
    stack = [message]
    while stack:
        msg = stack.pop()
        for fd, value in msg.ListFields():
            values = value if _repeated(fd) else [value]
            if fd.type == fd.TYPE_MESSAGE:
                stack.extend(values)
            elif fd.type == fd.TYPE_STRING and any(not isinstance(v, str) for v in values):
                raise FormatError(f"ONNX field {fd.name!r} of a {msg.DESCRIPTOR.name} is not "
                                  f"valid UTF-8 text")


def _repeated(fd) -> bool:
    rep = getattr(fd, "is_repeated", None)  # protobuf >= 5 (label is deprecated there)
    return rep if isinstance(rep, bool) else fd.label == fd.LABEL_REPEATED


class Importer:
    """One import: the value table, naming and scoping (see the module docstring)."""

    def __init__(self, model, trainable: bool = True, name: str | None = None,
                 base_dir: str | None = None):
        self.onnx = _onnx()
        self.base_dir = base_dir
        self.model = model
        self.trainable = trainable
        self.opset = 1
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                self.opset = int(o.version)
        gp = model.graph
        floats = [t.data_type for t in gp.initializer] + [
            i.type.tensor_type.elem_type for i in gp.input if i.type.HasField("tensor_type")]
        dtype = "float64" if 11 in floats and 1 not in floats else "float32"
        self.g = Graph(_clean(name or gp.name or "onnx", "graph name"), dtype=dtype)
        self.values: dict[str, Node | np.ndarray] = {}
        self.named: set[int] = set()  # ids of nodes carrying an ONNX name
        self.node = None  # the ONNX node being imported (for error messages)

    # -- errors --------------------------------------------------------------------------
    def where(self) -> str:
        n = self.node
        if n is None:
            return f"(opset {self.opset})"
        return f"{n.op_type!r} (node {_short(n.name or (n.output[0] if n.output else '?'))!r}, opset {self.opset})"

    def error(self, msg: str) -> FormatError:
        return FormatError(f"ONNX {self.where()}: {msg}")

    def unsupported(self, what: str) -> FormatError:
        return FormatError(f"ONNX {self.where()}: {what} is not supported by graphnn")

    # -- values --------------------------------------------------------------------------
    def array(self, tensor) -> np.ndarray:
        onnx = self.onnx
        external = tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data
        if external:
            self._check_external(tensor)
        n = 1
        for d in tensor.dims:
            if d < 0:
                raise FormatError(f"tensor {_short(tensor.name)!r} has a negative dimension")
            n *= d
        if n > MAX_ELEMENTS:
            raise FormatError(f"tensor {_short(tensor.name)!r} has {n} elements (limit {MAX_ELEMENTS})")
        if tensor.data_type not in _ONNX_DTYPES:
            raise FormatError(f"tensor {_short(tensor.name)!r}: ONNX element type "
                              f"{_type_name(tensor.data_type)} is not supported (graphnn computes "
                              f"in {sorted(set(_ONNX_DTYPES.values()))})")
        try:
            arr = onnx.numpy_helper.to_array(tensor, base_dir=self.base_dir if external else "")
        except Exception as e:
            raise FormatError(f"tensor {_short(tensor.name)!r} does not decode: {e}") from None
        if arr.size != n:
            raise FormatError(f"tensor {_short(tensor.name)!r}: {arr.size} values for dims {list(tensor.dims)}")
        return np.array(arr, dtype=_ONNX_DTYPES[tensor.data_type])

    def _check_external(self, tensor) -> None:
        """External data is read only from a plain file name next to the model file,
        inside that file's bounds (a model must not make graphnn read other paths)."""
        info = {e.key: e.value for e in tensor.external_data}
        loc = info.get("location", "")
        where = f"tensor {_short(tensor.name)!r} keeps its data in {_short(loc)!r}"
        if self.base_dir is None:
            raise FormatError(f"{where}: external data is read only when the model is "
                              f"loaded from a path")
        if not loc or loc != os.path.basename(loc) or loc in (".", "..") or "\\" in loc \
                or "\0" in loc or os.path.isabs(loc):
            raise FormatError(f"{where}: only a plain file name next to the model is allowed")
        path = os.path.join(self.base_dir, loc)
        try:
            size = os.path.getsize(path)
            offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
        except (OSError, ValueError) as e:
            raise FormatError(f"{where}: {e}") from None
        if offset < 0 or offset > size or length > size - offset:
            raise FormatError(f"{where}: offset {offset} and length {length} fall outside the "
                              f"file ({size} bytes)")

    def batch_ref(self) -> Node:
        """A node with the batch axis (every batch axis of a program has one size)."""
        for n in self.g.inputs:
            if None in n.shape:
                return n
        raise self.error("a batch dimension is used but no input has one")

    def node_of(self, v, like: Node | None = None) -> Node:
        """A value as a Node (folded arrays become constants)."""
        if isinstance(v, Node):
            return v
        arr = np.asarray(v)
        if arr.dtype == object:
            raise self.error("a shape holding the batch dimension is used as data")
        if arr.dtype.kind == "f" and like is not None and like.dtype.kind == "f":
            arr = arr.astype(like.dtype)
        return self.g.const(None, arr)

    def define(self, name: str, value) -> None:
        if not name:
            return
        if name in self.values:
            raise FormatError(f"ONNX {self.where()}: tensor {_short(name)!r} is defined twice")
        if isinstance(value, Node) and not value.is_leaf and id(value) not in self.named \
                and value.graph is self.g:
            self._claim(name, value)
        self.values[name] = value

    def _claim(self, name: str, node: Node) -> None:
        name = _clean(name, "tensor name")
        if name in self.g:
            other = self.g[name]
            if id(other) in self.named:
                return  # the name is a leaf's or an earlier output's: keep the auto name
            other.named(self.g._auto_name(other.op))  # an auxiliary node took it first
        node.named(name)
        self.named.add(id(node))

    # -- the walk --------------------------------------------------------------------------
    def run(self) -> Graph:
        gp = self.model.graph
        onnx = self.onnx
        if len(gp.node) > MAX_NODES:
            raise FormatError(f"ONNX graph has {len(gp.node)} nodes (limit {MAX_NODES})")
        inits = {}
        for t in gp.initializer:
            if t.name in inits:
                raise FormatError(f"initializer {_short(t.name)!r} is defined twice")
            inits[t.name] = self.array(t)
        for t in gp.sparse_initializer:
            raise FormatError("sparse initializers are not supported by graphnn")
        for vi in gp.input:
            if vi.name in inits:
                continue  # IR < 4 lists initializers among inputs: they stay params
            shape, dtype = self._input_type(vi)
            node = self.g.input(_clean(vi.name, "input name"), shape, dtype=dtype)
            self.named.add(id(node))
            self.define(vi.name, node)
        for name, arr in inits.items():
            if arr.dtype.kind == "f":
                leaf = (self.g.param(_clean(name, "initializer name"), value=arr) if self.trainable
                        else self.g.const(_clean(name, "initializer name"), arr))
                self.named.add(id(leaf))
                self.define(name, leaf)
            else:
                self.define(name, arr)  # indices and shapes: folded
        from . import onnx_ops
        for node in gp.node:
            self.node = node
            if node.domain not in ("", "ai.onnx"):
                raise self.unsupported(f"op domain {_short(node.domain)!r}")
            handler = onnx_ops.HANDLERS.get(node.op_type)
            if handler is None:
                raise self.unsupported("this op")
            ins = []
            for i in node.input:
                if i == "":
                    ins.append(None)
                elif i not in self.values:
                    raise self.error(f"input {_short(i)!r} is not defined by an earlier node, an "
                                     f"input or an initializer (dangling name or a cycle)")
                else:
                    ins.append(self.values[i])
            need = onnx_ops.MIN_INPUTS.get(node.op_type, 1)
            if callable(need):
                need = need(self.opset)
            if len(ins) < need or any(v is None for v in ins[:need]):
                raise self.error(f"needs {need} input(s), got {[_short(i) for i in node.input]}")
            try:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            except Exception as e:  # an attribute of an unknown or inconsistent type
                raise self.error(f"attribute does not decode: {e}") from None
            before = len(self.g)
            with self.g.provenance(scope=_scope(node)):
                try:
                    outs = handler(self, ins, attrs)
                except FormatError:
                    raise
                except GraphnnError as e:
                    raise self.error(str(e)) from None
                except (ValueError, TypeError, LookupError, ArithmeticError, AttributeError,
                        MemoryError) as e:  # a malformed node the handler did not foresee
                    raise self.error(f"{type(e).__name__}: {e}") from None
            for n in self.g._order[before:]:  # what this node built (nodes are only appended)
                known = [d for d in n.shape if d is not None]
                if any(d > MAX_ELEMENTS for d in known) or math.prod(known) > MAX_ELEMENTS:
                    raise self.error(f"absurd shape {n.shape} (limit {MAX_ELEMENTS} elements)")
            wanted = [o for o in node.output]
            if len([o for o in wanted if o]) > len(outs) and any(
                    o for o in wanted[len(outs):]):
                raise self.unsupported(f"output #{len(outs)} ({_short(wanted[len(outs)])!r})")
            for oname, val in zip(wanted, outs):
                if isinstance(val, np.ndarray) and val.dtype != object and val.size > MAX_ELEMENTS:
                    raise self.error(f"folded value of {val.size} elements")
                self.define(oname, val)
        self.node = None
        outputs = []
        for vi in gp.output:
            if vi.name not in self.values:
                raise FormatError(f"ONNX graph output {_short(vi.name)!r} is never computed")
            v = self.values[vi.name]
            if not isinstance(v, Node):
                v = self.node_of(v)
                self._claim(vi.name, v)
            outputs.append(v)
        self.g.outputs = outputs
        self.g.onnx_opset = self.opset
        return self.g

    def _input_type(self, vi):
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None:
            raise FormatError(f"input {_short(vi.name)!r} is not a tensor")
        if tt.elem_type not in _ONNX_DTYPES:
            raise FormatError(f"input {_short(vi.name)!r}: ONNX element type "
                              f"{_type_name(tt.elem_type)} is not supported")
        if not tt.HasField("shape"):
            raise FormatError(f"input {_short(vi.name)!r} has no shape; graphnn needs ranks "
                              f"and fixed sizes (the batch axis may be symbolic)")
        shape = []
        for k, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                if not 0 <= d.dim_value <= MAX_ELEMENTS:
                    raise FormatError(f"input {_short(vi.name)!r}: absurd dimension {d.dim_value}")
                shape.append(int(d.dim_value))
            elif k == 0:
                shape.append(None)  # a symbolic or unknown first axis: the batch
            else:
                raise FormatError(f"input {_short(vi.name)!r}: symbolic dimension "
                                  f"{_short(d.dim_param)!r} at axis {k}; graphnn allows it on "
                                  f"the first (batch) axis only")
        return tuple(shape), _ONNX_DTYPES[tt.elem_type]


def _type_name(code: int) -> str:
    try:
        return _onnx().TensorProto.DataType.Name(code)
    except ValueError:
        return str(code)


def _short(s: str, n: int = 80) -> str:
    s = str(s)
    return s if len(s) <= n else s[:n] + "..."


def _clean(name: str, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise FormatError(f"empty {what}")
    if len(name) > MAX_NAME:
        raise FormatError(f"{what} of {len(name)} characters (limit {MAX_NAME})")
    return name


def _scope(node) -> str:
    """The module path of an ONNX node (see the module docstring)."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes" and len(p.value) < 4096:
            try:
                parts = ast.literal_eval(p.value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                break
            if isinstance(parts, list) and all(isinstance(s, str) for s in parts):
                return "/".join(s for s in parts[:-1] if s)
            break
    name = node.name
    if name.startswith("/") and len(name) < 4096:
        return "/".join(s for s in name.strip("/").split("/")[:-1] if s)
    return ""


def from_onnx(model, trainable: bool = True, name: str | None = None) -> Graph:
    """An ONNX model (path, bytes or onnx.ModelProto) as a Graph.

    `g.outputs` lists the model's outputs in ONNX order and inputs keep their ONNX
    names, so `gn.compile(g.outputs)(**{name: array})` runs the model. Float
    initializers become params (consts with `trainable=False`)."""
    base_dir = None
    if isinstance(model, (str, os.PathLike)):
        base_dir = os.path.dirname(os.path.abspath(os.fspath(model)))
    return Importer(load_model(model), trainable=trainable, name=name, base_dir=base_dir).run()


def probe_loss(g: Graph) -> Node:
    """A scalar to differentiate an imported model by, which has outputs but no loss:
    half the mean square of its float outputs, summed (scope "loss"). The command
    line's `draw --grad` and `teach` use it when no --loss is named."""
    from .ops import api
    outs = [o for o in getattr(g, "outputs", []) if o.dtype.kind == "f"]
    if not outs:
        raise GraphError(f"graph {g.name!r} has no float outputs to build a loss from")
    with g.provenance(scope="loss"):
        total = None
        for o in outs:
            term = api.mean(o * o)
            total = term if total is None else total + term
        loss = total * 0.5
    name = "loss"
    while name in g:
        name += "_"
    return loss.named(name)
