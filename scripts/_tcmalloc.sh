# Sourced by _env.sh. use_tcmalloc: the t2i processes a script starts from then on (its exported LD_PRELOAD) allocate
# with tcmalloc (gperftools) when the system has it. A CPU training step allocates and frees hundreds of tensors;
# with glibc's malloc the toybirds-cpu AttnGAN and DAMSM steps run 1.1-1.2x slower (README: *Training at
# scale*). An allocator changes no arithmetic: a run trains the same bits with either. Only the training scripts
# (demo.sh, train_pretrained.sh) call it, so test.sh's browser and package tools keep the system's malloc.
# T2I_TCMALLOC=0 keeps the system's malloc; an LD_PRELOAD that already names tcmalloc is kept as it is.
# tcmalloc_library: prints the path of the system's tcmalloc (ldconfig's cache), or nothing.
tcmalloc_library() {
  { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true; } |
    awk '$1 ~ /^libtcmalloc(_minimal)?\.so\.4$/ {print $NF; exit}'
}
use_tcmalloc() {
  case "${T2I_TCMALLOC:-1}" in
    0) return 0 ;;
    1) ;;
    *) echo "t2i: T2I_TCMALLOC must be 0 (the system's malloc) or 1 (tcmalloc where found), got '$T2I_TCMALLOC'" >&2
       return 2 ;;
  esac
  [ "$(uname -s)" = Linux ] || return 0
  case ":${LD_PRELOAD:-}:" in *tcmalloc*) return 0 ;; esac
  local lib
  lib=$(tcmalloc_library)
  # a library the loader cannot preload (another architecture's) says so on stderr: then it is not used
  if [ -n "$lib" ] && [ -z "$(LD_PRELOAD="$lib" /bin/sh -c : 2>&1)" ]; then
    export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
    echo "t2i: allocating with tcmalloc ($lib; T2I_TCMALLOC=0 keeps the system's malloc)" >&2
  else
    echo "t2i: no tcmalloc on this system; CPU training runs 1.1-1.2x faster with it (Debian/Ubuntu:" \
      "apt-get install libtcmalloc-minimal4)" >&2
  fi
}
