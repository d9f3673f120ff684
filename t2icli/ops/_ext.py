"""Finds, builds and loads the compiled `t2i` operators, and decides which backend `t2icli.ops` uses.

Order: T2I_OPS=ref forces the reference; otherwise the extension built by setup.py
(`t2icli._C`) is imported; failing that, csrc/ is JIT-built with ninja into ~/.cache/t2i
(or $T2I_CACHE); failing that, the pure-PyTorch reference is used with ONE warning
(T2I_OPS=ext turns that failure into an error). Nothing is compiled at import time.
"""

import glob
import hashlib
import os
import threading
import warnings

import torch

_lock = threading.Lock()
_state = None  # dict once resolved: backend, device_kernels, reason, path
_loaded_path = [None]  # file of the library that registered the ops

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "csrc")


# Every operator csrc/t2i_ops.cpp defines: a library that registers some but not all is older than the sources.
OPS = ("word_region_attention", "word_region_attention_backward", "damsm_word_scores", "damsm_word_scores_backward",
       "damsm_word_scores_save", "damsm_word_scores_backward_saved")


def _missing_ops():
    """The names in OPS that no loaded library has registered with the dispatcher."""
    missing = []
    for name in OPS:
        try:
            getattr(torch.ops.t2i, name).default  # noqa: B018
        except (AttributeError, RuntimeError):
            missing.append(name)
    return missing


def _registered(what, path):
    """After `what` (a library at `path`) was loaded: (path, None) when every op is registered; (None, reason) when
    only some are: the library is older than the sources, and the namespace is taken, so no JIT build can register
    the rest in this process; None when none are."""
    missing = _missing_ops()
    if not missing:
        _loaded_path[0] = path
        return path, None
    if len(missing) < len(OPS):
        return None, (f"{what} is older than csrc/ (it lacks t2i::{', t2i::'.join(missing)}): rebuild it with "
                      "`pip install -e .` (or `python setup.py build_ext --inplace`)")
    return None


def _device_kernels():
    """Device types the loaded library has kernels for, e.g. ['cpu'] or ['cpu', 'cuda']."""
    kinds = ["cpu"]
    try:
        if torch._C._dispatch_has_kernel_for_dispatch_key("t2i::damsm_word_scores", "CUDA"):
            kinds.append("cuda")
    except Exception:  # private API moved: report what we know
        pass
    return kinds


def _cache_dir():
    """The JIT build cache root: $T2I_CACHE or ~/.cache/t2i."""
    return os.environ.get("T2I_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "t2i")


def _jit_build():
    """Compiles csrc/ with torch.utils.cpp_extension.load; returns the library path."""
    from torch.utils import cpp_extension

    cpp = sorted(glob.glob(os.path.join(CSRC, "*.cpp")))
    cu = sorted(glob.glob(os.path.join(CSRC, "*.cu")))
    if not cpp:
        raise RuntimeError(f"no C++ sources found in {CSRC}")
    with_cuda = bool(cu) and torch.cuda.is_available() and cpp_extension.CUDA_HOME is not None
    sources = cpp + (cu if with_cuda else [])
    # The build folder is keyed by the sources and the torch build, so edits or a new torch rebuild.
    key = hashlib.sha256()
    for path in sources + sorted(glob.glob(os.path.join(CSRC, "*.h"))):
        key.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            key.update(f.read())
    key.update(torch.__version__.encode())
    key.update(str(with_cuda).encode())
    build_dir = os.path.join(_cache_dir(), f"t2i_ops_{key.hexdigest()[:16]}")
    os.makedirs(build_dir, exist_ok=True)
    cflags = ["-O3", "-std=c++20", "-fopenmp"] + (["-DT2I_WITH_CUDA=1"] if with_cuda else [])
    cpp_extension.load(
        name="t2i_ops",
        sources=sources,
        extra_cflags=cflags,
        extra_cuda_cflags=["-O3", "--use_fast_math", "-std=c++20", "-DT2I_WITH_CUDA=1"],
        extra_ldflags=["-fopenmp"],
        build_directory=build_dir,
        is_python_module=False,
        verbose=os.environ.get("T2I_VERBOSE_BUILD") == "1",
    )
    return os.path.join(build_dir, "t2i_ops.so")


def _load():
    """Loads the extension (prebuilt, else JIT); returns (path, None) or (None, reason)."""
    found = _registered(f"the loaded t2i library ({_loaded_path[0] or 'unknown file'})", _loaded_path[0])
    if found:
        return found
    reasons = []
    try:
        from t2icli import _C  # built by setup.py; registers the ops on import

        found = _registered(f"the prebuilt t2icli._C ({_C.__file__})", _C.__file__)
        if found:
            return found
        reasons.append("t2icli._C imported but registered no t2i ops")
    except ImportError as exc:
        reasons.append(f"no prebuilt t2icli._C ({exc})")
    try:
        path = _jit_build()
        found = _registered(f"the JIT-built library ({path})", path)
        if found:
            return found
        reasons.append("JIT-built library registered no t2i ops")
    except Exception as exc:  # compiler missing, build error, ...
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        reasons.append(f"JIT build failed: {type(exc).__name__}: {last}")
    return None, "; ".join(reasons)


def state():
    """Resolves the backend once (building the extension if needed) and returns the info dict."""
    global _state
    if _state is not None:
        return _state
    with _lock:
        if _state is not None:
            return _state
        want = os.environ.get("T2I_OPS", "auto").strip().lower() or "auto"
        if want not in ("auto", "ref", "ext"):
            raise ValueError(f"T2I_OPS must be 'ref', 'ext' or unset, got {want!r}")
        if want == "ref":
            _state = {"backend": "ref", "device_kernels": [], "reason": "T2I_OPS=ref", "path": None}
            return _state
        path, reason = _load()
        if reason is None:
            from t2icli.ops import _registration

            _registration.register()
            _state = {"backend": "ext", "device_kernels": _device_kernels(), "reason": "", "path": path}
            return _state
        if want == "ext":
            raise RuntimeError(f"T2I_OPS=ext but the t2i extension could not be loaded: {reason}")
        warnings.warn(
            f"t2i: C++/CUDA kernels unavailable, using the slower pure-PyTorch reference ops ({reason})",
            RuntimeWarning,
            stacklevel=3,
        )
        _state = {"backend": "ref", "device_kernels": [], "reason": reason, "path": None}
        return _state


@torch.compiler.assume_constant_result
def use_ext():
    """True when the compiled operators are the active backend (a constant to torch.compile)."""
    return state()["backend"] == "ext"
