"""Retrieval R-precision (AttnGAN): does an image's global feature pick its caption out of 1 + 99 captions?

For each image the true caption is ranked against `n_negatives` captions drawn at random from images
of a different class, by cosine similarity of the global image feature f_bar and the sentence
feature e_bar; a hit is the true caption scoring strictly highest. The top-1 hit rate is averaged
over `runs` random draws; mean and std over the runs are reported.
"""

import numpy as np
import torch

from t2icli.losses import sentence_scores

__all__ = ["retrieval_rprecision", "rprecision_from_features", "encode_dataset"]


def _as_float_images(images):
    """uint8 [n, H, W, 3] (numpy or tensor, as saved) or float [n, 3, H, W] in [-1, 1] -> float [n, 3, H, W]."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.array(images))  # a copy: memory-mapped arrays are read-only
    if images.dtype == torch.uint8:
        return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return images.float()


@torch.no_grad()
def encode_dataset(encoder, images, tokens, lengths, batch_size=100):
    """Global features of images and captions, in batches.

    encoder: an object with `text_encoder` and `image_encoder` (e.g. models.damsm.DAMSM) or a
    (text_encoder, image_encoder) pair. images: uint8 [n, H, W, 3] or float [n, 3, H, W] in [-1, 1];
    tokens: [n, T]; lengths: [n]. Returns (f_bar [n, D], e_bar [n, D]) on CPU, float32.
    """
    text_enc, image_enc = (encoder if isinstance(encoder, (tuple, list))
                           else (encoder.text_encoder, encoder.image_encoder))
    device = next(image_enc.parameters()).device
    mode = image_enc.training
    image_enc.eval()
    f_bars = []
    try:
        for s in range(0, len(images), batch_size):
            f_bars.append(image_enc(_as_float_images(images[s : s + batch_size]).to(device))[1].float().cpu())
    finally:
        image_enc.train(mode)
    return torch.cat(f_bars), encode_texts(text_enc, tokens, lengths, batch_size)


@torch.no_grad()
def encode_texts(text_enc, tokens, lengths, batch_size=100):
    """Sentence features of captions, in batches, in eval mode (the encoder's mode is restored).

    tokens: [n, T]; lengths: [n]. Returns e_bar [n, D] on CPU, float32.
    """
    device = next(text_enc.parameters()).device
    mode = text_enc.training
    text_enc.eval()
    tokens, lengths = torch.as_tensor(tokens), torch.as_tensor(lengths)
    try:
        return torch.cat([text_enc(tokens[s : s + batch_size].to(device), lengths[s : s + batch_size])[1].float().cpu()
                          for s in range(0, len(tokens), batch_size)])
    finally:
        text_enc.train(mode)


def rprecision_from_features(f_bar, e_bar, class_ids, n_negatives=99, runs=10, seed=0):
    """R-precision from precomputed global features.

    f_bar: [n, D] image features; e_bar: [n, D] their true captions' sentence features;
    class_ids: [n]. Returns {"mean", "std", "runs": [per-run hit rate], "n_negatives", "n"}.
    Raises ValueError if some image has fewer than n_negatives images of other classes.
    """
    sim = sentence_scores(f_bar.double(), e_bar.double()).numpy()  # [n(images), n(captions)]
    class_ids = np.asarray(class_ids)
    n = len(class_ids)
    other = class_ids[:, None] != class_ids[None, :]  # [n, n] allowed negatives
    fewest = int(other.sum(1).min()) if n else 0
    if fewest < n_negatives:
        raise ValueError(f"R-precision needs {n_negatives} captions of other classes per image, "
                         f"but some image has only {fewest}; use fewer negatives or more images")
    rng = np.random.default_rng(seed)
    true = np.diag(sim)  # [n]
    hits = []
    for _ in range(runs):
        # n_negatives distinct other-class captions per image: the smallest random keys among allowed ones.
        keys = np.where(other, rng.random((n, n)), np.inf)  # [n, n]
        neg = np.argpartition(keys, n_negatives - 1, axis=1)[:, :n_negatives]  # [n, n_negatives]
        best_neg = np.take_along_axis(sim, neg, axis=1).max(1)  # [n]
        hits.append(float((true > best_neg).mean()))
    return {"mean": float(np.mean(hits)), "std": float(np.std(hits)), "runs": hits,
            "n_negatives": int(n_negatives), "n": int(n)}


def retrieval_rprecision(encoder, images, captions, n_negatives=99, runs=10, *, class_ids, seed=0, batch_size=100):
    """R-precision of `images` against their captions (used by `t2i train damsm` and `t2i eval`).

    encoder: DAMSM (or (text_encoder, image_encoder)); images: uint8 [n, H, W, 3] or float [n, 3, H, W]
    in [-1, 1], real or generated; captions: (tokens [n, T], lengths [n]), caption k describes image k;
    class_ids (keyword): [n], negatives come from other classes; seed fixes the draws.
    Returns the dict of `rprecision_from_features`.
    """
    tokens, lengths = captions
    f_bar, e_bar = encode_dataset(encoder, images, tokens, lengths, batch_size)
    return rprecision_from_features(f_bar, e_bar, class_ids, n_negatives, runs, seed)
