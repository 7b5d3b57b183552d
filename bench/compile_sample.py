"""One compile-time sample, run in a fresh process by run.py: `compile_sample.py KIND DEPTH`.

Prints one JSON line: seconds (build + compile, imports excluded) and details."""
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def graphnn(depth):
    t0 = time.perf_counter()
    import numpy as np  # noqa: F401
    import graphnn as gn
    import graphnn.ops.api  # noqa: F401
    # modules gn.compile, gn.optim and SymPy's code printer load on first use: imports, not
    # build or compile work (this environment may not cache bytecode, which makes them cost)
    import graphnn.nn.optim  # noqa: F401
    import graphnn.compile.targets.numpy  # noqa: F401
    import graphnn.compile.numpy_backend  # noqa: F401
    import sympy.codegen.ast  # noqa: F401
    from workloads import deep_spec, graphnn_step
    spec = deep_spec(depth)
    from workloads import init_params
    params = init_params(spec)
    t1 = time.perf_counter()
    g, loss, updates, ps = graphnn_step(spec, params)
    t2 = time.perf_counter()
    gn.compile([loss], updates=updates)
    t3 = time.perf_counter()
    return {"seconds": t3 - t1, "build": t2 - t1, "compile": t3 - t2, "import": t1 - t0,
            "nodes": len(g)}


def jax(depth):
    import numpy as np
    import jax as jx
    from workloads import deep_spec, init_params, data
    from peers import jax_step_fn, jax_state
    spec = deep_spec(depth)
    params = init_params(spec)
    X, Y = data(spec)
    t1 = time.perf_counter()
    fn = jx.jit(jax_step_fn(spec))
    P, S = jax_state(spec, params)
    fn.lower(P, S, np.asarray(X), np.asarray(Y)).compile()
    return {"seconds": time.perf_counter() - t1}


def pytensor(depth):
    from workloads import deep_spec, init_params
    from peers import pytensor_step_fn
    spec = deep_spec(depth)
    params = init_params(spec)
    t1 = time.perf_counter()
    pytensor_step_fn(spec, params)
    return {"seconds": time.perf_counter() - t1}


if __name__ == "__main__":
    kind, depth = sys.argv[1], int(sys.argv[2])
    print(json.dumps({"graphnn": graphnn, "jax": jax, "pytensor": pytensor}[kind](depth)))
