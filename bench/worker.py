"""One implementation of one workload in its own process, driven by run.py.

`worker.py IMPL WORKLOAD [--threads N]` builds the step (IMPL a key of
run.all_implementations(): training steps, or "grads:..." programs without updates), checks it (three steps
of a fresh copy, losses reported to the parent), then answers commands on stdin,
one JSON reply per line prefixed with `@@` (other output is ignored):

    calib      -> {"n": steps per timed block (about run.BLOCK_S seconds)}
    time N     -> {"t": seconds per step over a block of N steps}
    quit

Why a process per implementation: what is measured then is each program as its
user runs it. In one shared process the frameworks change each other's
conditions; the clearest case is the hand-written NumPy mlp step, which runs at
about half the speed alone (its temporaries are returned to the OS by glibc and
page-faulted back every step) as with torch/JAX/PyTensor loaded beside it.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (sets the thread variables before numpy is imported)
from workloads import SPECS, data, init_params  # noqa: E402


def reply(obj) -> None:
    sys.stdout.write("@@" + json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(impl: str, name: str) -> None:
    spec = SPECS[name]
    params, (X, Y) = init_params(spec), data(spec)
    make = run.all_implementations()[impl]
    try:
        t0 = time.perf_counter()
        step = make(spec, params, X, Y)
        step()  # first call: compiles where the framework compiles lazily
        built = time.perf_counter() - t0
        fresh = make(spec, params, X, Y)
        losses = [float(fresh()) for _ in range(3)]
        del fresh
    except ImportError as e:
        reply({"skip": f"cannot import: {e}"})
        return
    except Exception as e:  # a peer failing must not stop the benchmark
        reply({"skip": f"{type(e).__name__}: {e}"})
        return
    reply({"built": built, "losses": losses})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "calib":
            reply({"n": run.block_size(step)})
        elif cmd[0] == "time":
            reply({"t": run.time_block(step, int(cmd[1]))})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
