#!/usr/bin/env bash
# Compiles csrc/ (C++ and CUDA) against a CUDA build of torch, so the .cu code is checked on a
# machine without a GPU. Nothing is run on a GPU; the built library is only loaded and its
# CUDA kernels looked up in the dispatcher.
#
#   scripts/check_cuda_build.sh                 # makes /tmp/cudavenv (torch 2.14.1 cu130) if missing
#   CUDAVENV=/path/to/venv TORCH_CUDA_ARCH_LIST="8.0;9.0" scripts/check_cuda_build.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CUDAVENV:-/tmp/cudavenv}"
OUT="${T2I_CUDA_CHECK_DIR:-/tmp/t2i_cuda_check}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"  # one arch keeps the 2-core build short
export MAX_JOBS="${MAX_JOBS:-2}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "check_cuda_build: creating $VENV with a CUDA build of torch" >&2
  python3 -m venv "$VENV"
  # --no-compile: no .pyc for torch's thousands of modules (CPU minutes on a 2-core CI machine; this venv only builds)
  "$VENV/bin/pip" install -q --no-compile "torch==2.14.1" numpy ninja setuptools
fi
command -v nvcc >/dev/null || { echo "check_cuda_build: nvcc not found on PATH" >&2; exit 1; }
"$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 'torch in $VENV is not a CUDA build')"

# Toolkit headers a minimal nvcc install lacks (cusparse.h, cublas_v2.h, ...) ship with the CUDA wheel.
WHEEL_INC="$("$VENV/bin/python" -c "import glob, os, site; print(':'.join(sorted(glob.glob(os.path.join(site.getsitepackages()[0], 'nvidia', '*', 'include')))))")"
if [ -n "$WHEEL_INC" ]; then
  export CPATH="${WHEEL_INC}${CPATH:+:$CPATH}"
  export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:-} $(echo "$WHEEL_INC" | tr ':' '\n' | sed 's/^/-I/' | tr '\n' ' ')"
fi

# libcudart.so for the link step: the toolkit's lib folder (or the wheel's).
for d in "${CUDA_HOME:-}/lib64" "${CUDA_HOME:-}/lib" /usr/local/cuda/lib64 /usr/local/cuda-*/lib64 /usr/local/cuda-*/lib; do
  if [ -e "$d/libcudart.so" ]; then export LIBRARY_PATH="$d${LIBRARY_PATH:+:$LIBRARY_PATH}"; break; fi
done

rm -rf "$OUT/lib" && mkdir -p "$OUT"  # $OUT/tmp keeps ninja's objects between runs
cd "$ROOT"
echo "check_cuda_build: compiling csrc/*.cpp + csrc/*.cu for sm ${TORCH_CUDA_ARCH_LIST} into $OUT" >&2
T2I_BUILD_CUDA=1 "$VENV/bin/python" setup.py -q build_ext --build-lib "$OUT/lib" --build-temp "$OUT/tmp" 2>&1 \
  | grep -v -e "Wc++20-extensions" -e "^\s*[0-9]* |" -e "^\s*|" || true
SO="$(ls "$OUT"/lib/t2icli/_C*.so 2>/dev/null | head -1)"
[ -n "$SO" ] || { echo "check_cuda_build: FAILED, no library built" >&2; exit 1; }
[ "$(nm -C "$SO" | grep -c damsm_forward_cuda)" -gt 0 ] || { echo "check_cuda_build: FAILED, CUDA kernels missing from $SO" >&2; exit 1; }

# Load it (no GPU needed) and check that every op has a CUDA kernel registered.
"$VENV/bin/python" - "$SO" <<'EOF'
import sys
import torch
torch.ops.load_library(sys.argv[1])
for op in ("word_region_attention", "word_region_attention_backward", "damsm_word_scores", "damsm_word_scores_backward"):
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"t2i::{op}", key), f"t2i::{op} has no {key} kernel"
for op in ("damsm_word_scores_save", "damsm_word_scores_backward_saved"):  # the CPU training path only
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"t2i::{op}", "CPU"), f"t2i::{op} has no CPU kernel"
print(f"check_cuda_build: OK, {sys.argv[1]} has CPU and CUDA kernels for every t2i op (CPU only: the two of the "
      f"CPU training path) (compiled, not run: cuda available = {torch.cuda.is_available()})")
EOF
