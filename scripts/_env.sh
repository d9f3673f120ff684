# Sourced by demo.sh and test.sh: pick the Python environment and install t2i into it.
#
# Uses the active virtualenv/conda env if there is one, else ./.venv if it exists, else the
# current python3 (a virtualenv's python counts as one, activated or not) unless it is externally
# managed (then a new ./.venv that can see the system's packages). torch==2.13.0 is installed only
# when no torch is importable: a torch the user already has is never replaced. The other
# dependencies are installed only when missing, so a machine that has them all (a GPU image with
# no package index, say) needs no network. The package is installed with
# `pip install --no-build-isolation --use-pep517 -e .`, so the extension is built against
# that torch (without --use-pep517, pip 23 runs `setup.py develop`, which builds in an
# isolated environment with no torch, and silently skips the extension).

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
  PY=python
elif [ -x .venv/bin/python ]; then
  PY="$(pwd)/.venv/bin/python"
else
  PY=${PYTHON:-python3}
  # PEP 668: the marker binds the system interpreter only; a virtualenv's python (sys.prefix != sys.base_prefix)
  # sees the base's stdlib and so the base's marker, but installs into its own site-packages.
  if "$PY" -c 'import os, sys, sysconfig; sys.exit(0 if sys.prefix == sys.base_prefix and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
    echo "t2i: $PY is externally managed; creating .venv (it sees the system's packages)" >&2
    "$PY" -m venv --system-site-packages .venv
    PY="$(pwd)/.venv/bin/python"
  fi
fi
export PY

pipq() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
# pip_missing PKG:MODULE ...: installs the packages whose module is not importable (all of them in one pip call).
pip_missing() {
  local missing
  missing=$("$PY" -c 'import importlib.util, sys
print(" ".join(p.split(":")[0] for p in sys.argv[1:] if importlib.util.find_spec(p.split(":")[1]) is None))' "$@")
  if [ -n "$missing" ]; then pipq $missing; fi
}

if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "t2i: no torch importable; installing torch==2.13.0" >&2
  pipq torch==2.13.0
fi
pip_missing ninja:ninja click:click rich:rich numpy:numpy pillow:PIL scipy:scipy setuptools:setuptools wheel:wheel
"$PY" -c 'import torch; print(f"t2i: using torch {torch.__version__} from {torch.__file__}")' >&2
# Is t2i installed from THIS checkout? (Checked from / so the current folder can't fake it.)
here_installed() {
  local repo
  repo=$(pwd)
  (cd / && "$PY" -c 'import os, sys, t2icli; sys.exit(0 if os.path.samefile(os.path.dirname(t2icli.__file__), os.path.join(sys.argv[1], "t2icli")) else 1)' "$repo") 2>/dev/null
}
if ! here_installed || [ "${T2I_REINSTALL:-0}" = 1 ]; then
  echo "t2i: installing the package (pip install --no-build-isolation --use-pep517 -e .; builds the C++ extension)" >&2
  pipq --no-build-isolation --use-pep517 -e .
fi
source scripts/_tcmalloc.sh  # use_tcmalloc (training scripts), tcmalloc_library (test.sh); cwd: the repository root
