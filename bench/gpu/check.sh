#!/usr/bin/env bash
# The GPU checks in one call of the device tool (issue 15, section 4), under 8 minutes:
#   1. pytest -m gpu: the CuPy programs equal the NumPy ones on the device;
#   2. bench/gpu.py: a 4-layer MLP of width 4096, batch 4096, float32, Adam, one
#      training step: graphnn's CuPy program vs torch eager CUDA (TF32 off, then on),
#      kernel launches, and the matmuls alone as the floor; the same step as a standalone
#      CUDA program (backend 'cuda', `./model train`) beside them;
#   3. (before 2) the CUDA programs: GPU build = CPU build = NumPy target, compute-sanitizer.
# Results land in $OUT (the device tool brings them back) or bench/results/.
# The device image has python3 with CuPy (cuda13x), PyTorch, NumPy, SymPy, networkx
# and pytest; graphnn runs from the checkout (PYTHONPATH), nothing is installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-bench/results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu-info.txt"
python3 -c "import cupy, torch; print('cupy', cupy.__version__, 'torch', torch.__version__)" | tee -a "$out/gpu-info.txt"
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_cupy_target.py 2>&1 | tee "$out/pytest-gpu.txt"
dev=$(python3 -c "import cupy; p = cupy.cuda.runtime.getDeviceProperties(0); n = p['name']; print((n.decode() if isinstance(n, bytes) else n).replace(' ', '_'))")
# 3. the standalone CUDA programs (issue 16): the GPU build equals the CPU build and the
#    NumPy target (pytest -m gpu), and compute-sanitizer finds no error in a small one;
#    they need nvcc and cuBLAS (pip install nvidia-cublas) on the device machine
if command -v nvcc >/dev/null; then
  timeout 180 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_cuda_target.py 2>&1 | tee "$out/pytest-gpu-cuda.txt" || true
  timeout 120 python3 - "$out" <<'PY' 2>&1 | tee "$out/sanitizer-cuda.txt" || true
import os, shutil, subprocess, sys, tempfile
import numpy as np
import graphnn as gn
g = gn.Graph("xor", seed=1)
x, y = g.input("x", (None, 2)), g.input("y", (None, 1))
W, b, w = g.param("W", (2, 2)), g.param("b", (2,), init="zeros"), g.param("w", (2, 1))
loss = gn.mse(gn.relu(x @ W + b) @ w, y)
step = gn.compile([loss], backend="cuda", updates=gn.optim.Adam(lr=0.05).build([W, b, w], gn.grad(loss, [W, b, w])))
d = tempfile.mkdtemp()
exe = step.save(d, build="gpu")["executable"]
step.write_data(os.path.join(d, "data.bin"), {"x": np.array([[0., 0], [0, 1], [1, 0], [1, 1]]), "y": np.array([[0.], [1], [1], [0]])})
san = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
r = subprocess.run([san, "--error-exitcode", "9", exe, "train", "--data", "data.bin", "--steps", "3", "--out", "p.bin"], cwd=d, capture_output=True, text=True)
print(r.stdout[-3000:], r.stderr[-3000:])
print("compute-sanitizer exit code", r.returncode, "(0: no error)")
PY
else
  echo "nvcc is not on this machine: the CUDA program checks did not run" | tee "$out/pytest-gpu-cuda.txt"
fi
timeout 240 python3 bench/gpu.py --out "$out/gpu-$dev.json" 2>&1 | tee "$out/bench-gpu.txt"
