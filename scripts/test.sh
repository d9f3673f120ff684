#!/usr/bin/env bash
# Install what the tests need (see scripts/_env.sh) and run the test suite.
#   bash scripts/test.sh            fast suite (what CI runs)
#   bash scripts/test.sh --slow     also the tests marked slow
#   bash scripts/test.sh -k toy     extra arguments go to pytest
# The tests check the compiled kernels: a failed extension build is an error here.
# In CI (CI=true) with no pytest arguments, a passing suite is followed by scripts/gpu_check.sh, which on a
# machine without a GPU compiles the CUDA kernels (scripts/check_cuda_build.sh); T2I_SKIP_GPU_CHECK=1 skips it.
export T2I_REQUIRE_EXT=${T2I_REQUIRE_EXT:-1}
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

pip_missing pytest:pytest nltk:nltk  # nltk: only to cross-check the tokenizer (t2i itself never imports it)
marker=(-m "not slow")
if [ "${1:-}" = "--slow" ]; then marker=(); shift; fi
status=0
"$PY" -m pytest tests "${marker[@]}" -q -ra "$@" || status=$?
if [ $status -eq 0 ] && [ $# -eq 0 ] && [ "${CI:-}" = "true" ] && [ "${T2I_SKIP_GPU_CHECK:-0}" != 1 ]; then
  bash scripts/gpu_check.sh || status=$?
fi
exit $status
