"""Pure-PyTorch reference of the two fused kernels; it defines the numerics the C++/CUDA kernels match."""

import torch

__all__ = ["word_region_attention", "damsm_word_scores", "damsm_word_scores_paired", "damsm_word_scores_loop",
           "COS_EPS"]

# torch.nn.functional.cosine_similarity's eps: each norm is clamped to at least this.
COS_EPS = 1e-8


def _masked_softmax(s, mask, dim):
    """Softmax of `s` along `dim` with `mask` (True = excluded) getting exactly zero weight.

    A slice with every entry masked gives all zeros (not NaN), and so does its gradient.
    """
    s = s.masked_fill(mask, float("-inf"))
    m = s.amax(dim=dim, keepdim=True).detach()
    m = m.masked_fill(torch.isinf(m), 0.0)  # all masked: exp(-inf - 0) = 0 everywhere
    p = torch.exp(s - m)
    # With the max subtracted an unmasked slice sums to >= 1, an all-masked one to exactly 0,
    # so clamping at 1 changes nothing but the all-masked case (0 / 1 = 0, no NaN).
    return p / p.sum(dim=dim, keepdim=True).clamp_min(1.0)


def word_region_attention(h, e, mask, return_attn=False):
    """Word-region attention F_attn of the AttnGAN generator (eq. 1-2 of the paper).

    h: [B, C, N] region features (N = H*W); e: [B, C, T] word features projected to C;
    mask: [B, T] bool, True = padding word. s_ji = h_j . e_i; beta_j = softmax over the
    unmasked words; c_j = sum_i beta_ji e_i. Each sample uses its own mask row.
    Returns c [B, C, N], or (c, beta [B, T, N]) when return_attn. A sample whose words are
    all masked gets beta = 0 and c = 0.
    """
    s = torch.bmm(e.transpose(1, 2), h)  # [B, T, N]  s_ji = e_i . h_j
    beta = _masked_softmax(s, mask[:, :, None], dim=1)  # [B, T, N]  softmax over words
    c = torch.bmm(e, beta)  # [B, C, N]  c_j = sum_i beta_ji e_i
    return (c, beta) if return_attn else c


def _cosine(x1, x2, dim):
    """Cosine similarity with each norm clamped at COS_EPS (as torch.nn.functional.cosine_similarity)."""
    n1 = x1.norm(dim=dim).clamp_min(COS_EPS)
    n2 = x2.norm(dim=dim).clamp_min(COS_EPS)
    return (x1 * x2).sum(dim) / (n1 * n2)


def damsm_word_scores(img, words, lengths, gamma1, gamma2):
    """DAMSM word-level matching score R(image i, caption j) for all M x M pairs, vectorised.

    img: [M, D, N] region features; words: [M, D, T] word features; lengths: [M] int, caption j
    uses its first lengths[j] words. For each pair: s = words_j^T img_i [T_j, N]; softmax over
    words for each region; alpha = softmax over regions of gamma1 * that; c_w = sum_n alpha_wn
    img_i[:, n]; R_w = cos(c_w, words_j[:, w]); score[i, j] = log(sum_w exp(gamma2 * R_w)).
    As in the original AttnGAN code (and unlike eq. 10 of the paper) the log-sum-exp is NOT
    divided by gamma2. Returns [M, M]: rows images, columns captions. Materialises
    [M, M, T, N]; the kernels do not.
    """
    T = words.shape[2]
    lengths = lengths.to(device=img.device, dtype=torch.long)
    pad = torch.arange(T, device=img.device)[None, :] >= lengths[:, None]  # [M(j), T]
    s = torch.einsum("jdt,idn->ijtn", words, img)  # [M(i), M(j), T, N]
    p = _masked_softmax(s, pad[None, :, :, None], dim=2)  # softmax over the caption's words
    alpha = torch.softmax(gamma1 * p, dim=3)  # [M, M, T, N]  softmax over regions
    c = torch.einsum("ijtn,idn->ijdt", alpha, img)  # [M, M, D, T]  region context per word
    r = _cosine(c, words[None], dim=2)  # [M, M, T]
    r = (gamma2 * r).masked_fill(pad[None], float("-inf"))
    return torch.logsumexp(r, dim=2)  # [M, M]


def damsm_word_scores_paired(img, words, lengths, gamma1, gamma2):
    """The same word-level score for P given (image, caption) pairs instead of all pairs: pair p is image img[p]
    with caption words[p] (its first lengths[p] words). img: [P, D, N]; words: [P, D, T]; lengths: [P].
    Returns [P]. Cheap (P pairs, not P x P): used for the hard negative captions of one image each."""
    T = words.shape[2]
    lengths = lengths.to(device=img.device, dtype=torch.long)
    pad = torch.arange(T, device=img.device)[None, :] >= lengths[:, None]  # [P, T]
    s = torch.bmm(words.transpose(1, 2), img)  # [P, T, N]
    p = _masked_softmax(s, pad[:, :, None], dim=1)  # softmax over the caption's words
    alpha = torch.softmax(gamma1 * p, dim=2)  # [P, T, N]  softmax over regions
    c = torch.bmm(img, alpha.transpose(1, 2))  # [P, D, T]  region context per word
    r = _cosine(c, words, dim=1)  # [P, T]
    r = (gamma2 * r).masked_fill(pad, float("-inf"))
    return torch.logsumexp(r, dim=1)  # [P]


def damsm_word_scores_loop(img, words, lengths, gamma1, gamma2):
    """The same [M, M] scores computed like the original `words_loss`: one caption at a time.

    img: [M, D, N]; words: [M, D, T]; lengths: [M]. Used by the benchmark and the tests only.
    """
    M = img.shape[0]
    cols = []
    for j in range(M):
        n_j = int(lengths[j])
        word = words[j, :, :n_j].unsqueeze(0).expand(M, -1, -1)  # [M, D, T_j]
        attn = torch.bmm(word.transpose(1, 2), img)  # [M, T_j, N]
        attn = torch.softmax(attn, dim=1)  # over words, for each region
        attn = torch.softmax(attn * gamma1, dim=2)  # over regions
        context = torch.bmm(img, attn.transpose(1, 2))  # [M, D, T_j]
        row_sim = _cosine(word, context, dim=1)  # [M, T_j]
        row_sim = (row_sim * gamma2).exp().sum(dim=1, keepdim=True).log()  # [M, 1]
        cols.append(row_sim)
    return torch.cat(cols, dim=1)  # [M(images), M(captions)]
