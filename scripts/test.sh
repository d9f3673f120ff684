#!/usr/bin/env bash
# Install what the tests need (see scripts/_env.sh) and run the test suite.
#   bash scripts/test.sh            fast suite (what CI runs)
#   bash scripts/test.sh --slow     also the tests marked slow
#   bash scripts/test.sh -k toy     extra arguments go to pytest
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

pipq pytest
marker=(-m "not slow")
if [ "${1:-}" = "--slow" ]; then marker=(); shift; fi
exec "$PY" -m pytest tests "${marker[@]}" -q -ra "$@"
