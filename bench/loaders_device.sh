#!/usr/bin/env bash
# One device session for the loaders: GPU tests (loaders, token datasets, the BERT example
# on CUDA), `dcstore demo` on CUDA, bench/tokens_device.py on the device host (16 cores),
# and, with LOADERS_COMPARE=1, bench/loaders_compare.py. Wheels the image lacks travel in
# .whl/ (pip download --no-deps ... -d .whl); only those it lacks are installed. Results land
# in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/loaders-device-out}
mkdir -p "$OUT"
need=()
for pair in cryptography:cryptography cffi:cffi pycparser:pycparser rich:rich \
    markdown_it:markdown-it-py mdurl:mdurl pygments:pygments torchdata:torchdata \
    hypothesis:hypothesis sortedcontainers:sortedcontainers attr:attrs tokenizers:tokenizers; do
  python3 -c "import ${pair%%:*}" 2>/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  python3 -m pip install -q --no-index --find-links .whl --no-deps --no-compile \
      --target /tmp/site "${need[@]}" || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
{ nproc; nvidia-smi -L; echo "installed: ${need[*]:-nothing}"
  python3 -c "import torch, sys; print(sys.version, torch.__version__, torch.cuda.is_available())"
} 2>&1 | tee "$OUT/host.txt"
timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider -p no:randomly \
    -o addopts="" tests/test_loader_device.py tests/test_ringloader.py tests/test_tokens.py \
    tests/test_text_example.py 2>&1 | tee "$OUT/pytest.log" | tail -6
timeout 120 python3 -m dcstore.cli demo 2>&1 | tee "$OUT/demo.log" | tail -4
timeout "${TOKENS_TIMEOUT:-200}" python3 bench/tokens_device.py --workers 2 8 \
    --out "$OUT/tokens-device-h200host.md" 2>&1 | grep -v Warning | tee "$OUT/tokens.log" | tail -12
if [ "${LOADERS_COMPARE:-0}" = 1 ]; then
  timeout "${BENCH_TIMEOUT:-330}" python3 bench/loaders_compare.py --reps "${REPS:-3}" --no-pss \
      --root /tmp/lc --out "$OUT/loaders-h200host.md" 2>&1 | grep -v Warning \
      | tee "$OUT/bench.log" | tail -45
fi
