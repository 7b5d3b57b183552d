"""`make bench`: one training step of xor, mlp and deep, graphnn against hand-written
NumPy, torch eager, JAX jit and PyTensor; then compile time of the deep step.

Timing: every implementation runs in its own worker process (bench/worker.py:
each program as its user runs it; see there why), is checked against
hand-written NumPy (same losses over three steps), warmed up, then timed in
interleaved rounds driven from here (one worker runs at a time, the order
rotates each round); a round times a block of steps sized to take about
BLOCK_S seconds; the reported time per step is the median over rounds. Ratios
are to hand-written NumPy (lower is better). The same measurement with every
framework in this one process is reported beside it (`steps_same_process`).

Programs without updates (issue 15): the loss and its gradients, `gn.compile([loss,
*grads])`, called through `prog(x=X, y=Y)`, against a hand-written NumPy forward and
backward that returns the loss and the gradients (numpy_ref.NumpyGrads); both are
checked to compute the same loss and gradients first, then timed the same way
(`grads`, `grads_same_process` in the results). `graphnn-plain` is that program
printed plain (`fast=False`).

Compile time: a fresh Python process per sample builds the depth-D deep
training step and compiles it (graphnn: graph + grad + compile; JAX: trace +
XLA compile of the jitted step; PyTensor: graph + grad + function). Imports
are not counted (reported separately for graphnn).

Results: bench/results/cpu.json (with the machine described). Options:
`--quick` (fewer rounds, for a smoke test), `--only xor,mlp`, `--no-compile`,
`--no-same-process` (skip the shared-process measurement), `--no-steps` / `--no-grads`
(skip the training steps / the programs without updates).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
warnings.filterwarnings("ignore")


def _threads_from_argv(argv) -> int:
    """Thread count for every framework, set before any of them is imported.

    Default 1: on a small shared machine, multi-threaded BLAS and thread pools
    that spin-wait make timings swing by 10x when anything else runs; one thread
    each is stable and the same for every peer. `--threads 2` uses both cores."""
    for k, a in enumerate(argv):
        if a == "--threads" and k + 1 < len(argv):
            return int(argv[k + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 1


THREADS = _threads_from_argv(sys.argv)


def pin_cpu() -> int | None:
    """Pin this process to one CPU, the same for every worker (the last one allowed).

    On a small shared machine the scheduler keeps a process on one core; a worker
    sharing its core with someone else's busy process would run slower for the
    whole benchmark. Pinned to one core, the implementations meet the same
    conditions, and the interleaved rounds spread what load there is evenly."""
    try:
        cpu = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return cpu
    except (AttributeError, OSError):
        return None
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
             "NUMEXPR_MAX_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = str(THREADS)
if THREADS == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np  # noqa: E402

from workloads import SPECS, data, init_params  # noqa: E402
from numpy_ref import NumpyGrads, NumpyStep  # noqa: E402

BLOCK_S = 0.02
TARGETS = {"xor": 0.5, "mlp": 0.8, "deep": 0.9}
COMPILE_DEPTHS = (8, 32, 128, 1024)
PEER_COMPILE_DEPTHS = (8, 32, 128)


def make_graphnn(spec, params, X, Y, fast=True, kernels="auto", public=True):
    """graphnn's step timed through the public call `prog(x=X, y=Y)` (feeds checked,
    as users call it and as the peers pay their own dispatch), or with `public=False`
    through the raw positional function with arguments prepared once."""
    import graphnn as gn
    from workloads import graphnn_step
    g, loss, updates, ps = graphnn_step(spec, params)
    prog = gn.compile([loss], updates=updates, fast=fast, kernels=kernels)
    args = prog.args_for({"x": X, "y": Y})
    fn = prog.fn

    def step():
        return prog(x=X, y=Y)[0] if public else fn(*args)[0]
    step.params = lambda: [g.values[p.name] for p in ps]
    step.program = prog
    return step


def make_graphnn_grads(spec, params, X, Y, fast=None):
    """The program without updates, `gn.compile([loss, *grads])` (the default lowering, or
    `fast=False`: the plain program), timed through the public call. Calling it returns
    the loss; `.all()` returns (loss, gradients)."""
    import graphnn as gn
    from workloads import graphnn_step
    g, loss, _, ps = graphnn_step(spec, params)
    prog = gn.compile([loss, *gn.grad(loss, ps)], fast=fast)

    def step():
        return prog(x=X, y=Y)[0]
    step.all = lambda: (lambda out: (out[0], list(out[1:])))(prog(x=X, y=Y))
    step.program = prog
    return step


def implementations():
    from peers import PEERS
    impls = {"numpy": lambda s, p, X, Y: NumpyStep(s, p, X, Y),
             "graphnn": make_graphnn,
             "graphnn-numpy": lambda s, p, X, Y: make_graphnn(s, p, X, Y, kernels="numpy"),
             "graphnn-plain": lambda s, p, X, Y: make_graphnn(s, p, X, Y, fast=False),
             "graphnn-fn": lambda s, p, X, Y: make_graphnn(s, p, X, Y, public=False)}
    impls.update(PEERS)
    return impls


def grad_implementations():
    """The programs without updates: loss and gradients (keys prefixed "grads:" for worker.py)."""
    return {"grads:numpy": lambda s, p, X, Y: NumpyGrads(s, p, X, Y),
            "grads:graphnn": make_graphnn_grads,
            "grads:graphnn-plain": lambda s, p, X, Y: make_graphnn_grads(s, p, X, Y, fast=False)}


def all_implementations():
    return {**implementations(), **grad_implementations()}


def check_grads(name, spec) -> dict:
    """Every program without updates computes NumPy's loss and gradients (rtol 1e-10)."""
    params, (X, Y) = init_params(spec), data(spec)
    want_loss, want = NumpyGrads(spec, params, X, Y).all()
    bad = {}
    for impl, make in grad_implementations().items():
        if impl == "grads:numpy":
            continue
        loss, got = make(spec, params, X, Y).all()
        if not (np.isclose(loss, want_loss, rtol=1e-10, atol=1e-14) and len(got) == len(want)
                and all(np.allclose(a, b, rtol=1e-10, atol=1e-14) for a, b in zip(got, want))):
            bad[impl] = max([abs(loss - want_loss)] + [float(np.max(np.abs(a - b)))
                                                       for a, b in zip(got, want)])
    return bad


def build_all(name, spec, only_impls=None, impls=None):
    params, (X, Y) = init_params(spec), data(spec)
    steps, notes = {}, {}
    for impl, make in (impls or implementations()).items():
        if only_impls and impl not in only_impls:
            continue
        try:
            t0 = time.perf_counter()
            steps[impl] = make(spec, params, X, Y)
            steps[impl]()  # first call: compiles where the peer compiles lazily
            notes[impl] = f"built in {time.perf_counter() - t0:.2f} s"
        except ImportError as e:
            print(f"  note: {impl} skipped (cannot import: {e})")
            notes[impl] = f"skipped: {e}"
        except Exception as e:  # a peer failing must not stop the benchmark
            print(f"  note: {impl} skipped ({type(e).__name__}: {e})")
            notes[impl] = f"skipped: {type(e).__name__}: {e}"
    return steps, notes


def check(name, spec, steps):
    """Every implementation, freshly built, computes the same losses as NumPy."""
    params, (X, Y) = init_params(spec), data(spec)
    ref = NumpyStep(spec, params, X, Y)
    want = [ref() for _ in range(3)]
    bad = {}
    for impl, make in implementations().items():
        if impl not in steps or impl == "numpy":
            continue
        st = make(spec, params, X, Y)
        got = [float(st()) for _ in range(3)]
        if not np.allclose(got, want, rtol=1e-8, atol=1e-12):
            bad[impl] = (got, want)
    return bad


def time_block(step, n):
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def block_size(step, warmup_s=0.05) -> int:
    """Warm up, then the number of steps that take about BLOCK_S seconds."""
    n, t = 1, 0.0
    while True:
        t = time_block(step, n)
        if t * n > warmup_s or n > 100000:
            break
        n *= 4
    return max(1, int(BLOCK_S / max(t, 1e-9)))


def measure(steps, rounds):
    sizes = {impl: block_size(st) for impl, st in steps.items()}
    times = {impl: [] for impl in steps}
    names = list(steps)
    for r in range(rounds):
        k = r % len(names)
        for impl in names[k:] + names[:k]:
            times[impl].append(time_block(steps[impl], sizes[impl]))
    return {impl: statistics.median(ts) for impl, ts in times.items()}


class Worker:
    """One implementation of one workload in its own process (bench/worker.py)."""

    def __init__(self, impl: str, name: str):
        import tempfile
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "worker.py"), impl, name, "--threads", str(THREADS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True)

    def ask(self, cmd: str | None = None) -> dict:
        if cmd is not None:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        self.err.seek(0)
        last = (self.err.read().strip().splitlines() or ["worker exited"])[-1]
        return {"skip": f"worker failed: {last}"}

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=60)
        self.err.close()


def bench_steps_isolated(only, rounds, impls=None):
    """Each implementation in its own process; rounds interleaved from here."""
    impls = impls or implementations()
    base_impl = next(iter(impls))  # hand-written NumPy
    results = {}
    for name in only:
        print(f"[{name}] building (one process per implementation) ...", flush=True)
        if base_impl == "grads:numpy":
            bad = check_grads(name, SPECS[name])
            for impl, err in bad.items():
                print(f"  note: {impl} disagrees with NumPy's loss and gradients (max |diff| "
                      f"{err:.2e}); excluded")
        else:
            bad = {}
        workers, notes, losses = {}, {}, {}
        for impl in impls:
            if impl in bad:
                notes[impl.split(":")[-1]] = "excluded: loss or gradients differ from NumPy"
                continue
            w = Worker(impl, name)
            r = w.ask()
            if "skip" in r:
                print(f"  note: {impl} skipped ({r['skip']})")
                notes[impl] = f"skipped: {r['skip']}"
                w.close()
                continue
            workers[impl], losses[impl] = w, r["losses"]
            notes[impl] = f"built in {r['built']:.2f} s"
        want = losses.get(base_impl)
        for impl in list(workers):
            if impl != base_impl and not np.allclose(losses[impl], want, rtol=1e-8, atol=1e-12):
                print(f"  note: {impl} disagrees with NumPy: losses {losses[impl]} vs {want}; excluded")
                notes[impl] = "excluded: losses differ from NumPy"
                workers.pop(impl).close()
        sizes = {impl: w.ask("calib")["n"] for impl, w in workers.items()}
        times = {impl: [] for impl in workers}
        names = list(workers)
        for r in range(rounds):
            k = r % len(names)
            for impl in names[k:] + names[:k]:
                times[impl].append(workers[impl].ask(f"time {sizes[impl]}")["t"])
        for w in workers.values():
            w.close()
        med = {impl.split(":")[-1]: statistics.median(ts) for impl, ts in times.items()}
        notes = {impl.split(":")[-1]: note for impl, note in notes.items()}
        results[name] = _summarize(med, notes)
    return results


def _summarize(med, notes) -> dict:
    base = med["numpy"]
    res = {impl: {"seconds": t, "ratio": t / base, "note": notes.get(impl, "")}
           for impl, t in med.items()}
    for impl, note in notes.items():
        if impl not in med:
            res[impl] = {"seconds": None, "ratio": None, "note": note}
    line = "  ".join(f"{impl} {t / base:.2f}x" for impl, t in med.items())
    print(f"  numpy {base * 1e6:.1f} us/step; {line}", flush=True)
    return res


def bench_steps(only, rounds, impls=None):
    """Every implementation in this one process (the shared-process measurement)."""
    results = {}
    for name in only:
        spec = SPECS[name]
        print(f"[{name}] building ...", flush=True)
        steps, notes = build_all(name, spec, impls=impls)
        if impls is None:
            bad = check(name, spec, steps)
            for impl, (got, want) in bad.items():
                print(f"  note: {impl} disagrees with NumPy: losses {got} vs {want}; excluded")
                notes[impl] = "excluded: losses differ from NumPy"
                steps.pop(impl)
        else:  # programs without updates: loss and gradients
            for impl, err in check_grads(name, spec).items():
                print(f"  note: {impl} disagrees with NumPy's loss and gradients (max |diff| "
                      f"{err:.2e}); excluded")
                notes[impl] = "excluded: loss or gradients differ from NumPy"
                steps.pop(impl, None)
        med = measure(steps, rounds)
        med = {impl.split(":")[-1]: t for impl, t in med.items()}
        notes = {impl.split(":")[-1]: note for impl, note in notes.items()}
        results[name] = _summarize(med, notes)
    return results


# -- compile time -------------------------------------------------------------------------------

def compile_sample(kind: str, depth: int, timeout: float) -> dict:
    cmd = [sys.executable, os.path.join(HERE, "compile_sample.py"), kind, str(depth)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_compile(samples, peers=True):
    res = {}
    plan = [("graphnn", d, samples) for d in COMPILE_DEPTHS]
    if peers:
        plan += [("jax", d, 1) for d in PEER_COMPILE_DEPTHS]
        plan += [("pytensor", d, 1) for d in PEER_COMPILE_DEPTHS]
    for kind, depth, n in plan:
        got = [compile_sample(kind, depth, timeout=120) for _ in range(n)]
        ok = [s for s in got if "error" not in s]
        if not ok:
            print(f"  note: {kind} compile depth {depth}: {got[0]['error']}")
            res.setdefault(kind, {})[str(depth)] = {"error": got[0]["error"]}
            continue
        entry = {"seconds": statistics.median(s["seconds"] for s in ok), "samples": len(ok)}
        for extra in ("build", "compile", "import", "nodes"):
            if extra in ok[0]:
                entry[extra] = statistics.median(s[extra] for s in ok)
        res.setdefault(kind, {})[str(depth)] = entry
        print(f"  {kind:9s} depth {depth:5d}: {entry['seconds']:.3f} s"
              + (f" (build {entry['build']:.3f} + compile {entry['compile']:.3f}; "
                 f"{entry['nodes']} nodes)" if "build" in entry else ""), flush=True)
    return res


# -- machine and report -----------------------------------------------------------------------------

def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    vers = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("torch", "jax", "pytensor", "numexpr", "sympy"):
        try:
            vers[mod] = __import__(mod).__version__
        except Exception:
            vers[mod] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "versions": vers, "blas": blas(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def blas() -> dict:
    """NumPy's BLAS as it runs here: library, version and the kernel it chose.

    OpenBLAS picks its kernels for the CPU at load time unless OPENBLAS_CORETYPE
    forces a core; some machines set it (with OPENBLAS_L2_SIZE) because older
    OpenBLAS builds fail on their CPU. Forced to an older core, NumPy's matmuls
    (and so hand-written NumPy, graphnn and PyTensor) run at about half speed
    while JAX and torch keep their own kernels, so the report names the kernel
    and the variables; `make bench` unsets both for its own command."""
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("OPENBLAS_")}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"environment": env, "note": "threadpoolctl not installed: kernel unknown"}
    found = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    libs = [i for i in found if "numpy" in (i.get("filepath") or "")] or found
    info = {k: libs[0].get(k) for k in ("internal_api", "version", "architecture")} if libs else {}
    return {**info, "environment": env}


def table(results, impls=None, targets=TARGETS, what="step") -> str:
    impls = impls or ["graphnn", "graphnn-fn", "graphnn-numpy", "graphnn-plain", "jax",
                      "pytensor", "torch"]
    head = f"| {what} | NumPy (us) | " + " | ".join(impls) + " | target |"
    rows = [head, "|" + "---|" * (len(impls) + 3)]
    for name, r in results.items():
        cells = []
        for impl in impls:
            v = r.get(impl, {}).get("ratio")
            cells.append("skipped" if v is None else f"{v:.2f}x")
        rows.append(f"| {name} | {r['numpy']['seconds'] * 1e6:.1f} | " + " | ".join(cells)
                    + f" | <= {targets[name]}x |")
    return "\n".join(rows)


GRAD_TARGETS = {"xor": 1.0, "mlp": 1.0, "deep": 1.0}  # issue 15: no slower than NumPy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="xor,mlp,deep")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-same-process", action="store_true",
                    help="skip the measurement with every framework in one process")
    ap.add_argument("--threads", type=int, default=1, help="threads for every framework")
    ap.add_argument("--no-steps", action="store_true", help="skip the training steps")
    ap.add_argument("--no-grads", action="store_true",
                    help="skip the programs without updates (loss and gradients)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "cpu.json"))
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    rounds = 5 if a.quick else 21
    only = [s for s in a.only.split(",") if s]
    report = {"machine": machine()}
    b = report["machine"]["blas"]
    print(f"NumPy's BLAS: {b.get('internal_api')} {b.get('version')}, kernel {b.get('architecture')}"
          + (f" (forced by OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']})"
             if "OPENBLAS_CORETYPE" in os.environ else ""), flush=True)
    report["method"] = {
        "rounds": rounds, "block_seconds": BLOCK_S, "threads_note": "one CPU, pinned", "statistic": "median over interleaved rounds",
        "ratio": "time per step / hand-written NumPy time per step (lower is better)",
        "dtype": "float64", "threads": THREADS,
        "processes": "steps: one worker process per implementation, rounds interleaved by the "
                     "parent; steps_same_process: every framework in one process",
        "grads": "programs without updates: gn.compile([loss, *grads]) called as "
                 "prog(x=X, y=Y) against hand-written NumPy's forward and backward returning "
                 "the loss and the gradients (numpy_ref.NumpyGrads), checked equal first "
                 "(rtol 1e-10); same protocols as the steps"}
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cpu = pin_cpu()  # workers inherit the affinity
    report["method"]["pinned_cpu"] = cpu
    if not a.no_steps:
        report["steps"] = bench_steps_isolated(only, rounds)
        if not a.no_same_process:
            print("\nThe same, every framework in this one process:", flush=True)
            report["steps_same_process"] = bench_steps(only, rounds)
    if not a.no_grads:
        print("\nPrograms without updates, gn.compile([loss, *grads]) (one process per "
              "implementation):", flush=True)
        report["grads"] = bench_steps_isolated(only, rounds, grad_implementations())
        if not a.no_same_process:
            print("\nThe same, in this one process:", flush=True)
            report["grads_same_process"] = bench_steps(only, rounds, grad_implementations())
    if "steps" in report:
        print("\nRatio to hand-written NumPy, one training step (float64; lower is better), "
              "one process per implementation:")
        print(table(report["steps"]))
    if "steps_same_process" in report:
        print("\nThe same, all frameworks in one process:")
        print(table(report["steps_same_process"]))
    grad_cols = ["graphnn", "graphnn-plain"]
    if "grads" in report:
        print("\nRatio to hand-written NumPy, loss and gradients without an update "
              "(gn.compile([loss, *grads]), public call; float64; lower is better), one process "
              "per implementation:")
        print(table(report["grads"], grad_cols, GRAD_TARGETS, what="loss + grads"))
    if "grads_same_process" in report:
        print("\nThe same, in one process:")
        print(table(report["grads_same_process"], grad_cols, GRAD_TARGETS, what="loss + grads"))
    if allowed is not None:  # compilers may use several threads: no pinning there
        os.sched_setaffinity(0, allowed)
    if not a.no_compile:
        print("\nCompile time of the deep training step (fresh process per sample):", flush=True)
        report["compile"] = bench_compile(1 if a.quick else 3, peers=not a.quick)
    report["total_seconds"] = time.perf_counter() - t0
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {os.path.relpath(a.out)} in {report['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
