"""Test-only hook: replaces a compiled t2i kernel with a faulty one, to show the first-use self-check at work.

Lives under tests/ and is never imported by t2icli. `install(op, device_type, fault)` registers a Python
kernel for `t2i::op` on the dispatch key of device_type ("cpu" | "cuda") that overrides the compiled one
(the dispatcher warns that it does) until the returned Library is destroyed (`uninstall`), which brings
the compiled kernel back. Subprocess tests use it as `PYTHONPATH=tests python -c "import faulty_kernels; ..."`.

Faults (each a bug these kernels could plausibly have):
  word_region_attention
    mask_bug       forward applies sample 0's mask to the whole batch (the original AttnGAN's mask.repeat bug)
    nan            forward returns one NaN in c
  word_region_attention_backward
    grad_e_term    backward forgets the softmax path's term of grad_e (de = dc beta^T only)
  damsm_word_scores
    paper_lse      forward divides the log-sum-exp by gamma2 (the paper's eq. 10, not the code the backward follows)
  any of them
    raise          raises like a CUDA fault would
A fault can also sleep first (`delay` seconds), to widen the window in which threads race for the first use.
"""

import time
import warnings

import torch

from t2icli.ops import reference

FAULTS = {
    "word_region_attention": ("mask_bug", "nan", "raise"),
    "word_region_attention_backward": ("grad_e_term", "raise"),
    "damsm_word_scores": ("paper_lse", "raise"),
}


def _attention(fault):
    def kernel(h, e, mask, return_attn):
        if fault == "raise":
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected by tests/faulty_kernels.py)")
        if fault == "mask_bug":
            mask = mask[:1].expand_as(mask)  # [B, T] every sample gets sample 0's mask
        c, beta = reference.word_region_attention(h, e, mask, return_attn=True)  # [B, C, N], [B, T, N]
        if fault == "nan":
            c = c.clone()
            c.view(-1)[c.numel() // 2] = float("nan")
        return c, (beta if return_attn else h.new_empty(0))

    return kernel


def _attention_backward(fault):
    def kernel(grad_c, grad_beta, h, e, mask):
        if fault == "raise":
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected by tests/faulty_kernels.py)")
        with torch.enable_grad():
            hh, ee = h.detach().requires_grad_(True), e.detach().requires_grad_(True)
            c, beta = reference.word_region_attention(hh, ee, mask, return_attn=True)
            outs, cots = [c], [grad_c]
            if grad_beta is not None and grad_beta.numel():
                outs.append(beta), cots.append(grad_beta)
            grad_h, _ = torch.autograd.grad(outs, (hh, ee), cots)
        grad_e = torch.bmm(grad_c, beta.detach().transpose(1, 2))  # [B, C, T]: the h ds^T term is missing
        return grad_h, grad_e

    return kernel


def _damsm(fault):
    def kernel(img, words, lengths, gamma1, gamma2):
        if fault == "raise":
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected by tests/faulty_kernels.py)")
        return reference.damsm_word_scores(img, words, lengths, gamma1, gamma2) / gamma2  # [M, M]

    return kernel


_MAKERS = {"word_region_attention": _attention, "word_region_attention_backward": _attention_backward,
           "damsm_word_scores": _damsm}


def install(op, device_type, fault, delay=0.0):
    """Overrides the compiled kernel of t2i::op on device_type with `fault` (see FAULTS); returns the Library
    that holds the override (pass it to uninstall). Needs the extension loaded (t2icli.ops.backend_info())."""
    if fault not in FAULTS[op]:
        raise ValueError(f"{op} has no fault {fault!r}; choose from {FAULTS[op]}")
    kernel = _MAKERS[op](fault)
    if delay:
        inner = kernel

        def kernel(*args):
            time.sleep(delay)
            return inner(*args)

    lib = torch.library.Library("t2i", "IMPL")
    with warnings.catch_warnings():  # "Overriding a previously registered kernel": that is the point
        warnings.simplefilter("ignore")
        lib.impl(op, kernel, {"cpu": "CPU", "cuda": "CUDA"}[device_type])
    return lib


def uninstall(lib):
    """Removes the override; the compiled kernel is active again."""
    lib._destroy()
