"""Fuzz: hostile names, mutated model files, checkpoints and feeds (issue 14, "keep it fixed").

Every case goes through what a user does with a model -- load, print, compile
(plain and fast), run, save + import the program, save + load the model, draw,
render SVG, the step-by-step page, train, checkpoint -- and asserts:

* only graphnn's documented errors (`gn.GraphnnError` and its subclasses) escape;
* nothing is executed from a name: names carry payloads that would create a
  canary file, and the canary never appears; the test runs in its own folder;
* no name reaches generated code outside comments and string literals: the
  program (NumPy, fast, and the CuPy target's printed source) has the same tokens
  outside comments and strings as the same graph's with plain names, and the
  CUDA C of the CuPy kernels is identical;
  and no markup from a name reaches a page or an SVG unescaped.

The budget is small in `make test` and large (over 10,000 cases) in `make fuzz`
(GRAPHNN_FUZZ=large): see tests/fuzzing.py.
"""
from __future__ import annotations

import ast
import importlib.util
import io
import json
import os
import re
import tempfile
import tokenize
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import graphnn as gn
from graphnn.nn import optim
from graphnn.nn.train import EarlyStopping, Trainer

from fuzzing import examples

# (overflow in exp, optimizer settings that differ, ...: warnings are not failures here)
pytestmark = [pytest.mark.fuzz, pytest.mark.filterwarnings("ignore")]

# outside every test folder: a payload that ran would create it
CANARY_DIR = os.path.join(tempfile.gettempdir(), f"graphnn-fuzz-canary-{os.getpid()}")
CANARY = os.path.join(CANARY_DIR, "PWNED")

# names that would run code, break out of a comment, string, docstring, page or label,
# or collide with what the printers name themselves
PAYLOADS = [
    f"Q[__import__('os').system('touch {CANARY}')]",
    f"x'); open({CANARY!r}, 'w'); ('",
    f'x"); open({CANARY!r}, "w"); ("',
    f"a\nopen({CANARY!r}, 'w')\n",
    f"a\r\nimport os; os.mkdir({CANARY!r}) #",
    f'"""\nopen({CANARY!r}, "w")\n"""',
    f"\\\nopen({CANARY!r}, 'w')",
    "step size", "x = 1", "a;b", "a#b", "{0}", "{x}", "%s", "\x00", "\x1b[31m", "\u2028", "\ufeff",
    "\ud800", "\udfff", "é", "日本", "\U0001f600", " ", "\t",
    "_B", "_buf1", "_upd1", "_adopt", "_p", "_t", "__file__", "__name__", "__class__",
    "step", "run", "np", "math", "ARGS", "PARAMS", "OUTPUTS", "_load_params", "numba",
    "None", "True", "def", "lambda", "import", "class", "print", "exec", "eval", "open",
    "1x", "0", "-1", "x.y", "x[0]", "x(", ")", "'", '"', "\\", "/", "..", "../x", "con",
    "<x-evil>", '"><x-evil a="', "</script><x-evil>", "</math><x-evil>", "<!--<x-evil>",
    "]]><x-evil>", "&amp;<x-evil>", "<img src=x onerror=alert(1)><x-evil>",
    "\nab cd", "n" * 300,
]

names = st.one_of(st.sampled_from(PAYLOADS),
                  st.text(min_size=1, max_size=12),
                  st.text(alphabet="<>&\"'\\\n;#=()[]{}_ xX0", min_size=1, max_size=10))

DOCUMENTED = (gn.GraphnnError,)


def no_canary():
    assert not os.path.exists(CANARY), "a name was executed as code"
    assert not os.path.exists(CANARY_DIR), "a name was executed as code"


_SKIP = {tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
         tokenize.DEDENT, tokenize.ENDMARKER}
_SKIP |= {getattr(tokenize, t) for t in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
          if hasattr(tokenize, t)}


def code_shape(source: str) -> list:
    """The tokens of `source` outside comments and strings, identifiers made anonymous."""
    compile(source, "<fuzz>", "exec")  # valid Python
    return [(t.type, "NAME" if t.type == tokenize.NAME and t.string not in _KEEP else t.string)
            for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type not in _SKIP]


_KEEP = {"np", "math", "def", "return", "import", "for", "in", "if", "else", "not", "None",
         "True", "False", "lambda", "and", "or", "is", "with", "as", "while", "raise"}


def check_code(source: str, twin_source: str) -> None:
    """Names may change identifiers, comments and strings -- nothing else: the program of
    the same graph with plain names has the same code shape."""
    got, want = code_shape(source), code_shape(twin_source)
    if got != want:
        diff = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise AssertionError(f"names changed the code beyond identifiers, comments and strings "
                             f"at token {diff}: {got[diff:diff + 6]} vs {want[diff:diff + 6]}")


def check_markup(text: str) -> None:
    assert "<x-evil" not in text and "<img" not in text, "markup from a name was not escaped"


# -- the model every name goes into ---------------------------------------------------------------

def build(nm: dict):
    g = gn.Graph(nm["graph"])
    x = g.input(nm["x"], (None, 2))
    labels = g.input(nm["labels"], (None,), dtype="int64")
    with g.scope(nm["scope"]):
        W = g.param(nm["W"], (2, 3), value=np.array([[0.1, -0.2, 0.3], [0.4, 0.0, -0.1]]))
        b = g.param(nm["b"], (3,), value=np.zeros(3))
        h = gn.tanh(x @ W + b).named(nm["h"])
        logits = (h * g.const(nm["c"], 2.0)).named(nm["logits"])
    loss = gn.softmax_cross_entropy(logits, labels).named(nm["loss"])
    return g, loss, [W, b], {x.name: np.array([[1.0, 2.0], [-1.0, 0.5], [0.0, 0.0]]),
                             labels.name: np.array([0, 2, 1])}


def import_saved(path):
    spec = importlib.util.spec_from_file_location("fuzz_saved_program", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def programs_of(loss, params):
    """The programs a user compiles: the loss (the default, lowered program first), and
    training steps plain and fast, then the loss's plain program."""
    grads = gn.grad(loss, params)
    ups = {p: p - 0.01 * d for p, d in zip(params, grads)}
    return [gn.compile(loss), gn.compile([loss], updates=ups, fast=False),
            gn.compile([loss], updates=ups, fast=True), gn.compile(loss, fast=False)]


def cupy_source(loss, params) -> str:
    """The CuPy target's training step, printed (it runs only on a GPU, but prints anywhere)."""
    from graphnn.compile.passes import Function, optimize
    from graphnn.compile.targets.cupy import CupyPrinter
    grads = gn.grad(loss, params)
    fn, _ = optimize(Function(loss.graph, [loss],
                              [(p, p - 0.01 * d) for p, d in zip(params, grads)], []))
    return CupyPrinter(fn, loss.graph.name, "auto").source()[0]


_KERNEL = re.compile(r"cp\.ElementwiseKernel\((.*?)preamble=", re.S)


def _kernels(source: str) -> list:
    """(parameters, outputs, CUDA C body, kernel name) of each ElementwiseKernel."""
    out = []
    for args in _KERNEL.findall(source):
        strings = [ast.literal_eval(t.string) for t in
                   tokenize.generate_tokens(io.StringIO(args).readline)
                   if t.type == tokenize.STRING]
        out.append(tuple(strings[:4]))
    return out


def check_cupy(source: str, twin_source: str) -> None:
    """Python shape as for NumPy; the CUDA C of every kernel identical to the twin's, and
    kernel names (which may be made from node names) plain C identifiers."""
    check_code(source, twin_source)
    got, want = _kernels(source), _kernels(twin_source)
    assert [k[:3] for k in got] == [k[:3] for k in want], "a name reached a CUDA kernel"
    for k in got:
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,200}", k[3]), f"kernel name {k[3]!r}"


def exercise(model, twin, folder):
    """Everything a user does with a model; graphnn errors are allowed, nothing else.
    `twin` is the same model with plain names (the generated code must match its shape)."""
    import viz
    g, loss, params, feeds = model
    str(g)
    repr(loss)
    progs = programs_of(loss, params)
    for prog, ref in zip(progs, programs_of(twin[1], twin[2])):
        check_code(prog.source, ref.source)
        prog(**feeds)
    check_cupy(cupy_source(loss, params), cupy_source(twin[1], twin[2]))
    prog = progs[0]
    value = prog(**feeds)
    path = os.path.join(folder, "prog.py")
    prog.save(path)
    mod = import_saved(path)
    np.testing.assert_allclose(mod.run(**feeds), prog(**feeds), rtol=1e-12)
    model = os.path.join(folder, "m.json")
    g.save(model)
    g2 = gn.load(model)
    assert len(g2) == len(g)
    d = viz.draw(loss, grads=True, feeds=feeds)
    check_markup(viz.svg(d, renderer="wasm"))
    page = os.path.join(folder, "steps.html")
    viz.steps_html(viz.backprop_steps(loss, feeds=feeds), page)
    with open(page, encoding="utf-8") as f:
        check_markup(f.read())
    tr = Trainer(loss, optimizer=optim.Adam(lr=0.01))
    tr.fit(feeds, epochs=1, batch_size=2, verbose=False,
           early_stopping=EarlyStopping(patience=2))
    ckpt = os.path.join(folder, "c.ckpt")
    tr.save_checkpoint(ckpt)
    Trainer(loss, optimizer=optim.Adam(lr=0.01)).load_checkpoint(ckpt)
    return value


ROLES = ["graph", "x", "labels", "scope", "W", "b", "h", "c", "logits", "loss"]


@settings(max_examples=examples(15, 1500), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.lists(names, min_size=len(ROLES), max_size=len(ROLES), unique=True))
def test_fuzz_hostile_names_through_every_stage(tmp_path_factory, monkeypatch_module, chosen):
    folder = str(tmp_path_factory.mktemp("names"))
    nm = dict(zip(ROLES, chosen))
    node_roles = ROLES[1:3] + ROLES[4:]
    # names must be distinct within a graph; a duplicate is a documented GraphError
    try:
        g, loss, params, feeds = build(nm)
    except gn.GraphError:
        assert len({nm[r] for r in node_roles}) < len(node_roles) or "" in nm.values()
        event("refused while building")
        return
    monkeypatch_module.chdir(folder)
    try:
        exercise((g, loss, params, feeds), build({r: "n_" + r for r in ROLES}), folder)
        event("every stage ran")
    except DOCUMENTED as e:
        event(f"stopped by {type(e).__name__}")
    finally:
        no_canary()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# -- mutated model files --------------------------------------------------------------------------

def reference_models(folder):
    """A few saved models (JSON text, npz bytes) covering consts, scopes, labels, grads."""
    out = []
    g, loss, params, _ = build({r: r for r in ROLES})
    gn.grad(loss, params)
    g.save(os.path.join(folder, "a.json"))
    g2 = gn.Graph("b", dtype="float32")
    x = g2.input("x", (None, 3), dtype="float32")
    W = g2.param("W", (3, 3), dtype="float32")
    y = gn.sigmoid(x @ W).sum(axis=1).reshape(-1, 1)
    z = gn.concat([y, y * 2.0], axis=1).mean()
    gn.grad(z, [W])
    g2.save(os.path.join(folder, "b.json"))
    for stem in ("a", "b"):
        with open(os.path.join(folder, stem + ".json"), "rb") as f:
            text = f.read()
        with open(os.path.join(folder, stem + ".npz"), "rb") as f:
            npz = f.read()
        out.append((text, npz))
    return out


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
              st.floats(allow_nan=False, allow_infinity=False), names,
              st.sampled_from(["float64", "int64", "input", "param", "const", "tanh_dx_dx",
                               "sigmoid" + "_dx" * 9, "matmul", "one_hot", "reshape", "concat",
                               "forward", "backward", "0x1.0p+0", "nan"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["axis", "axes", "shape", "depth",
                                                             "dtype", "keepdims", "alpha",
                                                             "index", "x"]), inner, max_size=3)),
    max_leaves=8)


def mutate_dict(d: dict, data) -> None:
    nodes = d["nodes"]
    kind = data.draw(st.sampled_from(["field", "header", "drop", "dup", "swap", "name"]),
                     label="kind")
    if kind == "header":
        d[data.draw(st.sampled_from(["name", "dtype", "version", "format", "nodes", "extra"]))] = \
            data.draw(JSON_VALUES)
        return
    if not nodes:
        return
    k = data.draw(st.integers(0, len(nodes) - 1), label="node")
    if kind == "field":
        field = data.draw(st.sampled_from(["name", "op", "inputs", "attrs", "shape", "dtype",
                                           "scope", "role", "value"]))
        nodes[k][field] = data.draw(JSON_VALUES, label="value")
    elif kind == "drop":
        del nodes[k]
    elif kind == "dup":
        nodes.insert(k, dict(nodes[k]))
    elif kind == "swap":
        j = data.draw(st.integers(0, len(nodes) - 1))
        nodes[k], nodes[j] = nodes[j], nodes[k]
    else:  # a consistent rename: the file stays valid, with a hostile name
        old, new = nodes[k]["name"], data.draw(names, label="new name")
        for rec in nodes:
            if rec.get("name") == old:
                rec["name"] = new
            if isinstance(rec.get("inputs"), list):
                rec["inputs"] = [new if i == old else i for i in rec["inputs"]]
            if data.draw(st.booleans()):
                rec["scope"] = data.draw(names)


def flip(raw: bytes, data) -> bytes:
    b = bytearray(raw)
    how = data.draw(st.sampled_from(["flip", "truncate", "splice"]), label="bytes")
    if how == "truncate":
        return bytes(b[:data.draw(st.integers(0, max(0, len(b) - 1)))])
    if how == "splice":
        at = data.draw(st.integers(0, len(b)))
        return bytes(b[:at]) + data.draw(st.binary(max_size=16)) + bytes(b[at:])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] ^= 1 << data.draw(st.integers(0, 7))
    return bytes(b)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return reference_models(str(tmp_path_factory.mktemp("ref")))


@settings(max_examples=examples(150, 5000), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzz_mutated_model_files(tmp_path_factory, monkeypatch_module, models, data):
    text, npz = models[data.draw(st.integers(0, len(models) - 1), label="model")]
    what = data.draw(st.sampled_from(["dict", "dict", "dict", "json bytes", "npz bytes"]),
                     label="what")
    if what == "dict":
        d = json.loads(text)
        mutate_dict(d, data)
        try:
            text = json.dumps(d, allow_nan=False).encode()
        except (ValueError, TypeError):
            return
    elif what == "json bytes":
        text = flip(text, data)
    else:
        npz = flip(npz, data)
    folder = str(tmp_path_factory.mktemp("files"))
    monkeypatch_module.chdir(folder)
    with open(os.path.join(folder, "m.json"), "wb") as f:
        f.write(text)
    with open(os.path.join(folder, "m.npz"), "wb") as f:
        f.write(npz)
    try:
        g = gn.load(os.path.join(folder, "m.json"))
    except gn.FormatError:
        event("refused: FormatError")
        no_canary()
        return
    event("loaded")
    try:
        str(g)
        loss = next((n for n in reversed(g.nodes) if n.shape == () and n.dtype.kind == "f"), None)
        params = [p for p in g.params if p.dtype.kind == "f"]
        if loss is not None and params:
            twin = gn.load(os.path.join(folder, "m.json"))
            for k, n in enumerate(twin.nodes):
                n.named(f"plain{k}_{n.index}_zq")
            progs = programs_of(loss, params)
            for prog, ref in zip(progs, programs_of(twin.nodes[loss.index],
                                                    [twin.nodes[p.index] for p in params])):
                check_code(prog.source, ref.source)
        import viz
        viz.draw(g)
    except DOCUMENTED as e:
        event(f"loaded, then {type(e).__name__}")
    finally:
        no_canary()


# -- mutated checkpoints --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("ckpt"))
    g, loss, params, feeds = build({r: r for r in ROLES})
    tr = Trainer(loss, optimizer=optim.Adam(lr=0.01))
    tr.fit(feeds, epochs=2, batch_size=2, verbose=False, early_stopping=EarlyStopping(patience=2))
    path = os.path.join(folder, "c.ckpt")
    tr.save_checkpoint(path)
    with open(path, "rb") as f:
        return f.read()


def mutate_meta(raw: bytes, data) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            body = src.read(name)
            if name == "meta.json":
                meta = json.loads(body)
                key = data.draw(st.sampled_from(sorted(meta)), label="meta key")
                if isinstance(meta[key], dict) and meta[key] and data.draw(st.booleans()):
                    sub = data.draw(st.sampled_from(sorted(meta[key])))
                    meta[key][sub] = data.draw(JSON_VALUES)
                elif isinstance(meta[key], list) and meta[key] and data.draw(st.booleans()):
                    meta[key][data.draw(st.integers(0, len(meta[key]) - 1))] = \
                        data.draw(JSON_VALUES)
                else:
                    meta[key] = data.draw(JSON_VALUES)
                body = json.dumps(meta).encode()
            dst.writestr(name, body)
    return out.getvalue()


@settings(max_examples=examples(60, 2000), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzz_mutated_checkpoints(tmp_path_factory, checkpoint_bytes, data):
    raw = mutate_meta(checkpoint_bytes, data) if data.draw(st.booleans(), label="meta") \
        else flip(checkpoint_bytes, data)
    folder = str(tmp_path_factory.mktemp("ckpt"))
    path = os.path.join(folder, "bad.ckpt")
    with open(path, "wb") as f:
        f.write(raw)
    g, loss, params, feeds = build({r: r for r in ROLES})
    tr = Trainer(loss, optimizer=optim.Adam(lr=0.01))
    before = {k: np.array(v, copy=True) for k, v in g.values.items()}
    try:
        tr.load_checkpoint(path)
    except gn.FormatError:
        event("refused: FormatError")
        assert tr.epoch == 0 and tr.global_step == 0
        for k, v in before.items():
            np.testing.assert_array_equal(g.values[k], v)
        return
    event("loaded")
    try:  # a checkpoint that loads must train on
        tr.fit(feeds, epochs=tr.epoch + 1, batch_size=2, verbose=False,
               early_stopping=EarlyStopping(patience=2))
    except DOCUMENTED as e:
        event(f"loaded, then {type(e).__name__}")


# -- feeds ---------------------------------------------------------------------------------------

FEED_DTYPES = ["float64", "float32", "int64", "int32", "int8", "uint64", "bool", "complex128",
               "U3", "S3", "datetime64[D]", "timedelta64[s]", "object", "float16"]


@st.composite
def feed_values(draw):
    kind = draw(st.sampled_from(["array", "list", "scalar", "none"]))
    if kind == "none":
        return None
    if kind == "scalar":
        return draw(st.one_of(st.floats(), st.integers(-2 ** 70, 2 ** 70), st.text(max_size=3),
                              st.complex_numbers(), st.booleans()))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3)))
    dtype = draw(st.sampled_from(FEED_DTYPES))
    n = int(np.prod(shape))
    raw = draw(st.lists(st.one_of(st.floats(), st.integers(-10, 10)), min_size=n, max_size=n))
    try:
        arr = np.array(raw, dtype=np.float64).reshape(shape).astype(dtype)
    except (ValueError, TypeError, OverflowError):
        arr = np.zeros(shape, dtype=dtype)
    if dtype == "object" and n:
        arr.flat[0] = None
    return arr.tolist() if kind == "list" else arr


@pytest.fixture(scope="module")
def programs():
    g, loss, params, feeds = build({r: r for r in ROLES})
    grads = gn.grad(loss, params)
    ups = {p: p - 0.01 * d for p, d in zip(params, grads)}
    return (g, loss, feeds, [gn.compile(loss), gn.compile([loss], updates=ups, fast=True),
                             gn.compile([loss], updates=ups, fast=False)])


@settings(max_examples=examples(150, 2500), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["x", "labels", "W"]), feed_values(), st.integers(0, 3))
def test_fuzz_feeds(programs, which, value, use):
    g, loss, good, progs = programs
    feeds = dict(good)
    feeds[which] = value
    saved = {k: np.array(v, copy=True) for k, v in g.values.items()}
    try:
        if use < 3:
            progs[use](**feeds)
        else:
            Trainer(loss, optimizer=optim.SGD(lr=0.01)).fit(
                {k: feeds[k] for k in ("x", "labels")}, epochs=1, batch_size=2, verbose=False)
        event("ran")
    except DOCUMENTED as e:
        event(f"refused: {type(e).__name__}")
    finally:
        for k, v in saved.items():  # (steps update the params in place)
            g.values[k][...] = v


def test_fast_placeholder_in_a_name():
    """compile/fast_text.py filled '{N}' placeholders in comments too, which hold node
    names (found by the fuzz test): a param named "{0}" crashed fast=True with KeyError."""
    g = gn.Graph("g")
    x = g.input("x", (None, 2))
    W = g.param("{0}", (2, 1), value=np.ones((2, 1)))
    loss = ((x @ W) ** 2).mean()
    (gW,) = gn.grad(loss, [W])
    prog = gn.compile([loss], updates={W: W - 0.1 * gW}, fast=True)
    plain = gn.compile([loss, gW], fast=False)
    X = np.array([[1.0, 2.0], [0.5, -1.0]])
    want_loss, want_g = plain(x=X)
    assert float(prog(x=X)[0]) == float(want_loss)
    np.testing.assert_allclose(g.values["{0}"], np.ones((2, 1)) - 0.1 * want_g)
