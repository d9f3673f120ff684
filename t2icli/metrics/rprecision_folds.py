"""R-precision with DM-GAN's released evaluation protocol (10 folds, 99 fresh other-class negatives per image).

The original AttnGAN released no R-precision code, and users could not reproduce its figures; DM-GAN's
evaluation (Zhu et al. 2019; MinfengZhu/DM-GAN code/trainer.py:467-492, code/datasets.py:310-330) is the one
people run, so `t2i eval` follows it:
  * image j (generated from, or the real image of, test caption j; captions cycle up to n) is scored against
    its true caption and 99 captions of random test images of a DIFFERENT class, drawn afresh for image j,
    each independently (with replacement: get_mis_caption draws `random.randint` per negative and rejects
    same-class images), with a uniformly random caption of the drawn image;
  * score = cosine(DAMSM global image feature f_bar_j, DAMSM sentence feature e_bar); a hit when the true
    caption's score is the highest of the 100, ties included (DM-GAN's torch.argmax(scores) == 0 returns the
    first, i.e. the true, caption among equal maxima);
  * the n hits are shuffled (seeded; DM-GAN's np.random.shuffle(R)), split into 10 folds, and the mean and std
    of the folds' hit rates are reported. Unshuffled folds would each hold a few classes of the class-ordered
    test captions and inflate the std.
This differs from t2icli.metrics.rprecision.retrieval_rprecision (used during training), which draws the
negatives among the n evaluated captions themselves and repeats whole draws ("runs") instead of folds.
"""

import numpy as np
import torch

from t2icli.metrics.common import MetricError

__all__ = ["draw_negatives", "dmgan_rprecision", "PROTOCOL", "PROTOCOL_CHOICES"]

PROTOCOL = ("DM-GAN: per image, true caption vs 99 captions of random test images of a different class, drawn "
            "afresh per image with replacement; cosine of DAMSM sentence and global image features; hit = true "
            "caption scores highest, ties count as hits; hits shuffled (seeded) then split into 10 folds, "
            "mean/std over folds")
#: The protocol's choices, one key each, recorded in every R-precision result.
PROTOCOL_CHOICES = {"negatives_drawn": "with replacement, other-class test images", "ties": "hit",
                    "fold_order": "shuffled (seeded) before splitting"}


def draw_negatives(image_classes, pool_image_classes, pool_caption_starts, n_negatives, rng):
    """For each evaluated image, n_negatives caption rows of random pool images of a different class.

    image_classes: [n] class of each evaluated image's true caption's image; pool_image_classes: [m] class of
    every test image; pool_caption_starts: [m + 1] first caption row of each test image (image_captions).
    Each negative's image is uniform among the other-class images, independently of the others (with
    replacement, as DM-GAN); its caption is uniform among that image's captions. Returns int64 [n, n_negatives]
    caption rows. Raises MetricError when an image has no other-class test image.
    """
    image_classes = np.asarray(image_classes)
    pool_image_classes = np.asarray(pool_image_classes)
    starts = np.asarray(pool_caption_starts, np.int64)
    counts = np.diff(starts)  # [m] captions per test image
    usable = counts > 0
    out = np.zeros((len(image_classes), n_negatives), np.int64)
    by_class = {}
    for j, y in enumerate(image_classes):
        if y not in by_class:
            by_class[y] = np.flatnonzero((pool_image_classes != y) & usable)
        cand = by_class[y]
        if len(cand) == 0:
            raise MetricError("R-precision needs test images of more than one class")
        pick = cand[rng.integers(0, len(cand), n_negatives)]  # [n_negatives] image indices, with replacement
        out[j] = starts[pick] + (rng.random(n_negatives) * counts[pick]).astype(np.int64)
    return out


def dmgan_rprecision(f_bar, e_bar_true, e_bar_pool, image_classes, pool_image_classes, pool_caption_starts,
                     n_negatives=99, folds=10, seed=0):
    """R-precision by DM-GAN's protocol from precomputed DAMSM features.

    f_bar: [n, D] global features of the evaluated images; e_bar_true: [n, D] sentence features of their true
    captions; e_bar_pool: [n_captions, D] sentence features of every test caption (rows index the negatives);
    image_classes: [n]; pool_image_classes: [m]; pool_caption_starts: [m + 1]. Returns {"mean", "std",
    "folds": [per-fold hit rate], "n", "n_negatives", "hits"}. The negatives and the fold shuffle come from
    `seed` (see the module docstring for the protocol).
    """
    n = len(f_bar)
    if n < folds:
        raise MetricError(f"R-precision over {folds} folds needs at least {folds} images (--n-samples), got {n}")
    rng = np.random.default_rng(int(seed))
    neg = draw_negatives(image_classes, pool_image_classes, pool_caption_starts, n_negatives, rng)  # [n, K]
    f = torch.nn.functional.normalize(torch.as_tensor(f_bar, dtype=torch.float64), dim=1)  # [n, D]
    t = torch.nn.functional.normalize(torch.as_tensor(e_bar_true, dtype=torch.float64), dim=1)  # [n, D]
    pool = torch.nn.functional.normalize(torch.as_tensor(e_bar_pool, dtype=torch.float64), dim=1)  # [C, D]
    neg = torch.as_tensor(neg)
    hits = np.zeros(n, bool)
    for s in range(0, n, 256):  # chunks: [256, 1 + K, D] float64 at a time
        cand = torch.cat([t[s : s + 256, None], pool[neg[s : s + 256]]], 1)  # [b, 1 + K, D] true caption first
        # One elementwise product and sum for all 1 + K captions, so a negative whose sentence feature equals the
        # true caption's (the same text) scores exactly the same: a tie, which DM-GAN's argmax counts as a hit.
        scores = (f[s : s + 256, None] * cand).sum(2)  # [b, 1 + K] cosines
        hits[s : s + 256] = (scores[:, 0] >= scores[:, 1:].max(1).values).numpy()
    hits = hits[rng.permutation(n)]  # shuffled before the folds, as DM-GAN
    rates = [float(h.mean()) for h in np.array_split(hits, folds)]
    return {"mean": float(np.mean(rates)), "std": float(np.std(rates)), "folds": rates, "n": int(n),
            "n_negatives": int(n_negatives), "hits": int(hits.sum())}
