"""Training losses: the DAMSM matching loss (AttnGAN, Xu et al. 2018, eq. 10-15) and the GAN losses of the multi-stage trainers.

Score matrices are [M, M] with rows = images and columns = captions. The word-level matrix comes
from the fused kernel `t2icli.ops.damsm_word_scores`, the only hot path; the loss itself takes
precomputed matrices.

GAN part: discriminator logits are raw (no sigmoid); every adversarial term is binary cross-entropy
with logits, the numerically stable form of AttnGAN's BCELoss(sigmoid(.)), computed in float32.
"""

import torch
import torch.nn.functional as F

from t2icli import ops

__all__ = ["sentence_scores", "damsm_scores", "hard_negative_scores", "same_class_mask", "damsm_loss", "damsm_word_attention", "inside_captions", "word_prediction_loss", "shift_flip",
           "bce", "mismatched", "discriminator_loss", "stackgan2_discriminator_loss",
           "unconditional_discriminator_loss", "generator_adv_loss", "kl_loss", "pixel_stats",
           "color_consistency_loss", "tree_color_consistency", "generator_damsm_loss"]


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


def hard_negative_scores(f, f_bar, e_hard, e_bar_hard, lengths, gamma1=4.0, gamma2=5.0, eps=1e-8):
    """Word-level and sentence-level scores of each image against K edited copies of its own caption.

    f: [M, D, H, W] (or [M, D, N]); f_bar: [M, D]; e_hard: [M, K, D, T] word features of the copies; e_bar_hard:
    [M, K, D]; lengths: [M] (an edit keeps the length). Returns (word [M, K], sentence [M, K]).
    """
    M, K, D, T = e_hard.shape
    img = f.reshape(M, 1, D, -1).expand(M, K, D, f[0].numel() // D).reshape(M * K, D, -1)  # [M*K, D, N]
    lengths = torch.as_tensor(lengths).to(f.device).repeat_interleave(K)  # [M*K]
    word = ops.damsm_word_scores_paired(img, e_hard.reshape(M * K, D, T), lengths, gamma1, gamma2).view(M, K)
    f_n = f_bar / f_bar.norm(dim=1, keepdim=True).clamp_min(eps)  # [M, D]
    e_n = e_bar_hard / e_bar_hard.norm(dim=2, keepdim=True).clamp_min(eps)  # [M, K, D]
    return word, (e_n @ f_n[:, :, None]).squeeze(2)  # [M, K] each


def same_class_mask(class_ids):
    """[M] class ids -> bool [M, M], True where i != j but both images share a class (not a negative)."""
    class_ids = torch.as_tensor(class_ids)
    same = class_ids[:, None] == class_ids[None, :]
    return same & ~torch.eye(len(class_ids), dtype=torch.bool, device=same.device)


def damsm_loss(word_scores, sent_scores, class_ids=None, gamma3=10.0, hard=None):
    """DAMSM = L1w + L2w + L1s + L2s from precomputed [M, M] score matrices (rows images, cols captions).

    Each matrix is scaled by gamma3 and scored with cross-entropy in both directions, the matching
    pair on the diagonal: *1 = for each caption, which image (softmax over a column), *2 = for each
    image, which caption (softmax over a row), as in the paper's P(D|Q) and P(Q|D). Pairs of
    different images of the same class (class_ids [M], optional) are masked out as negatives.
    hard: None or (word [M, K], sentence [M, K], valid bool [M, K]): scores of each image against K hard negative
    captions of its own caption (data/negatives.py), extra columns of its row in *2 (invalid ones left out).
    Returns {"loss", "w1", "w2", "s1", "s2"} (scalar tensors; "loss" is their sum).
    """
    M = word_scores.shape[0]
    labels = torch.arange(M, device=word_scores.device)
    mask = None if class_ids is None else same_class_mask(class_ids).to(word_scores.device)
    out = {}
    for k, (name, scores) in enumerate((("w", word_scores), ("s", sent_scores))):
        logits = gamma3 * scores  # [M(images), M(captions)]
        if mask is not None:
            logits = logits.masked_fill(mask, float("-inf"))
        out[name + "1"] = F.cross_entropy(logits.t(), labels)  # caption -> image
        if hard is not None:  # [M, M + K]: the batch's captions, then the image's own edited captions
            logits = torch.cat([logits, (gamma3 * hard[k]).masked_fill(~hard[2], float("-inf"))], 1)
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
    pad = ~inside_captions(lengths, T, f.device)  # [B, T]
    s = torch.bmm(e.transpose(1, 2), img)  # [B, T, N]
    s = torch.softmax(s.masked_fill(pad[:, :, None], float("-inf")), dim=1)  # over words
    alpha = torch.softmax(gamma1 * s, dim=2)  # over regions
    return alpha.masked_fill(pad[:, :, None], 0.0).reshape(B, T, H, W)


def inside_captions(lengths, T, device=None):
    """lengths [B] -> bool [B, T], True at the positions inside each caption."""
    return torch.arange(T, device=device)[None, :] < torch.as_tensor(lengths, device=device)[:, None]


def word_prediction_loss(logits, tokens, inside):
    """Mean cross-entropy of word logits [B, T, V] (models.damsm.RegionWordPredictor) against the caption tokens
    [B, T], over the positions inside each caption (inside: bool [B, T], inside_captions, the mask the predictor
    was given). Returns (loss, accuracy), both 0-d tensors."""
    picked, target = logits[inside], tokens[inside]  # [n, V], [n]
    return F.cross_entropy(picked.float(), target), (picked.argmax(1) == target).float().mean()


# -- GAN losses (AttnGAN / StackGAN++) ---------------------------------------------------------------
def bce(logits, target):
    """Mean binary cross-entropy of raw logits [B] against a constant label (1.0 real, 0.0 fake)."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def mismatched(e_bar):
    """Sentence features paired with the wrong images: row k gets caption k+1 (mod B). e_bar [B, D] -> [B, D]."""
    return torch.roll(e_bar, shifts=-1, dims=0)


def shift_flip(x, draws, max_shift=0.125):
    """Each image of x [B, C, s, s] moved by its own shift and mirrored or not, differentiably (bilinear, reflected
    borders). draws [B, 3] in [0, 1): horizontal and vertical shift (-> +-max_shift of the side), mirror if < 0.5.

    AttnGAN's DAMSM term scores G's images with a small frozen CNN; a young G satisfies it with colour streaks
    that only work where they are drawn. Scoring moved copies asks for what the caption says, wherever it is.
    """
    B = x.shape[0]
    draws = draws.to(x.device, torch.float32)
    theta = torch.zeros(B, 2, 3, device=x.device)
    theta[:, 0, 0] = torch.where(draws[:, 2] < 0.5, -1.0, 1.0)  # x -> -x: mirror
    theta[:, 1, 1] = 1.0
    theta[:, :, 2] = (draws[:, :2] * 2 - 1) * (2 * max_shift)  # the grid spans [-1, 1]: 2 units per side
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # [B, s, s, 2]
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="reflection", align_corners=False)


def _r1_penalty(real, logits):
    """E_x ||grad_x sum(logits)||^2 over the batch (Mescheder et al.'s R1): real [B, ...] requires grad, logits: the
    real images' logits [B] whose sum is differentiated (conditional + unconditional, as the loss sees them)."""
    (grad,) = torch.autograd.grad(sum(l.float().sum() for l in logits), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def discriminator_loss(D, real, fake, e_bar, e_bar_wrong=None, r1_gamma=0.0, wrong_images=None):
    """One stage's D loss as AttnGAN: conditional (real, text) / (fake, text) / wrong pair + unconditional.

    D: StageDiscriminator; real, fake: [B, 3, s, s] (fake already detached); e_bar: [B, D] the condition (sentence
    features, or the CA mean mu); e_bar_wrong: [B, D] the mismatched captions (default mismatched(e_bar); a
    distributed trainer passes the rows of the global batch's roll, so N processes pair the same captions as one).
    wrong_images: [B, 3, s, s] images of other classes: the wrong pair is then (wrong image, right condition), as
    StackGAN-v2 and GAN-INT-CLS, instead of (real image, wrong caption) as AttnGAN.
    loss = (BCE(real,1) + BCE_u(real,1)) / 2 + (BCE(fake,0) + BCE_u(fake,0) + BCE(wrong,0)) / 3.
    r1_gamma > 0 adds Mescheder et al.'s R1 penalty r1_gamma / 2 * E ||grad_x (cond + uncond logit)(real)||^2 on the
    real images with their true captions: it keeps D smooth around the data, so it does not overpower a young G.
    Returns {"loss", "real", "fake", "wrong", "u_real", "u_fake"} (+ "r1" if used) (scalar tensors).
    """
    if r1_gamma > 0:
        real = real.detach().requires_grad_(True)
    code_real, code_fake = D(real), D(fake)  # [B, 8df, 4, 4] each
    real_u = D.logits(code_real)
    if wrong_images is not None:
        real_c, wrong = D.logits(code_real, e_bar), D.logits(D(wrong_images), e_bar)
    else:  # one image share of the joint convolution for both pairs
        real_c, wrong = D.logits(code_real, [e_bar, mismatched(e_bar) if e_bar_wrong is None else e_bar_wrong])
    out = {
        "real": bce(real_c, 1.0),
        "fake": bce(D.logits(code_fake, e_bar), 0.0),
        "wrong": bce(wrong, 0.0),
        "u_real": bce(real_u, 1.0),
        "u_fake": bce(D.logits(code_fake), 0.0),
    }
    out["loss"] = (out["real"] + out["u_real"]) / 2 + (out["fake"] + out["u_fake"] + out["wrong"]) / 3
    if r1_gamma > 0:
        out["r1"] = _r1_penalty(real, [real_c, real_u])
        out["loss"] = out["loss"] + r1_gamma / 2 * out["r1"]
    return out


def stackgan2_discriminator_loss(D, real, fake, cond, cond_wrong=None, wrong_images=None, uncond_weight=1.0,
                                 r1_gamma=0.0):
    """One stage's D loss as StackGAN-v2's condGANTrainer.train_Dnet (code/trainer.py:564-609).

    D: StageDiscriminator; real, fake [B, 3, s, s] (fake detached); cond [B, c]: the condition (StackGAN-v2: the CA
    mean mu, detached). The wrong pair is (wrong_images [B, 3, s, s], cond) when given (the reference's wrong
    images), else (real, cond_wrong) (default mismatched(cond)). With uncond_weight W > 0 (UNCOND_LOSS):
        loss = [BCE(real,1) + W BCE_u(real,1)] + [BCE(wrong,0) + W BCE_u(wrong,1)] + [BCE(fake,0) + W BCE_u(fake,0)]
    where a wrong image is a real image, so real for the unconditional head; with W = 0:
        loss = BCE(real,1) + (BCE(wrong,0) + BCE(fake,0)) / 2.
    r1_gamma > 0 adds the R1 penalty on the real images (as discriminator_loss). Returns {"loss", "real", "wrong",
    "fake"} (+ "u_real", "u_wrong", "u_fake" with W > 0, "r1" with r1_gamma > 0) (scalar tensors).
    """
    if r1_gamma > 0:
        real = real.detach().requires_grad_(True)
    code_real, code_fake = D(real), D(fake)  # [B, 8df, 4, 4]
    if wrong_images is not None:
        code_wrong = D(wrong_images)
        real_c, wrong_c = D.logits(code_real, cond), D.logits(code_wrong, cond)
    else:  # one image share of the joint convolution for both pairs
        code_wrong = code_real
        real_c, wrong_c = D.logits(code_real, [cond, mismatched(cond) if cond_wrong is None else cond_wrong])
    out = {"real": bce(real_c, 1.0), "wrong": bce(wrong_c, 0.0), "fake": bce(D.logits(code_fake, cond), 0.0)}
    r1_logits = [real_c]
    if uncond_weight > 0:
        real_u = D.logits(code_real)
        r1_logits.append(real_u)
        out.update(u_real=bce(real_u, 1.0), u_wrong=bce(D.logits(code_wrong), 1.0),
                   u_fake=bce(D.logits(code_fake), 0.0))
        out["loss"] = (out["real"] + uncond_weight * out["u_real"] + out["wrong"] + uncond_weight * out["u_wrong"]
                       + out["fake"] + uncond_weight * out["u_fake"])
    else:
        out["loss"] = out["real"] + 0.5 * (out["wrong"] + out["fake"])
    if r1_gamma > 0:
        out["r1"] = _r1_penalty(real, r1_logits)
        out["loss"] = out["loss"] + r1_gamma / 2 * out["r1"]
    return out


def unconditional_discriminator_loss(D, real, fake, r1_gamma=0.0):
    """One stage's D loss of StackGAN-v2's unconditional mode (GANTrainer.train_Dnet, code/trainer.py:265-292):
    BCE_u(real, 1) + BCE_u(fake, 0), D's unconditional head only. real, fake [B, 3, s, s] (fake detached);
    r1_gamma as discriminator_loss. Returns {"loss", "u_real", "u_fake"} (+ "r1")."""
    if r1_gamma > 0:
        real = real.detach().requires_grad_(True)
    real_u = D.logits(D(real))
    out = {"u_real": bce(real_u, 1.0), "u_fake": bce(D.logits(D(fake)), 0.0)}
    out["loss"] = out["u_real"] + out["u_fake"]
    if r1_gamma > 0:
        out["r1"] = _r1_penalty(real, [real_u])
        out["loss"] = out["loss"] + r1_gamma / 2 * out["r1"]
    return out


def generator_adv_loss(Ds, fakes, e_bar, uncond_weight=1.0):
    """G's adversarial loss summed over stages: BCE(cond(fake_i, e_bar), 1) + uncond_weight * BCE(uncond(fake_i), 1).

    Ds: one discriminator per stage; fakes: [x_i [B, 3, s_i, s_i]]; e_bar: [B, D] the condition (sentence feature,
    or StackGAN-v2's CA mean mu, not detached: trainer.py:619), or None for an unconditional model (its unconditional
    term only, weight 1). Returns (total, [per stage]).
    """
    per_stage = []
    for D, x in zip(Ds, fakes):
        code = D(x)
        if e_bar is None:
            per_stage.append(bce(D.logits(code), 1.0))
            continue
        term = bce(D.logits(code, e_bar), 1.0)
        if uncond_weight > 0:
            term = term + uncond_weight * bce(D.logits(code), 1.0)
        per_stage.append(term)
    return sum(per_stage), per_stage


def kl_loss(mu, logvar):
    """KL(N(mu, sigma^2) || N(0, I)) of conditioning augmentation, averaged over elements as AttnGAN. [B, c] -> scalar."""
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


def pixel_stats(x):
    """Mean [B, 3] and covariance [B, 3, 3] of each image's pixels. x: [B, 3, H, W]."""
    x = x.float().flatten(2)  # [B, 3, N]
    mu = x.mean(dim=2)  # [B, 3]
    d = x - mu[:, :, None]  # [B, 3, N]
    cov = torch.bmm(d, d.transpose(1, 2)) / x.shape[2]  # [B, 3, 3]
    return mu, cov


def color_consistency_loss(x_small, x_big, lambda1=1.0, lambda2=5.0):
    """StackGAN++ colour-consistency regulariser between consecutive stages' images of the same samples.

    x_small: [B, 3, s, s]; x_big: [B, 3, 2s, 2s]. lambda1 * mean ||mu_i - mu_{i-1}||^2 +
    lambda2 * mean ||Cov_i - Cov_{i-1}||_F^2 (squared errors averaged over the batch and entries, as the original).
    """
    mu1, cov1 = pixel_stats(x_small)
    mu2, cov2 = pixel_stats(x_big)
    return lambda1 * F.mse_loss(mu2, mu1) + lambda2 * F.mse_loss(cov2, cov1)


def tree_color_consistency(fakes, lambda1=1.0, lambda2=5.0, detach=False):
    """StackGAN++'s colour consistency over a tree's images fakes [x_i [B, 3, s_i, s_i]]: the sum over consecutive
    stages of color_consistency_loss(x_{i-1}, x_i). detach: the smaller stage's statistics are a fixed target (no
    gradient reaches x_{i-1}), as StackGAN-v2 code/trainer.py:630-657; else both stages move toward each other."""
    return sum(color_consistency_loss(fakes[i - 1].detach() if detach else fakes[i - 1], fakes[i], lambda1, lambda2)
               for i in range(1, len(fakes)))


def generator_damsm_loss(image_encoder, images, e, e_bar, lengths, class_ids=None, gamma1=4.0, gamma2=5.0,
                         gamma3=10.0, gather=None, hard=None):
    """DAMSM word + sentence loss of generated images against their captions (AttnGAN's L_DAMSM in G's loss).

    image_encoder: frozen DAMSM image encoder (eval mode; gradients reach `images` only); images: [B, 3, s, s]
    in [-1, 1]; e: [B, D, T] words; e_bar: [B, D] sentences; lengths: [B]; class_ids: [B] or None (same-class
    pairs are not negatives). gather: None, or a function applied to every one of those tensors before scoring
    (a distributed trainer gathers the global batch, so the negatives are those of one process). hard: None or
    (e_hard [B, K, D, T], e_bar_hard [B, K, D], valid [B, K]): the text features of K edited copies of each
    caption (data/negatives.py), extra negatives of its own image (damsm_loss's `hard`).
    Returns {"loss", "w1", "w2", "s1", "s2"} as t2icli.losses.damsm_loss.
    """
    f, f_bar = image_encoder(images)  # [B, D, h, w], [B, D]
    if gather is not None:
        f, f_bar, e, e_bar, lengths = (gather(t) for t in (f, f_bar, e, e_bar, torch.as_tensor(lengths)))
        class_ids = None if class_ids is None else gather(torch.as_tensor(class_ids))
        if hard is not None:  # the valid mask as bytes (NCCL gathers no bool)
            hard = (gather(hard[0]), gather(hard[1]), gather(hard[2].to(torch.uint8)).bool())
    f, f_bar = f.float(), f_bar.float()
    word, sent = damsm_scores(f, e.float(), lengths, f_bar, e_bar.float(), gamma1, gamma2)  # [B, B]
    if hard is not None:
        hard = (*hard_negative_scores(f, f_bar, hard[0].float(), hard[1].float(), lengths, gamma1, gamma2), hard[2])
    return damsm_loss(word, sent, class_ids, gamma3, hard=hard)
