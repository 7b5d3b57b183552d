"""Model files: a versioned JSON description of the graph plus an `.npz` of its arrays.

`save(g, "m.json")` writes two files: `m.json` (the graph) and `m.npz` (parameter
values and non-scalar constants, no pickle). `load("m.json")` rebuilds the graph
through `Graph.apply`, so every shape rule and the interning run again, and
checks the result against what the file declares.

The JSON (format "graphnn", version 1)::

    {"format": "graphnn", "version": 1, "name": ..., "dtype": "float64",
     "arrays_sha256": ..., "nodes": [
      {"name": "x", "op": "input", "inputs": [], "attrs": {}, "shape": [null, 2],
       "dtype": "float64", "scope": "", "role": "forward"},
      ...]}

* Nodes are listed in topological order; `inputs` name earlier nodes only.
* `attrs` are JSON values (tuples written as lists); on load the op's own
  attribute checkers (`OpDef.check_attrs`) validate them and turn lists back
  into tuples.
* The array of node number `i` (params, non-scalar constants) is `n{i}` in the
  `.npz`. Scalar constants are inline in a `"value"` field: `float.hex` text for
  floats (bit-exact), a JSON integer or boolean otherwise. Keys are positions,
  not names, so hostile names never become file names inside the archive.
* `arrays_sha256` digests the arrays (keys, dtypes, shapes, bytes): a `.npz`
  left over from another save is refused instead of silently mixed in.

Everything read is distrusted: any malformed or hostile content raises
`FormatError` with the reason (and the node). `to_dict`/`to_arrays`/`from_dict`
are the same encoding without files (checkpoints store them their own way).
Both files are written to temporaries in the same folder first, then both renamed
(`archive.write_files`): a save that fails leaves the previous pair loadable.
"""
from __future__ import annotations

import hashlib
import io as _io
import json
import math
import os
import re
from typing import Mapping

import numpy as np

from . import archive, dtypes, limits
from .errors import FormatError, GraphError, GraphnnError
from .graph import LEAF_OPS, ROLES, Graph, Node

FORMAT = "graphnn"
VERSION = 1
NODE_FIELDS = ("name", "op", "inputs", "attrs", "shape", "dtype", "scope", "role")
HEADER_FIELDS = ("format", "version", "name", "dtype", "nodes")
DIGEST_FIELD = "arrays_sha256"
MAX_OP_NAME = 200
# derivative ops (`sigmoid_dx_dx`) are made on demand by sympy.diff, and each order
# costs ~2.5x the last (tanh: order 12 takes 10 s). graphnn itself builds order 2 (a
# Hessian); a file may ask for one more, no higher, so loading a small file stays fast.
MAX_DERIVATIVE_ORDER = 3
_DERIVATIVE_SUFFIX = re.compile(r"(?:_d[a-z])+$")


# -- writing ------------------------------------------------------------------------------

def array_key(index: int) -> str:
    """The `.npz` key of the array of node number `index` (position in the node list)."""
    return f"n{index}"


def _attr_json(value, where: str):
    """An attribute value as plain JSON data (tuples become lists)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            raise GraphError(f"{where}: non-finite attribute value {v!r} cannot be saved")
        return v
    if isinstance(value, (list, tuple)):
        return [_attr_json(v, where) for v in value]
    if isinstance(value, np.dtype):
        return value.name
    raise GraphError(f"{where}: attribute value {value!r} of type {type(value).__name__} "
                     "cannot be saved")


def _inline_scalar(arr: np.ndarray):
    """The JSON form of a 0-d constant, or None when it must go to the .npz (bit-exact)."""
    if arr.ndim != 0:
        return None
    v = arr.item()
    if arr.dtype.kind == "f":
        text = float.hex(float(v))
        back = np.array(float.fromhex(text), dtype=arr.dtype)
        return text if back.tobytes() == arr.tobytes() else None  # NaN payloads, -nan
    if arr.dtype.kind == "b":
        return bool(v)
    if arr.dtype.kind in "iu":
        return int(v)
    return None


def _param_value(g: Graph, node: Node) -> np.ndarray:
    if node.name not in g.values:
        raise GraphError(f"param {node.name!r} has no value in g.values; cannot save")
    arr = np.asarray(g.values[node.name])
    if arr.shape != node.shape:
        raise GraphError(f"param {node.name!r}: value has shape {arr.shape}, node has "
                         f"{node.shape}; cannot save")
    return np.asarray(arr, dtype=node.dtype, order="C")


def saved_nodes(g: Graph, derived: bool = False) -> list[Node]:
    """The nodes a save writes: all of them with `derived=True`; otherwise the graph the
    user built (`graphnn.transient.model_nodes`: gradients asked for with `gn.grad` stay),
    without what a Trainer added to train it (penalty, gradients, updates, optimizer state)."""
    if derived:
        return g.nodes
    from .transient import model_nodes
    return model_nodes(g)


def to_dict(g: Graph, derived: bool = True) -> dict:
    """The JSON-able description of `g` (arrays not included: see `to_arrays`)."""
    nodes = []
    for node in saved_nodes(g, derived):
        where = f"node {node.name!r} ({node.op})"
        rec = {"name": node.name, "op": node.op, "inputs": [i.name for i in node.inputs],
               "attrs": {k: _attr_json(v, where) for k, v in node.attrs.items()},
               "shape": list(node.shape), "dtype": node.dtype.name,
               "scope": node.scope, "role": node.role}
        if node.op == "const":
            inline = _inline_scalar(node.value)
            if inline is not None:
                rec["value"] = inline
        nodes.append(rec)
    return {"format": FORMAT, "version": VERSION, "name": g.name, "dtype": g.dtype.name,
            "nodes": nodes}


def to_arrays(g: Graph, derived: bool = True) -> dict[str, np.ndarray]:
    """The arrays `from_dict` needs next to `to_dict(g)`: params and non-scalar constants."""
    out = {}
    for k, node in enumerate(saved_nodes(g, derived)):
        if node.op == "param":
            out[array_key(k)] = _param_value(g, node)
        elif node.op == "const" and _inline_scalar(node.value) is None:
            out[array_key(k)] = np.asarray(node.value, order="C")
    return out


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over keys, dtypes, shapes and bytes (independent of zip timestamps)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.asarray(arrays[key], order="C")
        h.update(json.dumps([key, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def dumps(d: dict) -> str:
    """JSON text of a model dict: a header, then one node per line (readable, diffable)."""
    def one(v):
        return json.dumps(v, ensure_ascii=True, allow_nan=False)
    head = [f" {one(k)}: {one(v)}" for k, v in d.items() if k != "nodes"]
    body = ",\n".join("  " + one(rec) for rec in d["nodes"])
    return "{\n" + ",\n".join(head) + ',\n "nodes": [\n' + body + ("\n" if body else "") + " ]\n}\n"


def npz_path(path) -> str:
    """`m.json` -> `m.npz` (same folder, same stem)."""
    return os.path.splitext(os.fspath(path))[0] + ".npz"


def save(g: Graph, path, derived: bool = False) -> None:
    """Write `path` (JSON) and the `.npz` beside it, each atomically.

    Saves the graph the user built, with the current parameter values: the nodes a
    Trainer added to train it (its penalty, gradients, updates and optimizer state) are
    left out unless `derived=True` (a Trainer checkpoint holds the optimizer state)."""
    path = os.fspath(path)
    npz = npz_path(path)
    if os.path.abspath(npz) == os.path.abspath(path):
        raise GraphError(f"model path {path!r} would be overwritten by its own .npz; "
                         "use a .json name")
    d = to_dict(g, derived)
    arrays = to_arrays(g, derived)
    nodes = d.pop("nodes")
    d[DIGEST_FIELD] = arrays_digest(arrays)
    d["nodes"] = nodes
    text = dumps(d)  # encode everything before touching the disk
    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    # both temporaries written, then both renamed: a failed save leaves the old pair
    archive.write_files([(npz, buf.getvalue()), (path, text.encode("ascii"))])


# -- reading --------------------------------------------------------------------------------

def _show(name) -> str:
    s = repr(name)
    return s if len(s) <= 80 else s[:77] + "..."


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise FormatError(f"duplicate key {_show(k)} in a JSON object")
        out[k] = v
    return out


def _no_constants(token):
    raise FormatError(f"{token} is not valid JSON (non-finite numbers are not allowed)")


def loads(text) -> dict:
    """Parse model JSON text strictly (no NaN/Infinity, no duplicate keys)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"model file is not UTF-8 text: {e}") from None
    try:
        d = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except FormatError:
        raise
    except RecursionError:
        raise FormatError("model file is not valid JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, or an integer too long to convert
        raise FormatError(f"model file is not valid JSON: {e}") from None
    return d


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_header(d) -> None:
    if not isinstance(d, dict):
        raise FormatError(f"a model must be a JSON object, got {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise FormatError(f"not a graphnn model: format is {_show(d.get('format'))}, "
                          f"expected {FORMAT!r}")
    if "version" not in d:
        raise FormatError("model has no version")
    v = d["version"]
    if not _is_int(v) or v != VERSION:
        raise FormatError(f"unsupported model version {_show(v)}; this graphnn reads "
                          f"version {VERSION}")
    missing = [k for k in HEADER_FIELDS if k not in d]
    if missing:
        raise FormatError(f"model is missing field(s) {missing}")
    unknown = sorted(set(d) - set(HEADER_FIELDS))
    if unknown:
        raise FormatError(f"model has unknown field(s) {[_show(k) for k in unknown]}")
    if not isinstance(d["name"], str):
        raise FormatError(f"graph name must be a string, got {_show(d['name'])}")
    _dtype(d["dtype"], "graph")
    if not isinstance(d["nodes"], list):
        raise FormatError(f"'nodes' must be a list, got {type(d['nodes']).__name__}")


def _dtype(v, where: str) -> np.dtype:
    if not isinstance(v, str) or v not in dtypes.ALLOWED:
        raise FormatError(f"{where}: dtype {_show(v)} is not one of {sorted(dtypes.ALLOWED)}")
    return np.dtype(v)


def _shape(v, where: str) -> tuple:
    if not isinstance(v, list):
        raise FormatError(f"{where}: shape must be a list, got {_show(v)}")
    for dim in v:
        if dim is not None and (not _is_int(dim) or dim < 0):
            raise FormatError(f"{where}: bad dimension {_show(dim)} in shape {_show(v)}")
    if v.count(None) > 1:
        raise FormatError(f"{where}: shape {_show(v)} has more than one None (batch) dimension")
    if limits.too_big(v):
        raise FormatError(f"{where}: {limits.limit_text(v)}")
    return tuple(v)


def _check_op_name(op, where: str):
    if not isinstance(op, str) or not op:
        raise FormatError(f"{where}: op must be a non-empty string, got {_show(op)}")
    if op in LEAF_OPS:
        return None
    if len(op) > MAX_OP_NAME:
        raise FormatError(f"{where}: unknown op {_show(op)} (name too long)")
    m = _DERIVATIVE_SUFFIX.search(op)
    if m and len(m.group(0)) // 3 > MAX_DERIVATIVE_ORDER:
        raise FormatError(f"{where}: op {_show(op)} asks for a derivative of order "
                          f"{len(m.group(0)) // 3} (at most {MAX_DERIVATIVE_ORDER})")
    from .ops import api  # noqa: F401  (declares every op)
    from .ops.registry import get_op
    try:
        return get_op(op)
    except GraphError:
        raise FormatError(f"{where}: unknown op {_show(op)}") from None


def _check_record(rec, k: int, defined: dict, later: set) -> dict:
    if not isinstance(rec, dict):
        raise FormatError(f"node #{k}: must be a JSON object, got {type(rec).__name__}")
    name = rec.get("name")
    if not isinstance(name, str) or not name:
        raise FormatError(f"node #{k}: name must be a non-empty string, got {_show(name)}")
    where = f"node #{k} {_show(name)}"
    missing = [f for f in NODE_FIELDS if f not in rec]
    if missing:
        raise FormatError(f"{where}: missing field(s) {missing}")
    unknown = sorted(set(rec) - set(NODE_FIELDS) - {"value"})
    if unknown:
        raise FormatError(f"{where}: unknown field(s) {[_show(u) for u in unknown]}")
    if name in defined:
        raise FormatError(f"{where}: duplicate name (node #{defined[name].index} has it too)")
    opdef = _check_op_name(rec["op"], where)
    where = f"node #{k} {_show(name)} ({rec['op']})"
    ins = rec["inputs"]
    if not isinstance(ins, list) or not all(isinstance(i, str) for i in ins):
        raise FormatError(f"{where}: inputs must be a list of node names, got {_show(ins)}")
    for i in ins:
        if i not in defined:
            if i == name:
                raise FormatError(f"{where}: input {_show(i)} is the node itself (a cycle)")
            if i in later:
                raise FormatError(f"{where}: input {_show(i)} is defined later in the file "
                                  "(a cycle, or nodes out of topological order)")
            raise FormatError(f"{where}: input {_show(i)} is not defined (dangling reference)")
    if not isinstance(rec["attrs"], dict):
        raise FormatError(f"{where}: attrs must be an object, got {_show(rec['attrs'])}")
    shape = _shape(rec["shape"], where)
    dtype = _dtype(rec["dtype"], where)
    if not isinstance(rec["scope"], str):
        raise FormatError(f"{where}: scope must be a string, got {_show(rec['scope'])}")
    if rec["role"] not in ROLES or not isinstance(rec["role"], str):
        raise FormatError(f"{where}: role {_show(rec['role'])} is not one of {ROLES}")
    if opdef is None:  # a leaf
        if ins or rec["attrs"]:
            raise FormatError(f"{where}: a {rec['op']} node takes no inputs and no attrs")
    if "value" in rec and rec["op"] != "const":
        raise FormatError(f"{where}: only const nodes have a 'value' field")
    return {"name": name, "op": rec["op"], "opdef": opdef, "inputs": ins,
            "attrs": rec["attrs"], "shape": shape, "dtype": dtype, "scope": rec["scope"],
            "role": rec["role"], "where": where}


def _array(values: Mapping, key: str, r: dict, used: set) -> np.ndarray:
    where = r["where"]
    if key not in values:
        raise FormatError(f"{where}: array {key!r} is missing from the .npz")
    used.add(key)
    arr = values[key]
    if not isinstance(arr, np.ndarray):
        raise FormatError(f"{where}: array {key!r} is a {type(arr).__name__}, not an array")
    if arr.dtype.kind == "O" or arr.dtype.hasobject:
        raise FormatError(f"{where}: array {key!r} holds Python objects")
    if arr.dtype.name != r["dtype"].name or arr.dtype.fields is not None:
        raise FormatError(f"{where}: array {key!r} has dtype {arr.dtype}, declared "
                          f"{r['dtype'].name}")
    if arr.shape != r["shape"]:
        raise FormatError(f"{where}: array {key!r} has shape {arr.shape}, declared "
                          f"{r['shape']}")
    # native byte order; (np.ascontiguousarray would turn a 0-d array into a 1-d one)
    return np.asarray(arr, dtype=r["dtype"], order="C")


def _scalar(v, r: dict) -> np.ndarray:
    where, dt = r["where"], r["dtype"]
    if r["shape"] != ():
        raise FormatError(f"{where}: an inline value needs shape [], declared {list(r['shape'])}")
    if dt.kind == "f":
        if not isinstance(v, str):
            raise FormatError(f"{where}: a float value is float.hex text, got {_show(v)}")
        try:
            arr = np.array(float.fromhex(v), dtype=dt)
        except (ValueError, OverflowError) as e:
            raise FormatError(f"{where}: bad float.hex value {_show(v)}: {e}") from None
        if float.hex(float(arr)) != v:  # also refuses decimal text, which fromhex misreads
            raise FormatError(f"{where}: value {_show(v)} is not the exact float.hex form of "
                              f"a {dt.name} (expected {float.hex(float(arr))!r})")
        return arr
    if dt.kind == "b":
        if not isinstance(v, bool):
            raise FormatError(f"{where}: a bool value must be true/false, got {_show(v)}")
        return np.array(v, dtype=dt)
    if not _is_int(v):
        raise FormatError(f"{where}: an integer value must be a JSON integer, got {_show(v)}")
    info = np.iinfo(dt)
    if not info.min <= v <= info.max:
        raise FormatError(f"{where}: value {v} does not fit {dt.name}")
    return np.array(v, dtype=dt)


def _build(g: Graph, r: dict, k: int, values: Mapping, used: set, defined: dict) -> Node:
    op, name, where = r["op"], r["name"], r["where"]
    with g.provenance(scope=r["scope"], role=r["role"]):
        if op == "input":
            return g.input(name, r["shape"], dtype=r["dtype"])
        if op == "param":
            if None in r["shape"]:
                raise FormatError(f"{where}: a param cannot have a None (batch) dimension")
            arr = _array(values, array_key(k), r, used)
            return g.param(name, value=arr, dtype=r["dtype"])
        if op == "const":
            if "value" in r["rec"]:
                arr = _scalar(r["rec"]["value"], r)
            else:
                if None in r["shape"]:
                    raise FormatError(f"{where}: a const cannot have a None (batch) dimension")
                arr = _array(values, array_key(k), r, used)
            return g.const(name, arr, dtype=r["dtype"])
        attrs = r["opdef"].check_attrs(r["attrs"])
        before = len(g)
        node = g.apply(op, [defined[i] for i in r["inputs"]], attrs, name=name)
        if len(g) == before:
            raise FormatError(f"{where}: repeats an earlier node (same op, inputs and attrs); "
                              "a saved graph never holds two")
        return node


def from_dict(d: Mapping, values: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Rebuild a Graph from `to_dict` data and `to_arrays` arrays, checking everything."""
    _check_header(d)
    values = {} if values is None else values
    g = Graph(d["name"], dtype=d["dtype"])
    records = d["nodes"]
    later = {r["name"] for r in records if isinstance(r, dict) and isinstance(r.get("name"), str)}
    defined: dict[str, Node] = {}
    used: set[str] = set()
    for k, rec in enumerate(records):
        r = _check_record(rec, k, defined, later)
        r["rec"] = rec
        try:
            node = _build(g, r, k, values, used, defined)
        except FormatError:
            raise
        except (GraphnnError, TypeError, ValueError, IndexError, KeyError, AttributeError,
                ZeroDivisionError,
                OverflowError, RecursionError) as e:
            # shape rules and attribute checkers are written for graphs built in code;
            # from a file, anything they raise means the file is wrong
            raise FormatError(f"{r['where']}: {e}") from e
        if node.shape != r["shape"]:
            raise FormatError(f"{r['where']}: declared shape {list(r['shape'])} but the op "
                              f"gives {list(node.shape)}")
        if node.dtype != r["dtype"]:
            raise FormatError(f"{r['where']}: declared dtype {r['dtype'].name} but the op "
                              f"gives {node.dtype.name}")
        defined[node.name] = node
    extra = sorted(set(values) - used)
    if extra:
        raise FormatError(f"unexpected array(s) {[_show(e) for e in extra[:5]]} in the .npz: "
                          "no node of the model uses them")
    return g


def _read_npz(path: str) -> dict[str, np.ndarray]:
    if not os.path.exists(path):
        raise FormatError(f"the arrays file {path!r} is missing (it is written next to the "
                          "model JSON, same stem)")
    return archive.read_npz(path)  # FormatError for any damage, checked before allocating


def load(path) -> Graph:
    """Read a model written by `save` (JSON + .npz); FormatError if anything is wrong."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        text = f.read()
    d = loads(text)
    if isinstance(d, dict) and d.get("format") == FORMAT and d.get("version") == VERSION \
            and _is_int(d.get("version")):
        if DIGEST_FIELD not in d:
            raise FormatError(f"model is missing field {DIGEST_FIELD!r}")
        digest = d.pop(DIGEST_FIELD)
    else:
        digest = None  # _check_header reports what is wrong
    values = _read_npz(npz_path(path)) if digest is not None else {}
    g = from_dict(d, values)
    if digest != arrays_digest(to_arrays(g)):
        raise FormatError(f"the .npz beside {path!r} does not match the model (digest "
                          "differs): it was written by another save, or edited")
    return g
