"""Fake (meta) kernels, autograd formulas and autocast rules for the compiled t2i ops, registered once after loading."""

import torch

_done = False
AUTOCAST_DEVICES = ("cpu", "cuda")  # the device types with t2i kernels


def register():
    """Registers fake kernels, autograd and autocast rules for torch.ops.t2i.* (idempotent)."""
    global _done
    if _done:
        return
    _done = True

    @torch.library.register_fake("t2i::word_region_attention")
    def _(h, e, mask, return_attn):
        B, C, N = h.shape
        T = e.shape[2]
        c = h.new_empty(B, C, N)  # [B, C, N]
        beta = h.new_empty(B, T, N) if return_attn else h.new_empty(0)  # [B, T, N] or empty
        return c, beta

    @torch.library.register_fake("t2i::word_region_attention_backward")
    def _(grad_c, grad_beta, h, e, mask):
        return torch.empty_like(h), torch.empty_like(e)

    @torch.library.register_fake("t2i::damsm_word_scores")
    def _(img, words, lengths, gamma1, gamma2):
        M = img.shape[0]
        return img.new_empty(M, M)  # [M(images), M(captions)]

    @torch.library.register_fake("t2i::damsm_word_scores_backward")
    def _(grad, img, words, lengths, gamma1, gamma2):
        return torch.empty_like(img), torch.empty_like(words)

    @torch.library.register_fake("t2i::damsm_word_scores_save")
    def _(img, words, lengths, gamma1, gamma2):
        M, _, N = img.shape
        L = torch.library.get_ctx().new_dynamic_size()  # sum(lengths): a data-dependent size
        return img.new_empty(M, M), img.new_empty(M, 3, L, N)  # [M, M], [M, 3, L, N]

    @torch.library.register_fake("t2i::damsm_word_scores_backward_saved")
    def _(grad, img, words, lengths, saved, gamma1, gamma2):
        return torch.empty_like(img), torch.empty_like(words)

    def _wra_setup(ctx, inputs, output):
        h, e, mask, return_attn = inputs
        ctx.return_attn = return_attn
        ctx.save_for_backward(h, e, mask)

    def _wra_backward(ctx, grad_c, grad_beta):
        h, e, mask = ctx.saved_tensors
        if grad_c is None:
            grad_c = torch.zeros_like(h[:, :, :0]).expand(h.shape[0], e.shape[1], h.shape[2])
        if not ctx.return_attn:
            grad_beta = None
        grad_h, grad_e = torch.ops.t2i.word_region_attention_backward(grad_c.contiguous(), grad_beta, h, e, mask)
        return grad_h, grad_e, None, None

    torch.library.register_autograd("t2i::word_region_attention", _wra_backward, setup_context=_wra_setup)

    def _damsm_setup(ctx, inputs, output):
        img, words, lengths, gamma1, gamma2 = inputs
        ctx.gammas = (gamma1, gamma2)
        ctx.save_for_backward(img, words, lengths)

    def _damsm_backward(ctx, grad):
        img, words, lengths = ctx.saved_tensors
        grad_img, grad_words = torch.ops.t2i.damsm_word_scores_backward(grad.contiguous(), img, words, lengths, *ctx.gammas)
        return grad_img, grad_words, None, None, None

    torch.library.register_autograd("t2i::damsm_word_scores", _damsm_backward, setup_context=_damsm_setup)

    def _damsm_save_setup(ctx, inputs, output):
        img, words, lengths, gamma1, gamma2 = inputs
        saved = output[1]
        ctx.gammas = (gamma1, gamma2)
        ctx.mark_non_differentiable(saved)
        ctx.save_for_backward(img, words, lengths, saved)

    def _damsm_save_backward(ctx, grad, _grad_saved):
        img, words, lengths, saved = ctx.saved_tensors
        grad_img, grad_words = torch.ops.t2i.damsm_word_scores_backward_saved(grad.contiguous(), img, words, lengths, saved,
                                                                             *ctx.gammas)
        return grad_img, grad_words, None, None, None

    torch.library.register_autograd("t2i::damsm_word_scores_save", _damsm_save_backward, setup_context=_damsm_save_setup)

    # Autocast (--precision bf16): the kernels compute in float32 (or float64), never in half precision, so
    # under autocast every op casts its float16/bfloat16/float32 inputs to float32 and runs with autocast off;
    # float32 comes back (float64 is left alone, as autocast leaves it). Stated here, rather than left to the
    # absence of an autocast kernel, so a raw call with bfloat16 inputs computes in float32 instead of failing,
    # and so torch.compile sees the same rule as eager mode. t2icli.ops' wrappers apply the same rule themselves.
    for op in ("word_region_attention", "word_region_attention_backward", "damsm_word_scores",
               "damsm_word_scores_backward", "damsm_word_scores_save", "damsm_word_scores_backward_saved"):
        for device_type in AUTOCAST_DEVICES:
            torch.library.register_autocast(f"t2i::{op}", device_type, torch.float32)
