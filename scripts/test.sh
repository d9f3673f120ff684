#!/usr/bin/env bash
# Install what the tests need (see scripts/_env.sh) and run the test suite.
#   bash scripts/test.sh            the suite CI runs (all but the tests marked slow)
#   bash scripts/test.sh --fast     an inner loop of about a minute: also without the demo, torchrun, kill -9 and
#                                   multi-step runs and tests over ~3 s (marked long)
#   bash scripts/test.sh --slow     everything, the slow tests too
#   bash scripts/test.sh -k toy     extra arguments go to pytest
# The tests check the compiled kernels: a failed extension build is an error here. With CI=true the 15 slowest
# tests are listed at the end, and (with no pytest arguments) a passing suite is followed by scripts/gpu_check.sh,
# which on a machine without a GPU compiles the CUDA kernels (scripts/check_cuda_build.sh); T2I_SKIP_GPU_CHECK=1
# skips it.
export T2I_REQUIRE_EXT=${T2I_REQUIRE_EXT:-1}
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

# nltk: only to cross-check the tokenizer (t2i itself never imports it); tensorboard: the optional extra that
# tests/test_tensorboard.py reads back
pip_missing pytest:pytest nltk:nltk tensorboard:tensorboard
# httpx, selenium, fastapi, uvicorn: the API and browser tests of t2i serve (fastapi + uvicorn are its [serve] extra)
pip_missing httpx:httpx selenium:selenium fastapi:fastapi uvicorn:uvicorn
# The browser test of `t2i serve` drives Debian's chromium with its chromedriver (never a downloaded browser).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "t2i: installing chromium + chromium-driver for the browser test (apt-get)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver fonts-dejavu-core; } >&2 ||
      echo "t2i: WARNING: apt-get could not install chromium; the browser test fails in CI, skips otherwise" >&2
  else
    echo "t2i: no chromium/chromedriver and no root apt-get; the browser test fails in CI, skips otherwise" >&2
  fi
fi
# tcmalloc: demo.sh (which a test runs) and train_pretrained.sh allocate with it where the system has it
# (scripts/_tcmalloc.sh); tests/test_allocator.py checks that path and skips without it.
if [ -z "$(tcmalloc_library)" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "t2i: installing libtcmalloc-minimal4 for the tcmalloc tests (apt-get)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        libtcmalloc-minimal4; } >&2 || echo "t2i: WARNING: apt-get could not install libtcmalloc-minimal4" >&2
  else
    echo "t2i: no tcmalloc and no root apt-get; tests/test_allocator.py skips" >&2
  fi
fi
marker=(-m "not slow")
case "${1:-}" in
  --slow) marker=(); shift ;;
  --fast) marker=(-m "not slow and not long"); shift ;;
esac
extra=()
if [ "${CI:-}" = "true" ]; then extra=(--durations=15); fi
status=0
"$PY" -m pytest tests "${marker[@]}" -q -ra "${extra[@]}" "$@" || status=$?
if [ $status -eq 0 ] && [ $# -eq 0 ] && [ "${CI:-}" = "true" ] && [ "${T2I_SKIP_GPU_CHECK:-0}" != 1 ]; then
  bash scripts/gpu_check.sh || status=$?
fi
exit $status
