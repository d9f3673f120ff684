#!/usr/bin/env bash
# Install what the tests need (see scripts/_env.sh) and run the test suite.
#   bash scripts/test.sh            fast suite (what CI runs)
#   bash scripts/test.sh --slow     also the tests marked slow
#   bash scripts/test.sh -k toy     extra arguments go to pytest
# The tests check the compiled kernels: a failed extension build is an error here.
export T2I_REQUIRE_EXT=${T2I_REQUIRE_EXT:-1}
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

pipq pytest
marker=(-m "not slow")
if [ "${1:-}" = "--slow" ]; then marker=(); shift; fi
exec "$PY" -m pytest tests "${marker[@]}" -q -ra "$@"
