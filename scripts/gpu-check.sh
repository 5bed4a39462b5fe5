#!/usr/bin/env bash
# One command for a CUDA machine: the CUDA tests, `telebench profile` on suites/gpu-profile.yaml, a short
# teleport-vs-baseline GPU run, and one markdown summary in reports/gpu/summary.md (commit it).
# Without CUDA every step skips cleanly and the summary says so. Budget: at most 8 minutes on one GPU.
#   bash scripts/gpu-check.sh [OUT_DIR]        # default reports/gpu
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-reports/gpu}"
mkdir -p "$out"
status=0
if ! python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu-check: no CUDA device is visible; the CUDA tests skip and nothing is measured."
    python -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_symmetry_cuda.py tests/test_profile_cuda.py || status=$?
    python scripts/gpu_summary.py "$out" || status=$?
    exit "$status"
fi
echo "== CUDA tests"
timeout 240 python -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_symmetry_cuda.py tests/test_profile_cuda.py \
    | tee "$out/cuda-tests.txt" || status=$?
echo "== telebench profile suites/gpu-profile.yaml"
timeout 180 python -m telebench profile suites/gpu-profile.yaml --device cuda --repeat 5 --out "$out/profile" \
    > "$out/profile.txt" 2>&1 || status=$?
tail -n 40 "$out/profile.txt"
echo "== short teleport-vs-baseline run on CUDA"
rm -rf "$out/run"
timeout 150 python -m telebench run suites/quickstart.yaml --devices cuda --cases digits-relu --seeds 0-5 \
    --budget-steps 200 --out "$out/run" --no-report > "$out/run.txt" 2>&1 || status=$?
tail -n 30 "$out/run.txt"
echo "== summary"
python scripts/gpu_summary.py "$out" || status=$?
exit "$status"
