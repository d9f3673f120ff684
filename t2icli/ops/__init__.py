"""Python face of csrc/: word-region attention and DAMSM all-pairs word scores, fused kernel or reference.

Backend: the compiled `torch.ops.t2i.*` kernels when available (see `_ext`), else the pure-PyTorch
reference in `reference.py` (one warning). `T2I_OPS=ref|ext` forces one; `backend_info()` says
which is active. The extension is built/loaded lazily, on the first op call or backend_info().

Self-check (`_selfcheck`): the first time an op runs with the extension on a device in a dtype, the kernel
is compared with the reference, forward and backward, on a small input; if it disagrees or raises, one
warning names the op, device, dtype and error, and the reference is used for that op on that device for the
rest of the process. T2I_OPS_SELFCHECK=0 skips it; `selfcheck()` runs it and reports.

Precision: the kernels run in float32 or float64. Outside autocast, float16/bfloat16 inputs are computed in
float32 and the results cast back to the input dtype (gradients flow through the casts). Under autocast on
the inputs' device (`--precision bf16`), both backends compute in float32 with autocast off and return
float32, whatever mix of floating dtypes comes in (float64 stays float64): the same rule that
`torch.library.register_autocast(op, device, torch.float32)` gives the raw `torch.ops.t2i.*` ops (see
`_registration`). The CPU kernels flush subnormal intermediates (< 1e-38) to zero; results match the
reference to float rounding. On CUDA, damsm_word_scores copies `lengths` to the host once per call (to pack
the captions), i.e. it synchronises.
"""

import contextlib

import torch

from t2icli.ops import _ext, _selfcheck, reference

__all__ = ["word_region_attention", "damsm_word_scores", "damsm_word_scores_paired", "keeps_softmaxes", "SAVE_MAX_BYTES",
           "backend_info", "selfcheck"]

_KERNEL_DTYPES = (torch.float32, torch.float64)


def backend_info():
    """Which backend is active.

    Returns {"backend": "ext"|"ref", "device_kernels": e.g. ["cpu", "cuda"], "reason": why the
    reference is used ("" for ext), "path": the loaded library file or None}.
    """
    return dict(_ext.state())


def selfcheck(devices=None, dtypes=(torch.float32,)):
    """Runs the first-use self-check of every op on `devices` (default: cpu and every visible CUDA device) in
    `dtypes` where this process has not yet, and returns the records of those (list of dicts: op, device, dtype,
    ok, error, tolerance, worst, exception, inputs, ms). [] when the reference backend is active or
    T2I_OPS_SELFCHECK=0 (nothing to check)."""
    if backend_info()["backend"] != "ext" or not _selfcheck.enabled():
        return []
    return _selfcheck.run(devices, dtypes)


def _use_ext(op, x):
    """True when `op` runs the compiled kernel for input x (the extension is loaded and passed its self-check on
    x's device and dtype). Both parts are constants to torch.compile."""
    return _ext.use_ext() and _selfcheck.passed(op, x.device, x.dtype)


def _boundary(names, *xs):
    """The dtype boundary of the ops: returns (xs in float32 or float64, dtype of the results, context to compute in).

    Under autocast on xs' device, floating inputs of any dtype but float64 become float32, results stay float32 and
    the computation runs with autocast off (so the reference's matmuls are not cast down either). Otherwise
    the inputs must share one floating dtype; float16/bfloat16 is computed in float32 and cast back.
    """
    device_type = xs[0].device.type
    for n, x in zip(names, xs):
        if not x.dtype.is_floating_point:
            raise TypeError(f"t2i ops need floating-point inputs, got {n} {x.dtype}")
    if torch.is_autocast_enabled(device_type):
        xs = tuple(x if x.dtype == torch.float64 else x.float() for x in xs)
        out_dtype, ctx = xs[0].dtype, torch.autocast(device_type, enabled=False)
    else:
        out_dtype, ctx = xs[0].dtype, contextlib.nullcontext()
        if len({x.dtype for x in xs}) == 1 and out_dtype not in _KERNEL_DTYPES:
            xs = tuple(x.float() for x in xs)
    if len({x.dtype for x in xs}) > 1:
        raise TypeError(f"{' and '.join(names)} must share a dtype, got {' and '.join(str(x.dtype) for x in xs)}")
    return xs, out_dtype, ctx


def word_region_attention(h, e, mask, return_attn: bool = False):
    """Generator word-region attention (AttnGAN eq. 1-2).

    h: [B, C, N] region features; e: [B, C, T] projected word features; mask: [B, T] bool,
    True = padding (exactly zero weight). Returns c [B, C, N] = sum_i beta_ji e_i with
    beta = softmax over unmasked words of h_j . e_i, or (c, beta [B, T, N]) when return_attn.
    A sample with every word masked gets beta = 0, c = 0. Differentiable wrt h and e.
    """
    if h.dim() != 3 or e.dim() != 3 or mask.dim() != 2:
        raise ValueError(f"expected h [B,C,N], e [B,C,T], mask [B,T]; got {tuple(h.shape)}, {tuple(e.shape)}, {tuple(mask.shape)}")
    if h.shape[:2] != e.shape[:2] or mask.shape != (e.shape[0], e.shape[2]):
        raise ValueError(f"shape mismatch: h {tuple(h.shape)}, e {tuple(e.shape)}, mask {tuple(mask.shape)}")
    mask = mask.to(device=h.device, dtype=torch.bool)
    (h32, e32), dtype, ctx = _boundary(("h", "e"), h, e)
    with ctx:
        if _use_ext("word_region_attention", h32):
            c, beta = torch.ops.t2i.word_region_attention(h32, e32, mask, bool(return_attn))
        else:
            c, beta = reference.word_region_attention(h32, e32, mask, return_attn=True)
    if dtype != h32.dtype:
        c, beta = c.to(dtype), beta.to(dtype)
    return (c, beta) if return_attn else c


SAVE_MAX_BYTES = 32 * 2**20  # the most memory damsm_word_scores keeps for its backward (see keeps_softmaxes)


def keeps_softmaxes(img, words, lengths):
    """True where damsm_word_scores runs its CPU training path: the forward keeps each image's word-region scores S
    and softmaxes P and A ([M, 3, L, N], L = sum(lengths)) for the backward, which then skips recomputing them (the
    score GEMM and the exponentials), to the same bits. Only while they fit in SAVE_MAX_BYTES: beyond, a fresh
    buffer of that size costs glibc's malloc more in page faults than the recompute (scripts/bench_ops.py, M=48,
    N=289, when P and A were kept: 57 MB, 216 ms against 199 forward and backward), and the memory target of
    DESIGN.md (a third of the vectorised reference's peak) would not hold; toybirds' DAMSM batch keeps 24 MB. Eager
    mode only: the kept tensor's size is data-dependent."""
    if not (img.device.type == "cpu" and torch.is_grad_enabled() and (img.requires_grad or words.requires_grad)
            and not torch.compiler.is_compiling()):
        return False
    return 3 * img.shape[0] * int(lengths.sum()) * img.shape[2] * img.element_size() <= SAVE_MAX_BYTES


def damsm_word_scores(img, words, lengths, gamma1: float, gamma2: float):
    """DAMSM word-level score for all M x M (image, caption) pairs.

    img: [M, D, N] region features; words: [M, D, T] word features; lengths: [M] int (caption
    j uses its first lengths[j] >= 1 words). Returns [M, M], rows images, columns captions:
    score[i, j] = log(sum_w exp(gamma2 * R_w)) as in the original AttnGAN `words_loss` (NOT
    divided by gamma2 as the paper's eq. 10 is). gamma3 scaling, class masking and the
    cross-entropy belong to the caller. Differentiable wrt img and words.
    """
    if img.dim() != 3 or words.dim() != 3 or img.shape[:2] != words.shape[:2]:
        raise ValueError(f"expected img [M,D,N], words [M,D,T]; got {tuple(img.shape)}, {tuple(words.shape)}")
    lengths = torch.as_tensor(lengths).to(device=img.device, dtype=torch.long)
    if lengths.shape != (img.shape[0],):
        raise ValueError(f"lengths must be [M={img.shape[0]}], got {tuple(lengths.shape)}")
    (img32, words32), dtype, ctx = _boundary(("img", "words"), img, words)
    with ctx:
        if _use_ext("damsm_word_scores", img32):
            if keeps_softmaxes(img32, words32, lengths):  # the CPU training path
                score = torch.ops.t2i.damsm_word_scores_save(img32, words32, lengths, float(gamma1), float(gamma2))[0]
            else:
                score = torch.ops.t2i.damsm_word_scores(img32, words32, lengths, float(gamma1), float(gamma2))
        else:
            score = reference.damsm_word_scores(img32, words32, lengths, float(gamma1), float(gamma2))
    return score.to(dtype)


def damsm_word_scores_paired(img, words, lengths, gamma1: float, gamma2: float):
    """The DAMSM word-level score of P given (image, caption) pairs: pair p is img[p] [D, N] with words[p] [D, T]
    (first lengths[p] words). Returns [P]. Always the reference (P pairs cost P / M^2 of damsm_word_scores: no
    kernel needed); the same dtype rule as the kernels. Used for hard negative captions (losses.damsm_loss)."""
    if img.dim() != 3 or words.dim() != 3 or img.shape[:2] != words.shape[:2]:
        raise ValueError(f"expected img [P,D,N], words [P,D,T]; got {tuple(img.shape)}, {tuple(words.shape)}")
    lengths = torch.as_tensor(lengths).to(device=img.device, dtype=torch.long)
    (img32, words32), dtype, ctx = _boundary(("img", "words"), img, words)
    with ctx:
        score = reference.damsm_word_scores_paired(img32, words32, lengths, float(gamma1), float(gamma2))
    return score.to(dtype)
