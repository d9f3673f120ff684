"""Training losses: the DAMSM matching loss (AttnGAN, Xu et al. 2018, eq. 10-15); GAN losses come later.

Score matrices are [M, M] with rows = images and columns = captions. The word-level matrix comes
from the fused kernel `t2icli.ops.damsm_word_scores`, the only hot path; the loss itself takes
precomputed matrices.
"""

import torch
import torch.nn.functional as F

from t2icli import ops

__all__ = ["sentence_scores", "damsm_scores", "same_class_mask", "damsm_loss", "damsm_word_attention"]


def sentence_scores(f_bar, e_bar, eps=1e-8):
    """Cosine similarity of every global image feature with every sentence feature.

    f_bar: [M, D] images; e_bar: [M, D] sentences. Returns [M, M], rows images, columns captions.
    """
    f_n = f_bar / f_bar.norm(dim=1, keepdim=True).clamp_min(eps)  # [M, D]
    e_n = e_bar / e_bar.norm(dim=1, keepdim=True).clamp_min(eps)  # [M, D]
    return f_n @ e_n.t()  # [M, M]


def damsm_scores(f, e, lengths, f_bar, e_bar, gamma1=4.0, gamma2=5.0):
    """Word-level R(Q_i, D_j) and sentence-level cosine score matrices of a batch.

    f: [M, D, H, W] (or [M, D, N]) region features; e: [M, D, T] word features; lengths: [M];
    f_bar: [M, D]; e_bar: [M, D]. Returns (word [M, M], sentence [M, M]), rows images, cols captions.
    """
    img = f.reshape(f.shape[0], f.shape[1], -1)  # [M, D, N]
    word = ops.damsm_word_scores(img, e, lengths, gamma1, gamma2)  # [M, M]
    return word, sentence_scores(f_bar, e_bar)


def same_class_mask(class_ids):
    """[M] class ids -> bool [M, M], True where i != j but both images share a class (not a negative)."""
    class_ids = torch.as_tensor(class_ids)
    same = class_ids[:, None] == class_ids[None, :]
    return same & ~torch.eye(len(class_ids), dtype=torch.bool, device=same.device)


def damsm_loss(word_scores, sent_scores, class_ids=None, gamma3=10.0):
    """DAMSM = L1w + L2w + L1s + L2s from precomputed [M, M] score matrices (rows images, cols captions).

    Each matrix is scaled by gamma3 and scored with cross-entropy in both directions, the matching
    pair on the diagonal: *1 = for each caption, which image (softmax over a column), *2 = for each
    image, which caption (softmax over a row), as in the paper's P(D|Q) and P(Q|D). Pairs of
    different images of the same class (class_ids [M], optional) are masked out as negatives.
    Returns {"loss", "w1", "w2", "s1", "s2"} (scalar tensors; "loss" is their sum).
    """
    M = word_scores.shape[0]
    labels = torch.arange(M, device=word_scores.device)
    mask = None if class_ids is None else same_class_mask(class_ids).to(word_scores.device)
    out = {}
    for name, scores in (("w", word_scores), ("s", sent_scores)):
        logits = gamma3 * scores  # [M(images), M(captions)]
        if mask is not None:
            logits = logits.masked_fill(mask, float("-inf"))
        out[name + "1"] = F.cross_entropy(logits.t(), labels)  # caption -> image
        out[name + "2"] = F.cross_entropy(logits, labels)  # image -> caption
    out["loss"] = out["w1"] + out["w2"] + out["s1"] + out["s2"]
    return out


def damsm_word_attention(f, e, lengths, gamma1=4.0):
    """Attention of each word over image regions for matching (image k, caption k) pairs (for pictures).

    f: [B, D, H, W] regions; e: [B, D, T] words; lengths: [B]. Returns alpha [B, T, H, W]: the softmax
    over regions of gamma1 * (softmax over the caption's words of e_t . f_n), as in the word score;
    rows past a caption's length are zero.
    """
    B, D, H, W = f.shape
    T = e.shape[2]
    img = f.reshape(B, D, H * W)  # [B, D, N]
    pad = torch.arange(T, device=f.device)[None, :] >= torch.as_tensor(lengths, device=f.device)[:, None]  # [B, T]
    s = torch.bmm(e.transpose(1, 2), img)  # [B, T, N]
    s = torch.softmax(s.masked_fill(pad[:, :, None], float("-inf")), dim=1)  # over words
    alpha = torch.softmax(gamma1 * s, dim=2)  # over regions
    return alpha.masked_fill(pad[:, :, None], 0.0).reshape(B, T, H, W)
