#!/usr/bin/env bash
# Proves t2i's GPU path in one command: writes one JSON report and prints a short table.
#
#   bash scripts/gpu_check.sh                        # report: docs/gpu/DATE-GPU.json (with a GPU)
#   bash scripts/gpu_check.sh --out FILE             # elsewhere
#   bash scripts/gpu_check.sh --only tests,bench_ops # rerun some sections (names: scripts/gpu_check.py)
#   bash scripts/gpu_check.sh --budget-min 12        # more than the default 8 minutes in all
#
# With a CUDA GPU (nvidia-smi lists one): installs t2i with the project's own scripts/_env.sh (the C++/CUDA
# extension built for the GPUs present), then scripts/gpu_check.py runs, within one time budget counted from
# the start (default 8 minutes, install included): nvidia-smi and versions, the kernels' self-check on the GPU,
# the CUDA tests of the suite, bench_ops.py --device cuda (targets: DAMSM >= 20x the original loop and >= 2x the
# vectorised reference; attention faster than the reference with less memory), bench_train.py --device cuda in
# fp32 and bf16, a 300-step AttnGAN toybirds run on the GPU with its generated R-precision, a torchrun NCCL
# smoke run (scripts/dist_smoke.py), and bench_train.py --compile. Exit 0: all passed and every target met;
# 2: all passed, a performance target missed; 1: something failed, timed out or did not fit the budget.
#
# Without a GPU: says so, checks that the CUDA code compiles (scripts/check_cuda_build.sh: a CUDA build of torch
# in $CUDAVENV, default /tmp/cudavenv, made on first use), runs the CPU kernels' self-check (t2i env), writes
# the report ($T2I_GPU_CHECK_DIR/report.json unless --out) and exits 0 if the compile succeeded. CI runs this
# mode (scripts/test.sh with CI=true).
#
# What it assumes of the machine (a fresh GPU machine has only what the repository brings):
#   * a python3 with a CUDA build of torch >= 2.5 that sees the GPU: the active virtualenv/conda env, ./.venv,
#     or the python3 on PATH (a virtualenv's python counts, activated or not; see scripts/_env.sh). It is never
#     replaced. Without one, _env.sh installs torch==2.13.0 from the package index, which is a CPU build on
#     PyPI's default index: then this script stops and says to install a CUDA build first.
#   * nvcc (the CUDA toolkit) of the CUDA major version torch was built with, on PATH or in $CUDA_HOME, and a
#     C++ compiler: the extension is compiled here (an estimate: a minute or two on many cores; 2-7 minutes on
#     2 busy cores, measured).
#   * these Python packages present, or a package index pip can reach: ninja click rich numpy pillow scipy
#     setuptools wheel pytest (only missing ones are installed: with all present nothing is downloaded), and
#     triton for --compile's CUDA kernels (it ships with CUDA builds of torch).
#   * torchrun (part of torch) for the NCCL smoke run; about 2 GB of free disk under $T2I_GPU_CHECK_DIR
#     (default /tmp/t2i_gpu_check: logs, the toybirds data, runs).
# Tested here only without a GPU (CI) and as a CPU rehearsal: `python scripts/gpu_check.py --device cpu --quick`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$(date +%s)
WORK="${T2I_GPU_CHECK_DIR:-/tmp/t2i_gpu_check}"
OUTFILE=""
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUTFILE="$2"; shift 2 ;;
    --out=*) OUTFILE="${1#--out=}"; shift ;;
    -h|--help) sed -n '2,36p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) PASS+=("$1"); shift ;;
  esac
done
mkdir -p "$WORK"

ngpu=0
if command -v nvidia-smi >/dev/null 2>&1; then
  ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
fi

if [ "$ngpu" -eq 0 ]; then
  # -- no GPU: the CUDA code must at least compile ---------------------------------------------------------------
  why=$(command -v nvidia-smi >/dev/null 2>&1 && echo "nvidia-smi lists no GPU" || echo "no nvidia-smi")
  echo "gpu_check: no CUDA GPU on this machine ($why): the GPU path is not run here; checking that the CUDA code" \
       "compiles instead (scripts/check_cuda_build.sh)" >&2
  source scripts/_env.sh
  t0=$(date +%s)
  build=0
  bash scripts/check_cuda_build.sh >"$WORK/cuda_build.log" 2>&1 || build=$?
  build_s=$(( $(date +%s) - t0 ))
  t0=$(date +%s)
  "$PY" -m t2icli env --json >"$WORK/env.json" 2>"$WORK/env.log" || true
  env_s=$(( $(date +%s) - t0 ))
  status=0
  "$PY" - "$WORK" "${OUTFILE:-$WORK/report.json}" "$build" "$build_s" "$why" "$START" "$env_s" <<'PYEOF' || status=$?
import datetime, json, os, sys, time
work, out, build, build_s, why, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
env_s = int(sys.argv[7])
log = open(os.path.join(work, "cuda_build.log")).read().strip().splitlines()
try:
    env = json.load(open(os.path.join(work, "env.json")))
except ValueError:
    env = {}
checks = env.get("selfcheck")
sc_status = ("fail" if not env or (isinstance(checks, list) and not all(r["ok"] for r in checks))
             else "pass" if isinstance(checks, list) and checks else "skipped")  # skipped: T2I_OPS=ref / _SELFCHECK=0
ok = build == 0 and sc_status != "fail"
report = {"t2i_gpu_check": 1, "gpu": False, "why": why, "ok": ok, "exit_status": 0 if ok else 1,
          "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
          "seconds": round(time.time() - start, 1),
          "versions": {k: env.get(k) for k in ("python", "torch", "cuda_build", "t2icli")},
          "sections": {"cuda_build": {"status": "pass" if build == 0 else "fail", "seconds": build_s,
                                      "log": os.path.join(work, "cuda_build.log"), "summary": log[-1] if log else ""},
                       "selfcheck_cpu": {"status": sc_status, "seconds": env_s, "log": os.path.join(work, "env.log"),
                                         "results": checks}}}
os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
with open(out + ".tmp", "w") as f:
    json.dump(report, f, indent=1)
os.replace(out + ".tmp", out)
print(f"t2i gpu_check: no GPU here ({why}); the CUDA path is compiled, not run")
print(f"{'section':<15} {'status':<8} {'seconds':>7}  figures")
for name, s in report["sections"].items():
    res = s.get("results")
    figs = s.get("summary") or (res if isinstance(res, str) else "; ".join(
        f"{r['op']} on {r['device']}: {'ok' if r['ok'] else 'FAILED'}" for r in res or []))
    print(f"{name:<15} {s['status']:<8} {s['seconds']:>7}  {figs}")
print(f"{'OK' if ok else 'FAILED (see the logs in ' + work + ')'}; report: {out}")
sys.exit(0 if ok else 1)
PYEOF
  [ "$build" -eq 0 ] || tail -20 "$WORK/cuda_build.log" >&2
  exit $status
fi

# -- a GPU: install (building the CUDA kernels), then every check ----------------------------------------------------
echo "gpu_check: $ngpu GPU(s): $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" >&2
export T2I_REQUIRE_EXT=1  # a failed extension build is an error, not a silent fallback
source scripts/_env.sh
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)'; then
  "$PY" - >&2 <<'PYEOF'
import torch
what = "is a CPU build" if not torch.version.cuda else f"(CUDA {torch.version.cuda}) cannot use it: driver too old?"
print(f"gpu_check: nvidia-smi lists a GPU, but torch {torch.__version__} at {torch.__file__} {what}; run this from an "
      "environment with a CUDA build of torch that sees the GPU (see the header of scripts/gpu_check.sh)")
PYEOF
  exit 1
fi
has_cuda_kernels() { "$PY" -c 'import sys, t2icli.ops as o; sys.exit(0 if "cuda" in o.backend_info()["device_kernels"] else 1)'; }
if ! has_cuda_kernels; then  # installed earlier without a GPU in sight: rebuild with the CUDA kernels
  echo "gpu_check: the installed t2i extension has no CUDA kernels; rebuilding it" >&2
  export T2I_REINSTALL=1 T2I_BUILD_CUDA=1
  source scripts/_env.sh
  unset T2I_REINSTALL
  has_cuda_kernels || { echo "gpu_check: the rebuilt extension still has no CUDA kernels (is nvcc on PATH?)" >&2; exit 1; }
fi
pip_missing pytest:pytest
INSTALL_S=$(( $(date +%s) - START ))
if [ -z "$OUTFILE" ]; then
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
  OUTFILE="docs/gpu/$(date +%F)-${gpu}.json"
fi
exec "$PY" scripts/gpu_check.py --out "$OUTFILE" --work "$WORK" --started-at "$START" --install-seconds "$INSTALL_S" \
  ${PASS[@]+"${PASS[@]}"}
