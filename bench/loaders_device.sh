#!/usr/bin/env bash
# One device session for the loader: GPU tests, `dcstore demo` on CUDA, and
# bench/loaders_compare.py on the device host (quiet, 16 cores; DataLoader
# still uses 2 workers). Wheels the image lacks travel in .whl/ (see the
# lead's report); results land in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/loaders-device-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
{ nproc; nvidia-smi -L; python3 -c "import torch, sys; print(sys.version, torch.__version__, torch.cuda.is_available())"; } 2>&1 | tee "$OUT/host.txt"
python3 -m pytest -q -p no:cacheprovider -p no:randomly tests/test_loader_device.py \
    tests/test_ringloader.py tests/test_loader_tar.py tests/test_loader_plan.py 2>&1 | tee "$OUT/pytest.log" | tail -4
timeout 120 python3 -m dcstore.cli demo 2>&1 | tee "$OUT/demo.log"
timeout "${BENCH_TIMEOUT:-330}" python3 bench/loaders_compare.py --reps "${REPS:-3}" \
    --root /tmp/lc --out "$OUT/loaders-h200host.md" 2>&1 | grep -v Warning | tee "$OUT/bench.log" | tail -45
