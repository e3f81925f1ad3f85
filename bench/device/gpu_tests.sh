#!/usr/bin/env bash
# Runs the `gpu` test label (the CUDA kernels and the GPU paths of the text encoder and the Wan VAE,
# checked against the reference fixtures and the CPU) on the device machine. CI has no GPU, so this is
# the only place these tests run; record the result in docs/BENCHMARKS.md.
# Usage: bench/device/gpu_tests.sh [--no-build] [extra cmake args for bench/device/gpu_build.sh]
#   --no-build reuses build-gpu/ as it is (it must have been configured with -DSTAS_BUILD_TESTS=ON).
#   Set STAS_UMT5_XXL_CHECKPOINT=DIR to run the test on a real UMT5-XXL text encoder too.
# Writes the whole ctest log to ${STAS_GPU_TEST_LOG:-build-gpu/gpu-tests.log}; exits non-zero when a test
# fails, or when one skips for want of CUDA or of the fused kernels (both must be there on this machine).
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = "--no-build" ]; then
  shift
else
  bench/device/gpu_build.sh -DSTAS_BUILD_TESTS=ON "$@" || { echo "gpu_tests: the GPU build failed"; exit 1; }
fi
LOG="${STAS_GPU_TEST_LOG:-build-gpu/gpu-tests.log}"
nvidia-smi -L 2>/dev/null | head -4
git log -1 --format='commit %h %s' 2>/dev/null || true
ctest --test-dir build-gpu -L gpu --output-on-failure -V >"$LOG" 2>&1
status=$?
# One line per test with its result, then ctest's summary.
grep -E "^\s*[0-9]+/[0-9]+ Test +#[0-9]+:" "$LOG"
grep -E "tests passed|tests failed|Total Test time" "$LOG"
if grep -qE "no CUDA device|built without the fused kernels|built without CUDA" "$LOG"; then
  echo "gpu_tests: some tests skipped because this build or machine lacks CUDA or the fused kernels:"
  grep -E "no CUDA device|built without the fused kernels|built without CUDA" "$LOG" | sort | uniq -c
  status=1
fi
grep -E "needs CUDA and STAS_UMT5_XXL_CHECKPOINT" "$LOG" | head -1 | sed 's/^/gpu_tests: skipped (no checkpoint given): /'
# GoogleTest prints "[  SKIPPED ] Suite.Name (N ms)" once per case (its summary repeats the name without the time).
count() { grep -cE "^[0-9]+: \[$1\] [A-Za-z0-9_./]+ \([0-9]+ ms\)" "$LOG"; }
echo "gpu_tests: $(count '       OK ') passed, $(count '  SKIPPED ') skipped, $(count '  FAILED  ') failed" \
     "(GoogleTest cases); exit $status; log $LOG"
exit "$status"
