"""Standalone CUDA programs (backend 'cuda'): write, build and run them.

`gn.compile(..., backend="cuda")` returns a `CudaProgram`: its `source` is the
generated `model.cu` (targets/cuda.py); `save(directory)` writes the program
directory (model.cu, params.bin, Makefile) and builds the executable with nvcc
when nvcc is found; calling it (`prog(x=X, y=Y)`) builds the program once into a
temporary directory (the CPU build, `-DGN_CPU`, unless `device="gpu"`) and runs
it as a subprocess on tensor files (graphnn/cudafile.py), like the other targets:
outputs come back as NumPy arrays and parameter updates land in `g.values`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from .. import cudafile
from ..errors import FormatError, GraphError

EXIT_CODES = {0: "ok", 2: "usage", 3: "no CUDA device", 4: "bad file", 5: "CUDA error",
              6: "index out of range"}
NO_DEVICE = 3
INDEX_OUT_OF_RANGE = 6
_MASK64 = (1 << 64) - 1


def _splitmix64(state: int) -> tuple[int, int]:
    """(new state, output) of splitmix64, the generator of `./model train --shuffle`."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def batch_rows(rows: int, batch_size: int, steps: int, seed: int | None = None,
               drop_last: bool = False) -> list[np.ndarray]:
    """The data rows each step of `./model train --batch batch_size [--shuffle seed]
    [--drop-last]` takes, for a data file of `rows` rows: the program's own order,
    reproduced in Python.

    An epoch takes the rows in the epoch's order, batch_size at a time, its last step the
    rows % batch_size rows left (a smaller batch), as Trainer.fit does; with drop_last
    those rows are left out of the epoch (Trainer.fit(drop_last=True)). The order is 0..rows-1, or with a seed a fresh permutation per epoch:
    Fisher-Yates over the identity (k from rows-1 down to 1 swaps k with r % (k + 1)),
    r drawn from splitmix64 seeded with `seed`, one stream over all epochs. It is not
    NumPy's stream: Trainer.fit(shuffle=True, seed=s) visits the rows in another order."""
    rows, batch_size, steps = int(rows), int(batch_size), int(steps)
    if not 1 <= batch_size <= rows:
        raise ValueError(f"batch_size {batch_size} must be between 1 and the {rows} rows")
    if seed is not None and not 0 <= int(seed) <= _MASK64:
        raise ValueError(f"seed {seed} must be an integer in [0, 2**64)")
    per_epoch = rows // batch_size if drop_last else -(-rows // batch_size)
    state = None if seed is None else int(seed)
    order = np.arange(rows)
    out = []
    for s in range(steps):
        j = s % per_epoch
        if state is not None and j == 0:
            order = np.arange(rows)
            for k in range(rows - 1, 0, -1):
                state, r = _splitmix64(state)
                m = r % (k + 1)
                order[k], order[m] = order[m], order[k]
        out.append(order[j * batch_size:(j + 1) * batch_size].copy())
    return out
ARCH = "sm_90"


def cxx() -> str | None:
    """The C++ compiler of the CPU build ($CXX, g++, c++, clang++)."""
    for c in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if c and shutil.which(c):
            return c
    return None


def cublas_paths() -> tuple[str, str] | None:
    """(include dir, lib dir) of cuBLAS for CUDA 13: the `nvidia-cublas` wheel's layout
    (site-packages/nvidia/cu13/{include,lib}), else $CUDA_HOME or nvcc's own tree."""
    cands = []
    try:
        import nvidia  # namespace package of NVIDIA's wheels
        for root in list(nvidia.__path__):
            cands.append(os.path.join(root, "cu13"))
    except ImportError:
        pass
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if home:
            cands.append(home)
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for c in cands:
        inc = os.path.join(c, "include")
        for lib in (os.path.join(c, "lib"), os.path.join(c, "lib64")):
            if os.path.exists(os.path.join(inc, "cublas_v2.h")) and os.path.isdir(lib) and \
                    any(f.startswith("libcublas.so") for f in os.listdir(lib)):
                return inc, lib
    return None


def _cublas_lib(lib: str) -> str:
    names = sorted(f for f in os.listdir(lib) if f.startswith("libcublas.so"))
    return "-lcublas" if "libcublas.so" in names else f"-l:{names[0]}"


def gpu_command(src: str, exe: str, extra=()) -> list[str]:
    """nvcc command line of the GPU build (cuBLAS found by cublas_paths)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise GraphError("the GPU build needs nvcc (CUDA 13) on PATH")
    paths = cublas_paths()
    if paths is None:
        raise GraphError("the GPU build needs cuBLAS headers and libraries: pip install "
                         "'nvidia-cublas>=13,<14' (or set CUDA_HOME)")
    inc, lib = paths
    return [nvcc, "-O3", f"-arch={ARCH}", "-I", inc, *extra, src, "-o", exe, "-L", lib,
            _cublas_lib(lib), "-Xlinker", f"-rpath={lib}"]


def cpu_command(src: str, exe: str, extra=()) -> list[str]:
    """C++ compiler command line of the CPU build (-DGN_CPU)."""
    c = cxx()
    if c is None:
        raise GraphError("the CPU build of a CUDA program needs a C++ compiler (g++ or c++)")
    opt = () if any(str(e).startswith("-O") for e in extra) else ("-O2",)
    return [c, *opt, "-DGN_CPU", *extra, "-x", "c++", src, "-o", exe, "-lm"]


def makefile() -> str:
    paths = cublas_paths()
    inc, lib = paths if paths else ("$(CUDA_HOME)/include", "$(CUDA_HOME)/lib64")
    link = _cublas_lib(lib) if paths else "-lcublas"
    return f"""# Build the generated program (graphnn, backend 'cuda').
#   make          GPU build with nvcc and cuBLAS -> ./model
#   make cpu      CPU build (-DGN_CPU, host loops, reference GEMM) -> ./model_cpu
NVCC ?= nvcc
CXX ?= g++
ARCH ?= {ARCH}
CUBLAS_INC ?= {inc}
CUBLAS_LIB ?= {lib}

model: model.cu
\t$(NVCC) -O3 -arch=$(ARCH) -I $(CUBLAS_INC) model.cu -o model -L $(CUBLAS_LIB) {link} -Xlinker -rpath=$(CUBLAS_LIB)

cpu: model_cpu
model_cpu: model.cu
\t$(CXX) -O2 -DGN_CPU -x c++ model.cu -o model_cpu -lm

.PHONY: cpu
"""


def _run(cmd, what: str, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise GraphError(f"{what} failed ({' '.join(cmd[:3])} ...):\n{r.stderr[-4000:]}")
    return r


def has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0 and "GPU" in r.stdout


class CudaProgram:
    """A compiled CUDA program: its source, its tensor declarations, and (once built)
    its executable, called on files like the other targets' programs are called."""

    backend = "cuda"
    cpu_flags = ("-O2",)  # the CPU build's optimization (tests use -O0: it builds faster)

    def __init__(self, graph, function, source: str, printer, key: str, single: bool, name: str):
        self.graph = graph
        self.function = function
        self.source = source
        self.key = key
        self.single = single
        self.name = name
        self.dtype = printer.dtype
        args = [n for n in function.order() if printer.is_arg(n)]
        self.params = [a for a in args if a.op == "param"]
        self.inputs = [a for a in args if a.op != "param"]
        self.outputs = list(function.outputs)
        self.arg_names = [a.name for a in args]
        self.kernels = list(printer.kernel_list)  # (name, kind) of every kernel defined
        self.launches = sum(1 for ln in source.split("\n") if ln.strip().startswith(("GN_LAUNCH", "gn_gemm(")))
        self._exe: dict[str, str] = {}
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __repr__(self):
        return (f"<graphnn.CudaProgram {self.graph.name!r} args={self.arg_names} "
                f"outputs={[o.name for o in self.outputs]}>")

    # -- files -------------------------------------------------------------------------------
    def param_values(self, overrides: dict | None = None) -> list[np.ndarray]:
        overrides = overrides or {}
        out = []
        for p in self.params:
            v = overrides.get(p.name, self.graph.values.get(p.name))
            if v is None:
                raise GraphError(f"missing value of parameter {p.name!r}")
            out.append(np.asarray(v, dtype=p.dtype))
        return out

    def write_params(self, path, overrides: dict | None = None) -> None:
        cudafile.write(path, "params", self.params, self.param_values(overrides), self.dtype)

    def write_data(self, path, feeds: dict) -> None:
        arrays = []
        for n in self.inputs:
            if n.name not in feeds:
                raise GraphError(f"missing feed {n.name!r} ({n.op}, shape {n.shape})")
            arrays.append(np.asarray(feeds[n.name], dtype=n.dtype))
        cudafile.write(path, "data", self.inputs, arrays, self.dtype)

    def read_params(self, path) -> dict[str, np.ndarray]:
        return dict(zip((p.name for p in self.params),
                        cudafile.read(path, "params", self.params, self.dtype)))

    def read_outputs(self, path) -> list[np.ndarray]:
        return cudafile.read(path, "outputs", self.outputs, self.dtype)

    def load_params(self, path) -> None:
        """Parameters from a file the program wrote (a trained model) into g.values."""
        for name, v in self.read_params(path).items():
            old = self.graph.values.get(name)
            if isinstance(old, np.ndarray) and old.shape == v.shape and old.flags.writeable:
                np.copyto(old, v)
            else:
                self.graph.values[name] = v

    # -- build -------------------------------------------------------------------------------
    def save(self, directory, build: str | bool = "auto") -> dict:
        """Write model.cu, params.bin and a Makefile into `directory`; build `model` with
        nvcc when nvcc is found (build="auto"), always ("gpu"), the CPU build ("cpu"),
        or not at all (False). Returns the paths written."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        src = os.path.join(directory, "model.cu")
        with open(src, "w", encoding="utf-8") as f:
            f.write(self.source)
        with open(os.path.join(directory, "Makefile"), "w", encoding="utf-8") as f:
            f.write(makefile())
        out = {"source": src, "makefile": os.path.join(directory, "Makefile")}
        if self.params:
            out["params"] = os.path.join(directory, "params.bin")
            self.write_params(out["params"])
        if build == "auto":
            build = "gpu" if shutil.which("nvcc") and cublas_paths() else False
        if build in ("gpu", True):
            out["executable"] = os.path.join(directory, "model")
            _run(gpu_command(src, out["executable"]), "nvcc")
        elif build == "cpu":
            out["executable"] = os.path.join(directory, "model_cpu")
            _run(cpu_command(src, out["executable"]), "the CPU build")
        return out

    def executable(self, device: str = "auto") -> str:
        """The built program (built once into a temporary directory): the GPU build when
        device="gpu" (or "auto" with a GPU present), else the CPU build."""
        kind = ("gpu" if has_gpu() and shutil.which("nvcc") else "cpu") if device == "auto" else device
        if kind not in self._exe:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="graphnn-cuda-")
            d = self._tmp.name
            src = os.path.join(d, "model.cu")
            with open(src, "w", encoding="utf-8") as f:
                f.write(self.source)
            exe = os.path.join(d, "model" if kind == "gpu" else "model_cpu")
            _run(gpu_command(src, exe) if kind == "gpu" else cpu_command(src, exe, self.cpu_flags),
                 "building the CUDA program")
            self._exe[kind] = exe
        return self._exe[kind]

    # -- running -----------------------------------------------------------------------------
    def _exec(self, args, device) -> subprocess.CompletedProcess:
        exe = self.executable(device)
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=3600)
        if r.returncode != 0:
            what = EXIT_CODES.get(r.returncode, "crashed")
            raise GraphError(f"CUDA program {self.name!r} exited with {r.returncode} ({what}): "
                             f"{r.stderr.strip()[-2000:]}")
        return r

    def __call__(self, **feeds):
        """One run: outputs for `feeds` (parameters default to g.values); a training
        step also writes its updated parameters back into g.values. `device="cpu"`
        (or "gpu") picks the build; a graph input named `device` stays a feed."""
        device = "auto"
        if "device" in feeds and not ("device" in self.graph and
                                      self.graph["device"].op in ("input", "param")):
            device = feeds.pop("device")
        over = {k: v for k, v in feeds.items() if k in self.graph and self.graph[k].op == "param"}
        data = {k: v for k, v in feeds.items() if k not in over}
        unknown = set(data) - {n.name for n in self.inputs}
        unknown = {k for k in unknown if k not in self.graph or self.graph[k].op != "input"}
        if unknown:
            raise GraphError(f"unknown feed(s) {sorted(unknown)}; program takes {self.arg_names}")
        with tempfile.TemporaryDirectory(prefix="graphnn-run-") as d:
            p, x, y, p2 = (os.path.join(d, f) for f in ("p.bin", "x.bin", "y.bin", "p2.bin"))
            self.write_params(p, over)
            args = ["run", "--params", p, "--out", y]
            if self.inputs:
                self.write_data(x, data)
                args += ["--data", x]
            if self.function.updates:
                args += ["--params-out", p2]
            self._exec(args, device)
            outs = self.read_outputs(y)
            if self.function.updates:
                new = self.read_params(p2)
                for name, v in new.items():
                    target = over.get(name, self.graph.values.get(name))
                    if isinstance(target, np.ndarray) and target.shape == v.shape and \
                            target.flags.writeable:
                        np.copyto(target, v)
                    else:
                        self.graph.values[name] = v
        outs = [o if o.ndim else o[()] for o in outs]
        return outs[0] if self.single else tuple(outs)

    def train(self, feeds: dict, steps: int, lr: float | None = None, device: str = "auto",
              batch_size: int | None = None, shuffle: bool = False, seed: int = 0,
              drop_last: bool = False) -> str:
        """`./model train` on `feeds`: the trained parameters land in g.values; returns
        the program's report (loss, ms per step).

        Every step runs on the whole data, or with `batch_size` on the next batch_size
        rows (`--batch`): an epoch ends with a smaller batch of the rows left, as
        Trainer.fit, or with `drop_last` leaves them out (`--drop-last`); `shuffle=True` draws a new
        order of the rows every epoch from `seed` (`--shuffle seed`; `batch_rows` lists
        the rows of each step; the order is not NumPy's, so not Trainer.fit's)."""
        if not self.function.updates:
            raise GraphError("train needs a training program (compile with updates=...)")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if shuffle and (isinstance(seed, bool) or int(seed) != seed or not 0 <= seed <= _MASK64):
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        with tempfile.TemporaryDirectory(prefix="graphnn-train-") as d:
            p, x, p2 = (os.path.join(d, f) for f in ("p.bin", "x.bin", "p2.bin"))
            self.write_params(p)
            args = ["train", "--params", p, "--steps", str(int(steps)), "--out", p2]
            if self.inputs:
                self.write_data(x, feeds)
                args += ["--data", x]
            if lr is not None:
                args += ["--lr", repr(float(lr))]
            if batch_size is not None:
                args += ["--batch", str(int(batch_size))]
            if shuffle:
                args += ["--shuffle", str(int(seed))]
            if drop_last:
                args.append("--drop-last")
            r = self._exec(args, device)
            self.load_params(p2)
        return r.stdout


def compile_cuda(fn, graph, name: str, key: str, single: bool) -> CudaProgram:
    from .targets.cuda import CudaPrinter
    printer = CudaPrinter(fn, name)
    source, _ = printer.source()
    return CudaProgram(graph, fn, source, printer, key, single, name)


__all__ = ["CudaProgram", "compile_cuda", "cpu_command", "gpu_command", "cublas_paths",
           "batch_rows", "FormatError", "NO_DEVICE", "INDEX_OUT_OF_RANGE"]
