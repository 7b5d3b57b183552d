"""The CUDA target (backend 'cuda'), verified without a GPU.

* One source, two builds: the CPU build (`-DGN_CPU`: kernels as host loops,
  `gn_gemm` a reference GEMM with cuBLAS's column-major convention) trains and
  infers and equals the NumPy target (float64 to 1e-10, float32 to 1e-5) on
  lecture 001's XOR, MLPs with SGD and Adam, attention blocks, layer norm;
  training steps equal torch.optim through the differential harness.
* The GPU build (nvcc, cuBLAS from the nvidia-cublas wheel) compiles and links;
  ptxas reports no spills; without a GPU it exits with the no-device code.
* Hostile tensor files are refused with a clear message, under valgrind.
* With a real GPU (marker `gpu`): the GPU build equals the CPU build.

When CI=true, a missing compiler (g++, nvcc, valgrind) fails these tests instead of
skipping them.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess

import numpy as np
import pytest

import graphnn as gn
from graphnn import cudafile
from graphnn.compile import cuda_build

import differential
from test_cuda_c import need
from test_differential import LAYERS, _layer_feeds, _network

CI = os.environ.get("CI") == "true"


def cuda_cpu(outputs, **kw):
    need("g++")
    prog = gn.compile(outputs, backend="cuda", **kw)
    prog.cpu_flags = ("-O0",)  # builds in half the time of -O2
    prog.executable("cpu")
    return _CpuCall(prog)


class _CpuCall:
    """The program, called on its CPU build (the harness calls it like a Program)."""

    def __init__(self, prog):
        self.prog = prog

    def __call__(self, **feeds):
        return self.prog(device="cpu", **feeds)


def _xor(seed=1, dtype="float64"):
    g = gn.Graph("xor", seed=seed, dtype=dtype)
    x = g.input("x", (None, 2))
    y = g.input("y", (None, 1))
    W, b, w = g.param("W", (2, 2)), g.param("b", (2,), init="zeros"), g.param("w", (2, 1))
    h = gn.relu(x @ W + b).named("h")
    out = (h @ w).named("out")
    return g, out, gn.mse(out, y).named("loss")


X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([[0.0], [1.0], [1.0], [0.0]])


def _tol(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_xor_trains_through_the_cpu_build_as_the_numpy_target(opt, dtype):
    need("g++")
    make = (lambda: gn.optim.Adam(lr=0.05)) if opt == "adam" else (lambda: gn.optim.SGD(lr=0.1))
    runs = []
    for backend in ("numpy", "cuda"):
        g, out, loss = _xor(dtype=dtype)
        params = [g["W"], g["b"], g["w"]]
        step = gn.compile([loss], updates=make().build(params, gn.grad(loss, params)),
                          backend=backend)
        if backend == "numpy":
            losses = [float(step(x=X, y=Y)[0]) for _ in range(30)]
            runs.append((losses, {p.name: np.array(g.values[p.name]) for p in params}))
        else:
            report = step.train({"x": X, "y": Y}, steps=30, device="cpu")
            assert "30 steps" in report and "ms per step" in report
            losses = [float(m) for m in re.findall(r"^step \d+: loss (\S+)", report, re.M)]
            runs.append((losses, {p.name: np.array(g.values[p.name]) for p in params}))
            fwd = gn.compile(out, backend="cuda")  # the forward-only export infers
            got = fwd(device="cpu", x=X)
            want = gn.compile(out, fast=False)(x=X)
            np.testing.assert_allclose(got, want, **_tol(dtype))
    (lw, pw), (lg, pg) = runs
    shown = [lw[k] for k in list(range(10)) + [29]]
    np.testing.assert_allclose(lg, shown, **_tol(dtype))
    for name in pw:
        np.testing.assert_allclose(pg[name], pw[name], err_msg=name, **_tol(dtype))


CASES = [("mlp", "mse", "float64", "adam"), ("mlp", "cross_entropy", "float64", "sgd"),
         ("mlp_relu", "bce", "float64", "momentum"), ("self_attention", "mse", "float64", "adam"),
         ("multi_head_attention", "cross_entropy", "float64", "sgd"),
         ("layer_norm", "mse", "float64", "adam"), ("mlp", "mse", "float32", "adam"),
         ("self_attention", "mse", "float32", "adam"), ("linear_3d", "mse", "float64", "sgd"),
         ("conv2d", "cross_entropy", "float64", "adam"), ("conv_block", "mse", "float64", "sgd"),
         ("conv_block", "mse", "float32", "adam"), ("block", "mse", "float64", "adam")]
CONV_BLOCK = ((2, 6, 6), lambda x: gn.nn.Sequential(  # conv2d_grad_input: a conv after a conv
    gn.nn.Conv2d(3, 3, padding=1, activation="relu"), gn.nn.Conv2d(2, 3, stride=2))(x))


@pytest.fixture(autouse=True, scope="module")
def _conv_block():
    import test_differential
    test_differential.LAYERS.setdefault("conv_block", CONV_BLOCK)
    yield
    test_differential.LAYERS.pop("conv_block", None)


@pytest.mark.parametrize("name,loss_kind,dtype,optimizer", CASES)
def test_training_steps_equal_torch_optim(name, loss_kind, dtype, optimizer):
    build = _network(name, loss_kind, dtype)
    g, loss, params, out = build()
    rng = np.random.default_rng(11)
    steps = [_layer_feeds(g, out, loss_kind, rng, 3) for _ in range(3)]
    differential.check_training(cuda_cpu, lambda: build()[:3], steps, optimizer)


@pytest.mark.parametrize("name", sorted(LAYERS) + ["conv_block"])
def test_every_layer_of_gn_nn_values_and_gradients(name):
    test_values_and_gradients_equal_the_reference(name, "mse", "float64")


@pytest.mark.parametrize("name,loss_kind,dtype", [("mlp", "cross_entropy", "float64"),
                                                   ("multi_head_attention", "cross_entropy", "float64"),
                                                   ("layer_norm", "mse", "float32"),
                                                   ("conv2d", "cross_entropy", "float32"),
                                                   ("block", "mse", "float32")])
def test_values_and_gradients_equal_the_reference(name, loss_kind, dtype):
    g, loss, params, out = _network(name, loss_kind, dtype)()
    rng = np.random.default_rng(5)
    outs = [loss, out, *gn.grad(loss, params)]
    differential.check_program(cuda_cpu, outs, [_layer_feeds(g, out, loss_kind, rng, b)
                                                for b in (3, 2)])


def test_an_op_it_cannot_print_is_refused_naming_op_and_node():
    g = gn.Graph("bmm")
    a = g.input("a", (2, 1, 3, 4))
    b = g.input("b", (5, 4, 2))
    out = gn.matmul(a, b, name="product") if hasattr(gn, "matmul") else (a @ b).named("product")
    with pytest.raises(gn.GraphError, match=r"cannot print op 'matmul' \(node 'product'.*broadcast"):
        gn.compile(out.sum(), backend="cuda")



def test_source_is_one_readable_file():
    g, out, loss = _xor()
    params = [g["W"], g["b"], g["w"]]
    prog = gn.compile([loss], updates=gn.optim.Adam(lr=0.05).build(params, gn.grad(loss, params)),
                      backend="cuda")
    src = prog.source
    assert src.startswith("/* xor: graphnn program")
    assert "__global__ void gn_relu_kernel" in src and "GN_FN void gn_relu_dx_mul_at" in src
    assert re.search(r"GN_FN void gn_update_\w+_at", src)  # one optimizer update kernel
    assert src.count("gn_gemm(") >= 4 and "cublasDgemmStridedBatched" in src
    assert "static int gn_alloc(long B)" in src and "int main(" in src
    kinds = {k for _, k in prog.kernels}
    assert {"elementwise", "reduction"} <= kinds


# -- files ---------------------------------------------------------------------------------------

def test_tensor_files_round_trip_and_refuse_bad_ones(tmp_path):
    decl = [("x", "float64", (None, 2)), ("y", "int64", (None,))]
    x, y = np.arange(6.0).reshape(3, 2), np.array([1, 2, 3])
    p = tmp_path / "d.bin"
    cudafile.write(p, "data", decl, [x, y], "float64")
    a, b = cudafile.read(p, "data", decl, "float64")
    np.testing.assert_array_equal(a, x)
    np.testing.assert_array_equal(b, y)
    raw = p.read_bytes()
    for bad, what in [(b"XXXXXXXX" + raw[8:], "magic"), (raw[:-3], "truncated"),
                      (raw[:40] + struct.pack("<Q", 1 << 40) + raw[48:], "batch size"),
                      (raw[:20], "header")]:
        p.write_bytes(bad)
        with pytest.raises(gn.FormatError, match=what):
            cudafile.read(p, "data", decl, "float64")
    p.write_bytes(raw)
    with pytest.raises(gn.FormatError, match="hash"):
        cudafile.read(p, "data", [("x", "float64", (None, 3)), ("y", "int64", (None,))], "float64")


@pytest.fixture(scope="module")
def xor_program(tmp_path_factory):
    need("g++")
    g, out, loss = _xor()
    params = [g["W"], g["b"], g["w"]]
    prog = gn.compile([loss], updates=gn.optim.Adam(lr=0.05).build(params, gn.grad(loss, params)),
                      backend="cuda")
    d = tmp_path_factory.mktemp("xorprog")
    paths = prog.save(d, build="cpu")
    data = d / "data.bin"
    prog.write_data(data, {"x": X, "y": Y})
    return prog, d, paths, data


def _hostile(raw: bytes) -> dict[str, bytes]:
    return {"magic": b"NOTGNTNS" + raw[8:], "truncated": raw[:-5], "header": raw[:30],
            "empty": b"", "count": raw[:16] + struct.pack("<I", 1 << 30) + raw[20:],
            "batch": raw[:40] + struct.pack("<Q", (1 << 62)) + raw[48:],
            "batch_big": raw[:40] + struct.pack("<Q", (1 << 31)) + raw[48:],  # in range, wrong size
            "batch_zero": raw[:40] + struct.pack("<Q", 0) + raw[48:],
            "extra": raw + b"\0" * 16, "hash": raw[:24] + b"0" * 16 + raw[40:],
            "version": raw[:8] + struct.pack("<I", 99) + raw[12:],
            "dtype": raw[:12] + struct.pack("<I", 1) + raw[16:],  # float32 for a float64 program
            "kind": raw[:20] + struct.pack("<I", 3) + raw[24:]}


@pytest.mark.parametrize("which", ["params", "data"])
def test_hostile_files_are_refused_cleanly_under_valgrind(xor_program, tmp_path, which):
    need("valgrind")
    prog, d, paths, data = xor_program
    exe = paths["executable"]
    good = {"params": d / "params.bin", "data": data}
    cases = _hostile(good[which].read_bytes())
    if which == "params":  # parameters have no batch axis: 0 is their batch field
        del cases["batch_zero"]
    for what, bad in cases.items():
        f = tmp_path / f"{which}_{what}.bin"
        f.write_bytes(bad)
        files = dict(good, **{which: f})
        r = subprocess.run(["valgrind", "--error-exitcode=99", "-q", exe, "run", "--params",
                            str(files["params"]), "--data", str(files["data"]), "--out",
                            str(tmp_path / "y.bin")], capture_output=True, text=True, timeout=120)
        assert r.returncode == 4, (what, r.returncode, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("model:")]
        assert len(lines) == 1 and str(f) in lines[0], (what, r.stderr)
        assert "Invalid read" not in r.stderr and "==" not in r.stderr, r.stderr


def test_the_executable_trains_and_writes_a_loadable_model(xor_program, tmp_path):
    prog, d, paths, data = xor_program
    out = tmp_path / "trained.bin"
    r = subprocess.run([paths["executable"], "train", "--data", str(data), "--steps", "50",
                        "--lr", "0.05", "--out", str(out)], capture_output=True, text=True,
                       timeout=60, cwd=d)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^50 steps, [\d.e+-]+ ms per step \([\d.e+-]+ ms per step after the first\)$",
                     r.stdout, re.M)
    trained = prog.read_params(out)
    assert set(trained) == {p.name for p in prog.params}
    assert int(trained["optim/step"]) == 50
    r = subprocess.run([paths["executable"], "fly"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


# -- the GPU build ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpu_build(tmp_path_factory):
    need("nvcc")
    if cuda_build.cublas_paths() is None:
        if CI:
            pytest.fail("cuBLAS (the nvidia-cublas wheel) is missing in CI")
        pytest.skip("cuBLAS headers are not installed (pip install nvidia-cublas)")
    # one program with most kinds of kernel: attention (batched matmuls, softmax), conv,
    # pooling, an embedding, slices, full and partial reductions, an Adam update group
    from graphnn.ops.api import apply
    from graphnn.ops.pooling import avg_pool, max_pool
    g = gn.Graph("mix", seed=0, dtype="float32")
    x = g.input("x", (None, 2, 7, 7))
    ids = g.input("ids", (None,), dtype="int64")
    seq = g.input("seq", (None, 4, 6))
    w, E = g.param("w", (3, 2, 3, 3)), g.param("E", (5, 3))
    h = gn.relu(gn.conv2d(x, w, padding=1))
    p = max_pool(h, (2, 2), pads=(1, 1, 1, 1))
    a = avg_pool(h, (3, 3), stride=(2, 2))
    e = apply("take", [E, ids], axis=0)
    att = gn.nn.SelfAttention(6, d_k=4)(seq)
    loss = ((p * p).sum() + gn.tanh(a).mean() + (gn.softmax(e, axis=1) * e).sum()
            + x[::-1, :, 1:3].max() + gn.mse(att, seq))
    params = list(g.params)
    prog = gn.compile([loss], updates=gn.optim.Adam(lr=0.01).build(params, gn.grad(loss, params)),
                      backend="cuda")
    d = tmp_path_factory.mktemp("gpu")
    src = d / "model.cu"
    src.write_text(prog.source)
    exe = d / "model"
    r = subprocess.run(cuda_build.gpu_command(str(src), str(exe), extra=("-Xptxas", "-v")),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return prog, exe, r.stderr


def test_gpu_build_compiles_links_and_has_no_register_spills(gpu_build):
    prog, exe, log = gpu_build
    assert exe.exists()
    entries = re.findall(r"Compiling entry function '(\w+)'.*?\n(?:.*\n)*?.*?(\d+) bytes spill stores, "
                         r"(\d+) bytes spill loads", log)
    assert entries, log[-2000:]
    spills = [(k, s, l) for k, s, l in entries if "_kernel" in k and (int(s) or int(l))]
    assert not spills, spills


def test_gpu_build_without_a_device_exits_with_its_own_code(gpu_build, tmp_path):
    prog, exe, _ = gpu_build
    if cuda_build.has_gpu():
        pytest.skip("a GPU is present")
    r = subprocess.run([str(exe), "infer", "--data", "x.bin", "--out", str(tmp_path / "y.bin")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == cuda_build.NO_DEVICE, (r.returncode, r.stderr)
    assert r.stderr.strip().count("\n") == 0 and "no CUDA device" in r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_build.has_gpu(), reason="needs a CUDA device")
def test_gpu_build_equals_the_cpu_build():
    g, loss, params, out = _network("multi_head_attention", "mse")()
    prog = gn.compile([loss, *gn.grad(loss, params)], backend="cuda")
    feeds = _layer_feeds(g, out, "mse", np.random.default_rng(0), 5)
    cpu = prog(device="cpu", **feeds)
    gpu = prog(device="gpu", **feeds)
    ref = gn.compile([loss, *gn.grad(loss, params)], fast=False)(**feeds)
    for a, b, c in zip(gpu, cpu, ref):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-11)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_build.has_gpu(), reason="needs a CUDA device")
def test_gpu_build_trains_as_the_numpy_target():
    for dtype, tol in (("float64", dict(rtol=1e-9, atol=1e-11)), ("float32", dict(rtol=1e-4, atol=1e-5))):
        build = _network("self_attention", "mse", dtype)
        g, loss, params, out = build()
        feeds = _layer_feeds(g, out, "mse", np.random.default_rng(1), 6)
        gpu = gn.compile([loss], backend="cuda", updates=gn.optim.Adam(lr=0.01).build(params, gn.grad(loss, params)))
        gpu.train(feeds, steps=5, device="gpu")
        g2, loss2, params2, _ = build()
        ref = gn.compile([loss2], updates=gn.optim.Adam(lr=0.01).build(params2, gn.grad(loss2, params2)))
        for _ in range(5):
            ref(**feeds)
        for p in params:
            np.testing.assert_allclose(g.values[p.name], g2.values[p.name], err_msg=p.name, **tol)


def test_cli_writes_and_builds_the_program_directory(tmp_path):
    need("g++")
    g, out, loss = _xor()
    g.save(tmp_path / "xor.json")
    from graphnn.cli import main
    assert main(["compile", str(tmp_path / "xor.json"), "--backend", "cuda", "--build", "cpu",
                 "--optimizer", "sgd", "--lr", "0.1", "-o", str(tmp_path / "build")]) == 0
    d = tmp_path / "build"
    assert {"model.cu", "params.bin", "Makefile", "model_cpu"} <= {f.name for f in d.iterdir()}
    cudafile.write(d / "data.bin", "data", [g["x"], g["y"]], [X, Y], "float64")
    r = subprocess.run(["./model_cpu", "train", "--data", "data.bin", "--steps", "5", "--out",
                        "trained.bin"], cwd=d, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["./model_cpu", "infer", "--data", "data.bin", "--out", "loss.bin"], cwd=d,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    loss_now, = cudafile.read(d / "loss.bin", "outputs", [g["loss"]], "float64")
    want = gn.compile(loss, fast=False)(x=X, y=Y)
    np.testing.assert_allclose(loss_now, want, rtol=1e-12)  # infer: params.bin, no update
    # --outputs: a forward-only export, which infers from x alone and refuses to train
    assert main(["compile", str(tmp_path / "xor.json"), "--backend", "cuda", "--build", "cpu",
                 "--outputs", "out", "-o", str(tmp_path / "infer")]) == 0
    f = tmp_path / "infer"
    cudafile.write(f / "x.bin", "data", [g["x"]], [X], "float64")
    r = subprocess.run(["./model_cpu", "infer", "--data", "x.bin", "--out", "y.bin"], cwd=f,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    y, = cudafile.read(f / "y.bin", "outputs", [g["out"]], "float64")
    np.testing.assert_allclose(y, gn.compile(out, fast=False)(x=X), rtol=1e-12)
    r = subprocess.run(["./model_cpu", "train", "--data", "x.bin", "--out", "p.bin"], cwd=f,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "forward-only" in r.stderr


def test_layout_ops_and_their_gradients_equal_the_reference():
    """Slices (negative index, reversed step, new axis), concat, a 3-d transpose, max over an
    axis, broadcast_to, reshape and the scatter of their gradients."""
    g = gn.Graph("layout", seed=0)
    x = g.input("x", (None, 3, 4))
    W = g.param("W", (4, 5))
    a = x[:, 1:, ::2]
    r = x[::-1, -1, ::-1][:, None, :]  # the batch reversed too
    b = x[:, 0, :]
    c = gn.concat([b, b * 2.0, r.reshape(-1, 4)], axis=1)
    t = x.transpose((0, 2, 1))
    m = gn.max(t, axis=2)
    bc = gn.broadcast_to(W.sum(axis=1, keepdims=True).T, (3, 4))
    s = (c.sum() + a.sum() + (m @ W).sum() + gn.tanh(t).mean(axis=(1, 2)).sum()
         + (gn.sigmoid(x[:, :, 1:3]) * 3.0).sum() + bc.sum())
    outs = [s, c, m, bc, *gn.grad(s, [x, W])]
    rng = np.random.default_rng(0)
    differential.check_program(cuda_cpu, outs, [{"x": rng.normal(size=(b_, 3, 4))} for b_ in (3, 2)])


def test_pooling_and_padding_and_their_gradients_equal_the_reference():
    """max_pool (a -inf pad, windows, max), avg_pool (dilated, padded), pad with a value;
    their gradients go through windows_adjoint and the pad's slice."""
    from graphnn.ops.pooling import avg_pool, max_pool, pad
    g = gn.Graph("pool", seed=0)
    x = g.input("x", (None, 2, 7, 7))
    w = g.param("w", (3, 2, 3, 3))
    h = gn.relu(gn.conv2d(x, w, padding=1))
    p = max_pool(h, (2, 2), pads=(1, 1, 1, 1))
    a = avg_pool(h, (3, 3), stride=(2, 2), dilation=(1, 2), pads=(1, 1, 1, 1))
    q = pad(h, (0, 0, 1, 2, 0, 0, 2, 1), value=0.5)
    s = (p * p).sum() + q.mean() + gn.tanh(a).sum()
    outs = [s, p, a, q, *gn.grad(s, [x, w])]
    rng = np.random.default_rng(0)
    differential.check_program(cuda_cpu, outs, [{"x": rng.normal(size=(b_, 2, 7, 7))} for b_ in (3, 2)])


def test_embedding_lookups_and_their_gradients_equal_the_reference():
    """take with indices fed at run time (negative ones too) and with constant indices
    along another axis; the table's gradient is take_adjoint."""
    from graphnn.ops.api import apply
    g = gn.Graph("emb", seed=0)
    ids = g.input("ids", (None, 3), dtype="int64")
    E, W = g.param("E", (7, 4)), g.param("W", (4, 2))
    e = apply("take", [E, ids], axis=0)
    e2 = apply("take", [W, g.const("k", np.array([1, -1, 0]))], axis=1)
    s = gn.tanh(e @ W).sum() + (e2 * e2).sum()
    outs = [s, e, *gn.grad(s, [E, W])]
    rng = np.random.default_rng(0)
    differential.check_program(cuda_cpu, outs, [{"ids": rng.integers(-7, 7, size=(b_, 3))}
                                                for b_ in (3, 2)])


def test_random_programs_over_the_catalog():
    """The differential harness's random programs (every op of the catalog, hostile names,
    their gradients, a training step) through the CPU build: a few fixed examples here
    (each one is a C++ build); many more were run by hand while writing the target."""
    from hypothesis import HealthCheck, Phase, given, settings, strategies as st
    import test_differential

    @settings(max_examples=8, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data):
        test_differential._random_program(cuda_cpu, data)
    run()


@pytest.mark.parametrize("case", differential.SIMULTANEOUS_CASES)
def test_updates_are_simultaneous_and_outputs_precede_them(case):
    """Values that are (views of) parameters the step writes are read as they were before
    the step (snapshots, updates written after every reader), as in the NumPy targets."""
    need("g++")
    differential.check_simultaneous_updates(cuda_cpu, case)


def _harness_cases():
    import inspect
    import test_differential
    return sorted(name for name, f in vars(test_differential).items()
                  if name.startswith("test_") and callable(f)
                  and list(inspect.signature(f).parameters) == ["target"])


@pytest.mark.parametrize("name", _harness_cases())
def test_the_differential_harness_special_cases(name):
    """Every test of tests/test_differential.py that takes only a target (views kept alive
    across reshape and transpose, in-place chains, 0-d outputs, empty constants, ...)."""
    import test_differential
    getattr(test_differential, name)(cuda_cpu)


# -- mini-batches (train --batch, --shuffle) ----------------------------------------------------------

def _mlp_data(rows, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(rows, 2)), "y": rng.normal(size=(rows, 1))}


def _xor_step(backend, opt="adam"):
    g, out, loss = _xor()
    params = [g["W"], g["b"], g["w"]]
    optim = gn.optim.Adam(lr=0.05) if opt == "adam" else gn.optim.SGD(lr=0.1)
    return g, params, gn.compile([loss], updates=optim.build(params, gn.grad(loss, params)),
                                 backend=backend)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("seed", [None, 7])
def test_mini_batches_equal_the_numpy_target_steps(seed, drop_last):
    """`train --batch 3` over 10 rows: 4 steps per epoch (rows 0-2, 3-5, 6-8 and the smaller
    batch of row 9, as Trainer.fit), or with --drop-last 3 (row 9 left out, as
    Trainer.fit(drop_last=True)), 8 steps; with --shuffle, the rows of
    cuda_build.batch_rows (the program's splitmix64 order, reproduced in Python)."""
    need("g++")
    data = _mlp_data(10)
    rows = cuda_build.batch_rows(10, 3, 8, seed, drop_last=drop_last)
    per_epoch = 3 if drop_last else 4
    if seed is None:
        starts = [0, 3, 6] if drop_last else [0, 3, 6, 9]
        want_rows = [np.arange(a, min(a + 3, 10)) for a in (starts * 3)[:8]]
        assert all(np.array_equal(a, b) for a, b in zip(rows, want_rows))
    else:  # a fresh permutation per epoch: each epoch's rows are distinct
        for e in range(2):
            used = np.concatenate(rows[per_epoch * e:per_epoch * (e + 1)])
            assert len(set(used.tolist())) == len(used) == (9 if drop_last else 10)
        assert not np.array_equal(np.concatenate(rows[:3]),
                                  np.concatenate(rows[per_epoch:per_epoch + 3]))
    g, params, step = _xor_step("numpy")
    losses = [float(step(**{k: v[r] for k, v in data.items()})[0]) for r in rows]
    want = {p.name: np.array(g.values[p.name]) for p in params}
    g2, params2, prog = _xor_step("cuda")
    prog.cpu_flags = ("-O0",)
    report = prog.train(data, steps=8, batch_size=3, shuffle=seed is not None,
                        seed=seed or 0, device="cpu", drop_last=drop_last)
    epoch = ("3 steps per epoch, 1 rows left out of each epoch" if drop_last else
             "4 steps per epoch, the last of 1 rows")
    assert re.search(r"^batch size 3, 10 data rows: " + epoch + ", " +
                     ("in order" if seed is None else f"shuffled \\(seed {seed}\\)") + "$",
                     report, re.M), report
    got = [float(m) for m in re.findall(r"^step \d+: loss (\S+)", report, re.M)]
    np.testing.assert_allclose(got, losses, rtol=1e-10, atol=1e-12)
    for p in params2:
        np.testing.assert_allclose(g2.values[p.name], want[p.name], rtol=1e-10, atol=1e-12,
                                   err_msg=p.name)


@pytest.mark.parametrize("drop_last", [False, True])
def test_mini_batches_in_order_equal_trainer_fit(drop_last):
    """Two epochs of `train --batch 4` over 10 rows equal Trainer.fit(batch_size=4,
    shuffle=False, epochs=2): 3 steps per epoch, the last on 2 rows (its mean divides by
    2), or with drop_last 2 steps: the same steps, the same parameters."""
    need("g++")
    data = _mlp_data(10, seed=3)
    g, out, loss = _xor()
    tr = gn.Trainer(loss, optimizer=gn.optim.SGD(lr=0.1), backend="numpy")
    tr.fit(data, epochs=2, batch_size=4, shuffle=False, drop_last=drop_last, verbose=False)
    g2, params2, prog = _xor_step("cuda", opt="sgd")
    prog.cpu_flags = ("-O0",)
    prog.train(data, steps=4 if drop_last else 6, batch_size=4, device="cpu", drop_last=drop_last)
    for p in params2:
        np.testing.assert_allclose(g2.values[p.name], g.values[p.name], rtol=1e-10, atol=1e-12,
                                   err_msg=p.name)


@pytest.fixture(scope="module")
def row_counter(tmp_path_factory):
    """A program whose SGD step (lr 1) subtracts from w[r] the number of times row r of the
    data (the identity matrix) is in the batch: w counts the visits of every row."""
    need("g++")
    g = gn.Graph("rows", seed=0)
    x = g.input("x", (None, 12))
    w = g.param("w", (12, 1), init="zeros")
    loss = (x @ w).sum().named("loss")
    prog = gn.compile([loss], updates=gn.optim.SGD(lr=1.0).build([w], gn.grad(loss, [w])),
                      backend="cuda")
    d = tmp_path_factory.mktemp("rows")
    paths = prog.save(d, build="cpu")
    prog.write_data(d / "data.bin", {"x": np.eye(12)})
    return prog, paths["executable"], d


def _visits(row_counter, tmp_path, *args):
    prog, exe, d = row_counter
    out = tmp_path / "w.bin"
    r = subprocess.run([exe, "train", "--data", str(d / "data.bin"), "--out", str(out), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return -prog.read_params(out)["w"].ravel(), r.stdout


def test_shuffle_uses_every_row_once_per_epoch_and_is_deterministic(row_counter, tmp_path):
    for e in (1, 2, 3):  # after each epoch, every row counted e times: once per epoch
        visits, _ = _visits(row_counter, tmp_path, "--batch", "4", "--shuffle", "11",
                            "--steps", str(3 * e))
        np.testing.assert_array_equal(visits, np.full(12, float(e)))
    # 5 rows per step: 2 steps per epoch, 2 rows of each epoch's order left out
    visits, _ = _visits(row_counter, tmp_path, "--batch", "5", "--shuffle", "11", "--steps", "2")
    assert sorted(visits.tolist()) == [0.0] * 2 + [1.0] * 10
    want = np.zeros(12)
    for r in cuda_build.batch_rows(12, 5, 2, seed=11):
        want[r] += 1
    np.testing.assert_array_equal(visits, want)  # the rows batch_rows lists
    # the same seed, the same rows; another seed, other rows (an epoch and one batch more)
    runs = [_visits(row_counter, tmp_path, "--batch", "3", "--shuffle", seed, "--steps", "5")
            for seed in ("5", "5", "6")]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    losses = [re.findall(r"^step \d+: loss (\S+)", out, re.M) for _, out in runs]
    assert len(losses[0]) == 5 and losses[0] == losses[1]
    assert not np.array_equal(runs[0][0], runs[2][0])
    for seed, (visits, _) in zip((5, 6), (runs[0], runs[2])):
        want = np.ones(12)
        want[cuda_build.batch_rows(12, 3, 5, seed=seed)[4]] += 1
        np.testing.assert_array_equal(visits, want)
    # in order, no shuffle: rows 0-3, 4-7, 8-11, 0-3
    visits, _ = _visits(row_counter, tmp_path, "--batch", "4", "--steps", "4")
    np.testing.assert_array_equal(visits, [2.0] * 4 + [1.0] * 8)
    # 5 rows a step: rows 0-4, 5-9 and the smaller batch 10-11 (an epoch), then 0-4; with
    # --drop-last, rows 10-11 are left out: 0-4, 5-9, then 0-4 and 5-9 again
    visits, out = _visits(row_counter, tmp_path, "--batch", "5", "--steps", "4")
    np.testing.assert_array_equal(visits, [2.0] * 5 + [1.0] * 7)
    assert "3 steps per epoch, the last of 2 rows" in out
    visits, out = _visits(row_counter, tmp_path, "--batch", "5", "--steps", "4", "--drop-last")
    np.testing.assert_array_equal(visits, [2.0] * 10 + [0.0] * 2)
    assert "2 steps per epoch, 2 rows left out of each epoch" in out


def test_bad_batch_options_are_usage_errors(row_counter, tmp_path):
    prog, exe, d = row_counter
    data = str(d / "data.bin")
    for args, msg in [(["train", "--batch", "13", "--steps", "1"], "has 12 rows"),
                      (["train", "--batch", "0"], "usage"), (["train", "--batch", "-2"], "usage"),
                      (["train", "--batch", "3x"], "usage"), (["train", "--shuffle", "-1"], "usage"),
                      (["train", "--shuffle", "99999999999999999999"], "usage"),
                      (["infer", "--batch", "2"], "options of train")]:
        r = subprocess.run([exe, *args, "--data", data, "--out", str(tmp_path / "o.bin")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and msg in r.stderr, (args, r.returncode, r.stderr)
    with pytest.raises(ValueError, match="batch_size"):
        prog.train({"x": np.eye(12)}, steps=1, batch_size=0)
    with pytest.raises(gn.GraphError, match=r"exited with 2 \(usage\).*has 12 rows"):
        prog.train({"x": np.eye(12)}, steps=1, batch_size=20, device="cpu")


# -- indices out of range (take) ------------------------------------------------------------------

HOSTILE_NAME = 'emb"\n*/ \x1b[2J\\'


def test_an_index_out_of_range_exits_naming_the_node(tmp_path):
    """NumPy raises IndexError for take(E, 7) with 7 rows; the program records the first
    index out of range in the kernel and exits with code 6 after the step, naming the node
    (escaped: its name is untrusted) and writing nothing."""
    need("g++")
    from graphnn.ops.api import apply

    def build():
        g = gn.Graph("emb", seed=0)
        ids = g.input("ids", (None, 3), dtype="int64")
        E, W = g.param("E", (7, 4)), g.param("W", (4, 2))
        e = apply("take", [E, ids], axis=0).named(HOSTILE_NAME)
        loss = gn.tanh(e @ W).sum().named("loss")
        return g, loss, [E, W]

    g, loss, params = build()
    fwd = gn.compile(loss, backend="cuda")
    fwd.cpu_flags = ("-O0",)
    ok = np.array([[0, 6, -7], [3, -1, 2]])
    np.testing.assert_allclose(fwd(device="cpu", ids=ok), gn.compile(loss, fast=False)(ids=ok), rtol=1e-12)
    exe = fwd.executable("cpu")
    fwd.write_params(tmp_path / "p.bin")
    for bad, index in (([[0, 7, 1], [2, 3, 4]], 7), ([[0, 1, 1], [2, -8, 4]], -8)):
        with pytest.raises(IndexError):
            gn.compile(loss, fast=False)(ids=np.array(bad))
        fwd.write_data(tmp_path / "x.bin", {"ids": np.array(bad)})
        y = tmp_path / "y.bin"
        r = subprocess.run([exe, "infer", "--params", str(tmp_path / "p.bin"), "--data",
                            str(tmp_path / "x.bin"), "--out", str(y)], capture_output=True,
                           timeout=60)
        assert r.returncode == cuda_build.INDEX_OUT_OF_RANGE, (r.returncode, r.stderr)
        err = r.stderr.decode("ascii")  # printable ASCII only: the name is escaped
        assert err.count("\n") == 1 and "\x1b" not in err, err
        assert err == (f"model: node {ascii(HOSTILE_NAME)} (take along axis 0): index {index} is out "
                       "of range for an axis of size 7; nothing written\n"), err
        assert not y.exists()
    # a training step: its own exit code, the step named, through Python a GraphError
    g, loss, params = build()
    step = gn.compile([loss], updates=gn.optim.SGD(lr=0.1).build(params, gn.grad(loss, params)),
                      backend="cuda")
    step.cpu_flags = ("-O0",)
    before = {p.name: np.array(g.values[p.name]) for p in params}
    with pytest.raises(gn.GraphError, match=r"exited with 6 \(index out of range\): model: node "
                                            r".*index 9 is out of range.*\(step 2\)"):
        step.train({"ids": np.array([[0, 1, 2], [3, 4, 5], [1, 9, 0], [2, 2, 2]])}, steps=3,
                   batch_size=2, device="cpu")
    for p in params:  # nothing written back
        np.testing.assert_array_equal(g.values[p.name], before[p.name])
    with pytest.raises(gn.GraphError, match="exited with 6"):
        step(device="cpu", ids=np.array([[0, 1, 70]]))


# -- sanitizers ------------------------------------------------------------------------------------

SANITIZE = ("-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all")
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=97",
                 "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98"}


@pytest.fixture(scope="module")
def asan_xor(xor_program):
    """The XOR program's CPU build with AddressSanitizer (leaks included) and
    UndefinedBehaviorSanitizer, built once for the module."""
    need("g++")
    prog, d, paths, data = xor_program
    exe = d / "model_asan"
    r = subprocess.run(cuda_build.cpu_command(paths["source"], str(exe), SANITIZE),
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "sanitize" in r.stderr and not CI:
        pytest.skip(f"the C++ compiler has no sanitizer runtime: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    return exe


def _sanitized(exe, *args):
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, **SANITIZER_ENV))
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r


@pytest.mark.parametrize("which", ["params", "data"])
def test_hostile_files_are_refused_cleanly_under_sanitizers(xor_program, asan_xor, tmp_path, which):
    prog, d, paths, data = xor_program
    good = {"params": d / "params.bin", "data": data}
    cases = _hostile(good[which].read_bytes())
    if which == "params":
        del cases["batch_zero"]
    for what, bad in cases.items():
        f = tmp_path / f"{which}_{what}.bin"
        f.write_bytes(bad)
        files = dict(good, **{which: f})
        for args in (("run", "--out", tmp_path / "y.bin"),
                     ("train", "--steps", 2, "--batch", 2, "--shuffle", 3, "--out", tmp_path / "p.bin")):
            r = _sanitized(asan_xor, args[0], "--params", files["params"], "--data", files["data"],
                           *args[1:])
            assert r.returncode == 4, (what, args[0], r.returncode, r.stderr)
            lines = [ln for ln in r.stderr.splitlines() if ln.startswith("model:")]
            assert len(lines) == 1 and str(f) in lines[0], (what, r.stderr)
            assert r.stderr.count("\n") == 1, r.stderr


def test_mini_batch_training_is_clean_under_sanitizers(xor_program, asan_xor, tmp_path):
    prog, d, paths, data = xor_program
    for extra in ((), ("--batch", 3), ("--batch", 2, "--shuffle", 9), ("--shuffle", 0)):
        r = _sanitized(asan_xor, "train", "--params", d / "params.bin", "--data", data,
                       "--steps", 5, "--out", tmp_path / "p.bin", *extra)
        assert r.returncode == 0, (extra, r.stderr)
        assert prog.read_params(tmp_path / "p.bin")["optim/step"] == 5
    for args in (("train", "--batch", 5, "--steps", 1), ("train", "--shuffle", "x"),
                 ("run", "--batch", 2), ("train", "--steps")):
        r = _sanitized(asan_xor, *args, "--data", data, "--out", tmp_path / "p.bin")
        assert r.returncode == 2, (args, r.stderr)
