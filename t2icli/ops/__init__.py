"""Python face of csrc/: word-region attention and DAMSM all-pairs word scores, fused kernel or reference.

Backend: the compiled `torch.ops.t2i.*` kernels when available (see `_ext`), else the pure-PyTorch
reference in `reference.py` (one warning). `T2I_OPS=ref|ext` forces one; `backend_info()` says
which is active. The extension is built/loaded lazily, on the first op call or backend_info().

Precision: the kernels run in float32 or float64. float16/bfloat16 inputs are computed in
float32 and the results cast back to the input dtype (gradients flow through the casts). The
CPU kernels flush subnormal intermediates (< 1e-38) to zero; results match the reference to
float rounding. On CUDA, damsm_word_scores copies `lengths` to the host once per call (to pack
the captions), i.e. it synchronises.
"""

import torch

from t2icli.ops import _ext, reference

__all__ = ["word_region_attention", "damsm_word_scores", "backend_info"]

_KERNEL_DTYPES = (torch.float32, torch.float64)


def backend_info():
    """Which backend is active.

    Returns {"backend": "ext"|"ref", "device_kernels": e.g. ["cpu", "cuda"], "reason": why the
    reference is used ("" for ext), "path": the loaded library file or None}.
    """
    return dict(_ext.state())


def _upcast(*xs):
    """Casts half/bfloat16 tensors to float32; returns (tensors, original dtype)."""
    dtype = xs[0].dtype
    if dtype in _KERNEL_DTYPES:
        return xs, dtype
    if not dtype.is_floating_point:
        raise TypeError(f"t2i ops need floating-point inputs, got {dtype}")
    return tuple(x.float() for x in xs), dtype


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
    if e.dtype != h.dtype:
        raise TypeError(f"h and e must share a dtype, got {h.dtype} and {e.dtype}")
    mask = mask.to(device=h.device, dtype=torch.bool)
    (h32, e32), dtype = _upcast(h, e)
    if _ext.use_ext():
        c, beta = torch.ops.t2i.word_region_attention(h32, e32, mask, bool(return_attn))
    else:
        c, beta = reference.word_region_attention(h32, e32, mask, return_attn=True)
    if dtype != h32.dtype:
        c, beta = c.to(dtype), beta.to(dtype)
    return (c, beta) if return_attn else c


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
    if words.dtype != img.dtype:
        raise TypeError(f"img and words must share a dtype, got {img.dtype} and {words.dtype}")
    lengths = torch.as_tensor(lengths).to(device=img.device, dtype=torch.long)
    if lengths.shape != (img.shape[0],):
        raise ValueError(f"lengths must be [M={img.shape[0]}], got {tuple(lengths.shape)}")
    (img32, words32), dtype = _upcast(img, words)
    if _ext.use_ext():
        score = torch.ops.t2i.damsm_word_scores(img32, words32, lengths, float(gamma1), float(gamma2))
    else:
        score = reference.damsm_word_scores(img32, words32, lengths, float(gamma1), float(gamma2))
    return score.to(dtype)
