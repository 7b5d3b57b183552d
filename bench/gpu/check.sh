#!/usr/bin/env bash
# The GPU checks in one call of the device tool (issue 15, section 4), under 8 minutes:
#   1. pytest -m gpu: the CuPy programs equal the NumPy ones on the device;
#   2. bench/gpu.py: a 4-layer MLP of width 4096, batch 4096, float32, Adam, one
#      training step: graphnn's CuPy program vs torch eager CUDA (TF32 off, then on),
#      kernel launches, and the matmuls alone as the floor.
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
timeout 240 python3 bench/gpu.py --out "$out/gpu-$dev.json" 2>&1 | tee "$out/bench-gpu.txt"
