"""First-use self-check of the compiled t2i kernels: forward and backward against the reference, once per (op, device, dtype).

The CUDA kernels have compiled on machines with no GPU, so the first process that runs one on a real
device must not trust it blindly. The first time an op runs with the extension on a device in a dtype,
`passed(op, device, dtype)` runs the kernel and the pure-PyTorch reference (in float64) on a small random
input with ragged lengths and padding (contiguous and strided views, a few milliseconds) and compares
outputs and input gradients. On a mismatch or an exception it warns once, naming the op, device, dtype and
the error, and from then on `t2icli.ops` uses the reference for that op on that device in this process
(T2I_OPS=ext makes it an error instead). T2I_OPS_SELFCHECK=0 skips the check. `results()` lists what was
checked; `t2i env` and scripts/gpu_check.sh report it.

When it runs: eagerly, on real tensors it makes itself, never inside a traced graph. `passed` is a constant
to torch.compile (the check runs while dynamo traces the first compiled call, outside the graph, and the
graph bakes in its verdict); under fake or proxy tensors (make_fx, export) the active dispatch modes are
set aside while it runs. During CUDA graph capture, or for a device this process cannot use, nothing is
checked or recorded and the kernel is used (the next eager call checks it). One lock serialises checks
(threads wait for the verdict; none uses an unchecked kernel meanwhile) and is renewed in forked children.
"""

import itertools
import os
import threading
import time
import warnings

import torch

from t2icli.ops import reference

__all__ = ["OPS", "TOLERANCE", "enabled", "passed", "results", "run"]

OPS = ("word_region_attention", "damsm_word_scores")

# Largest allowed |kernel - reference| / max|reference| over every output and gradient. The reference runs in
# float64, so float32 kernels differ by float32 rounding (about 1e-6 here); a real bug gives 1e-2 or more.
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}

_G1, _G2 = 4.0, 5.0  # AttnGAN's GAMMA1, GAMMA2
_lock = threading.Lock()
_results = {}  # (op, device str, dtype) -> record dict (see results())


def _renew_lock():
    """A fork taken while another thread held the lock would leave the child's copy locked forever."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_lock)


def enabled():
    """False when T2I_OPS_SELFCHECK=0 (checks skipped: the kernels are used unchecked)."""
    return os.environ.get("T2I_OPS_SELFCHECK", "1").strip() != "0"


def _device_str(device):
    """'cpu' or 'cuda:INDEX' (the current device when no index is given)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


@torch.compiler.assume_constant_result
def passed(op, device, dtype):
    """True when the compiled kernel of `op` ("word_region_attention" | "damsm_word_scores") may be used on
    `device` (torch.device or str) for inputs of `dtype` (float32 | float64).

    Runs the self-check the first time (op, device, dtype) is asked for in this process, warns once and returns
    False from then on if the kernel disagrees with the reference or raises; raises RuntimeError instead when
    T2I_OPS=ext. Always True when T2I_OPS_SELFCHECK=0. A constant to torch.compile.
    """
    if not enabled():
        return True
    key = (op, _device_str(device), dtype)
    rec = _results.get(key)
    if rec is None:
        with _lock:
            rec = _results.get(key)
            if rec is None:
                rec = _check(*key)
                if rec is not None:
                    _results[key] = rec
                    if not rec["ok"] and not _forced_ext():
                        _warn(rec)
    if rec is not None and not rec["ok"] and _forced_ext():
        raise RuntimeError(f"{_describe(rec)}; T2I_OPS=ext demands the compiled kernels, so this is an error")
    return rec is None or rec["ok"]


def results():
    """The self-checks run so far in this process, sorted by (op, device, dtype): a list of dicts {op, device,
    dtype, ok, error: largest |kernel - reference| / max|reference| over every output and gradient (None when
    the kernel raised), tolerance, worst: the output or gradient with that error, nonfinite: the first one with
    NaN/inf values (or None), exception: "Type: message" when the kernel raised (or None), inputs: the shapes
    checked, ms: how long the check took}."""
    return [dict(r) for _, r in sorted(_results.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2])))]


def run(devices=None, dtypes=(torch.float32,)):
    """Self-check every op on `devices` (default: cpu and every visible CUDA device) in `dtypes`, where not done
    yet; returns results() for those (op, device, dtype). Needs the extension loaded (ops.backend_info())."""
    if devices is None:
        devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    wanted = {(op, _device_str(d), dt) for op in OPS for d in devices for dt in dtypes}
    for op, device, dtype in sorted(wanted, key=str):
        passed(op, device, dtype)
    return [r for r in results() if (r["op"], r["device"], getattr(torch, r["dtype"])) in wanted]


# -- the check -------------------------------------------------------------------------------------------


def _usable(device):
    """False for a device this process cannot run on now (no CUDA, or a CUDA graph being captured)."""
    device = torch.device(device)
    if device.type == "cpu":
        return True
    if device.type != "cuda" or not torch.cuda.is_available() or device.index >= torch.cuda.device_count():
        return False
    return not torch.cuda.is_current_stream_capturing()


def _check(op, device, dtype):
    """Runs the check of `op` on real tensors; returns its record, or None when it cannot run here and now."""
    if dtype not in TOLERANCE or not _usable(device):
        return None
    from torch.utils._python_dispatch import _disable_current_modes

    t0 = time.perf_counter()
    worst, error, exc, nonfinite = "", 0.0, None, None
    # Fake/proxy modes (make_fx, export) set aside: the check computes on real tensors and records nothing.
    with _disable_current_modes(), torch.enable_grad(), torch.autocast(torch.device(device).type, enabled=False):
        try:
            pairs = _CHECKS[op](torch.device(device), dtype)
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)  # an asynchronous kernel fault surfaces here, inside the try
            for name, got, want in pairs:
                got, want = got.detach(), want.detach().to(got.dtype)
                if not want.numel():
                    continue
                if nonfinite is None and not torch.isfinite(got).all():  # the reference is finite on these inputs
                    nonfinite = name
                err = float((got - want).abs().nan_to_num(0.0).max()) / max(float(want.abs().max()), 1e-12)
                if err > error:
                    worst, error = name, err
        except Exception as e:  # noqa: BLE001 - any kernel failure means: do not use it
            exc = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    ok = exc is None and nonfinite is None and error <= TOLERANCE[dtype]
    return {"op": op, "device": device, "dtype": str(dtype).replace("torch.", ""), "ok": ok,
            "error": None if exc else error, "tolerance": TOLERANCE[dtype], "worst": worst or None,
            "nonfinite": nonfinite, "exception": exc, "inputs": _SHAPES[op],
            "ms": round((time.perf_counter() - t0) * 1e3, 2)}


def _forced_ext():
    return os.environ.get("T2I_OPS", "").strip().lower() == "ext"


def _describe(rec):
    """'t2i: the compiled OP kernel on DEVICE (DTYPE) raised ... | disagrees with the reference: ...'."""
    if rec["exception"]:
        what = f"raised {rec['exception']}"
    elif rec["nonfinite"]:
        what = f"returned non-finite values (NaN or inf) in {rec['nonfinite']}, where the reference is finite"
    else:
        what = (f"disagrees with the reference: {rec['worst']} max error {rec['error']:.1e} of its largest value "
                f"(tolerance {rec['tolerance']:.0e})")
    return f"t2i: the compiled {rec['op']} kernel on {rec['device']} ({rec['dtype']}) {what}"


def _warn(rec):
    """The one warning of a failed check; stacklevel points at the caller of t2icli.ops.<op>."""
    warnings.warn(f"{_describe(rec)}; using the pure-PyTorch reference for {rec['op']} on {rec['device']} for the "
                  "rest of this process (T2I_OPS_SELFCHECK=0 skips the check)", RuntimeWarning, stacklevel=5)


def _randn(shape, g, dtype, device, strided):
    """Random [*shape] on device; strided: a non-contiguous view (the last two dims stored transposed)."""
    if not strided:
        return _cpu_randn(shape, g).to(device, dtype)
    return _cpu_randn((*shape[:-2], shape[-1], shape[-2]), g).to(device, dtype).transpose(-1, -2)


def _cpu_randn(shape, g):
    """float64 normal draws from generator g, made on the CPU whatever default device a `with torch.device(...)`
    around the caller sets."""
    return torch.randn(shape, generator=g, dtype=torch.float64, device="cpu")


def _grads(out, inputs, cots, retain=False):
    """Gradients of <out, cots> wrt inputs (retain: the graph is used again)."""
    return torch.autograd.grad(out, inputs, cots, retain_graph=retain)


_SHAPES = {"word_region_attention": {"B": 4, "C": 8, "T": 6, "N": 45, "words": [6, 3, 1, 0]},
           # N = 4 regions: few enough for the CPU kernel's Gram way (csrc/cpu_kernels.cpp use_gram), 37 not
           "damsm_word_scores": {"M": 5, "D": 16, "T": 7, "N": [37, 4], "lengths": [7, 1, 4, 7, 2]}}


def _check_attention(device, dtype):
    """(name, kernel value, float64 reference value) of word_region_attention's outputs and gradients; the
    batch holds a full caption, two shorter ones and one with every word masked (the edge rows)."""
    s = _SHAPES["word_region_attention"]
    B, C, T, N = s["B"], s["C"], s["T"], s["N"]
    g = torch.Generator().manual_seed(0)
    words = torch.tensor(s["words"], device=device)
    mask = torch.arange(T, device=device)[None, :] >= words[:, None]  # [B, T] True = padding
    pairs = []
    for strided in (False, True):
        h = _randn((B, C, N), g, dtype, device, strided)  # [B, C, N]
        e = _randn((B, C, T), g, dtype, device, strided)  # [B, C, T]
        gc, gb = _cpu_randn((B, C, N), g).to(device), _cpu_randn((B, T, N), g).to(device)  # cotangents of c, beta
        x = [h.detach().requires_grad_(True), e.detach().requires_grad_(True)]
        r = [h.detach().double().requires_grad_(True), e.detach().double().requires_grad_(True)]
        c, beta = torch.ops.t2i.word_region_attention(x[0], x[1], mask, True)
        c_ref, beta_ref = reference.word_region_attention(r[0], r[1], mask, return_attn=True)
        gx = _grads((c, beta), x, (gc.to(dtype), gb.to(dtype)), retain=False)
        gr = _grads((c_ref, beta_ref), r, (gc, gb), retain=True)
        c_only = torch.ops.t2i.word_region_attention(x[0], x[1], mask, False)[0]  # [B, C, N], no beta
        gx_c = _grads(c_only, x, gc.to(dtype), retain=False)
        gr_c = _grads(c_ref, r, gc, retain=False)
        tag = " (strided)" if strided else ""
        pairs += [(f"forward c{tag}", c, c_ref), (f"forward beta{tag}", beta, beta_ref),
                  (f"backward grad_h{tag}", gx[0], gr[0]), (f"backward grad_e{tag}", gx[1], gr[1]),
                  (f"backward grad_h without beta{tag}", gx_c[0], gr_c[0]),
                  (f"backward grad_e without beta{tag}", gx_c[1], gr_c[1])]
    return pairs


def _check_damsm(device, dtype):
    """(name, kernel value, float64 reference value) of damsm_word_scores' scores and gradients (ragged lengths
    from 1 to T)."""
    s = _SHAPES["damsm_word_scores"]
    M, D, T = s["M"], s["D"], s["T"]
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor(s["lengths"], device=device)
    pairs = []
    for N, strided in itertools.product(s["N"], (False, True)):
        img = _randn((M, D, N), g, dtype, device, strided)  # [M, D, N]
        words = _randn((M, D, T), g, dtype, device, strided)  # [M, D, T]
        cot = _cpu_randn((M, M), g).to(device)  # cotangent of the scores
        x = [img.detach().requires_grad_(True), words.detach().requires_grad_(True)]
        r = [img.detach().double().requires_grad_(True), words.detach().double().requires_grad_(True)]
        score_ref = reference.damsm_word_scores(r[0], r[1], lengths, _G1, _G2)
        gr = _grads(score_ref, r, cot)
        # The CPU training path (forward keeps S and its softmaxes, backward reads them) is checked beside the plain one.
        for path in ("", " (saved softmaxes)") if device.type == "cpu" else ("",):
            if path:
                score = torch.ops.t2i.damsm_word_scores_save(x[0], x[1], lengths, _G1, _G2)[0]
            else:
                score = torch.ops.t2i.damsm_word_scores(x[0], x[1], lengths, _G1, _G2)
            gx = _grads(score, x, cot.to(dtype))
            tag = (" (strided)" if strided else "") + path + ("" if N == s["N"][0] else f" ({N} regions)")
            pairs += [(f"forward score{tag}", score, score_ref), (f"backward grad_img{tag}", gx[0], gr[0]),
                      (f"backward grad_words{tag}", gx[1], gr[1])]
    return pairs


_CHECKS = {"word_region_attention": _check_attention, "damsm_word_scores": _check_damsm}
