"""Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), over 10 splits, from a user's classifier file.

The classifier is an Inception-v3 in torchvision's layout (t2icli.models.inception) whose weights the user
gives: ImageNet's (1000 classes) or a fine-tuned one such as the 50-class CUB model StackGAN's evaluation
uses. Its final layer has either `num_classes` outputs, or `num_classes + 1` when output 0 is a background
class (TF-slim fine-tuned models): that logit is dropped before the softmax. Images go in as uint8 RGB
exactly as saved, resized as common.RESIZE states; the result records the image count, splits, resize
and the weights file's sha256, the things whose omission made published scores irreproducible.
"""

import os

import numpy as np

from t2icli.metrics.common import MetricError, RESIZE, check_file, file_sha256, inception_input, uint8_batches

__all__ = ["inception_score_from_probs", "load_classifier", "class_probabilities", "inception_score"]


def inception_score_from_probs(probs, splits=10):
    """IS of class probabilities p(y|x) [n, K]: per split, exp(mean_x KL(p(y|x) || p(y))) with p(y) the split's
    mean; returns (mean, std, per-split list) over the `splits` consecutive splits (the last ones a bit larger)."""
    probs = np.asarray(probs, np.float64)
    n = len(probs)
    if splits < 1 or n < splits:
        raise MetricError(f"Inception Score over {splits} splits needs at least {splits} images, got {n}")
    scores = []
    for part in np.array_split(probs, splits):
        py = part.mean(0, keepdims=True)  # [1, K] marginal p(y)
        kl = (part * (np.log(part + 1e-12) - np.log(py + 1e-12))).sum(1)  # [m]
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores)), scores


def load_classifier(weights, num_classes=1000, device="cpu"):
    """Inception-v3 classifier from the weights file `weights` (torchvision layout).

    Returns (model in eval mode, drop_background: bool, info {"weights", "weights_sha256", "num_classes",
    "background_dropped"}). Raises MetricError if the file is missing, unreadable, not an Inception-v3, or its
    final layer has neither num_classes nor num_classes + 1 outputs.
    """
    import torch

    from t2icli.models.inception import Inception3, InceptionWeightsError, load_inception_weights, read_state_dict

    weights = check_file(weights, "--inception-weights")
    try:
        state = read_state_dict(weights)
    except InceptionWeightsError as exc:
        raise MetricError(f"--inception-weights {exc}") from None
    fc = state.get("fc.weight")
    if not torch.is_tensor(fc):
        raise MetricError(f"--inception-weights {weights}: not an Inception-v3 state dict (no fc.weight)")
    outputs = int(fc.shape[0])
    if outputs not in (num_classes, num_classes + 1):
        raise MetricError(f"--inception-weights {weights} has {outputs} outputs; --num-classes {num_classes} expects "
                          f"{num_classes} (or {num_classes + 1} with a background class)")
    has_aux = any(str(k).startswith("AuxLogits.") for k in state)
    model = Inception3(num_classes=outputs, aux_logits=has_aux)
    try:
        load_inception_weights(model, state)
    except InceptionWeightsError as exc:
        raise MetricError(f"--inception-weights {weights}: {exc}") from None
    model.to(device).eval().requires_grad_(False)
    drop = outputs == num_classes + 1
    info = {"weights": os.path.abspath(weights), "weights_sha256": file_sha256(weights), "num_classes": num_classes,
            "background_dropped": drop}
    return model, drop, info


def class_probabilities(model, images, drop_background=False, batch_size=50, device="cpu", progress=None):
    """p(y|x) [n, K] (float64 numpy) of uint8 images [n, H, W, 3]; logit 0 dropped when drop_background."""
    import torch

    out = []
    with torch.no_grad():
        for s, batch in uint8_batches(images, batch_size):
            logits = model(inception_input(batch, device)).double()  # [b, outputs]
            if drop_background:
                logits = logits[:, 1:]
            out.append(torch.softmax(logits, 1).cpu().numpy())
            if progress:
                progress(s + len(batch), len(images))
    return np.concatenate(out) if out else np.zeros((0, 0))


def inception_score(images, weights, num_classes=1000, splits=10, batch_size=50, device="cpu", progress=None):
    """IS of uint8 images [n, H, W, 3] -> {"metric": "is", "mean", "std", "splits", "split_scores", "n",
    "weights", "weights_sha256", "num_classes", "background_dropped", "resize", "colour_order": "RGB"}."""
    if len(images) < splits:
        raise MetricError(f"Inception Score over {splits} splits needs at least {splits} images, got {len(images)}")
    model, drop, info = load_classifier(weights, num_classes, device)
    probs = class_probabilities(model, images, drop, batch_size, device, progress)
    mean, std, scores = inception_score_from_probs(probs, splits)
    return dict({"metric": "is", "mean": mean, "std": std, "splits": int(splits), "split_scores": scores,
                 "n": int(len(images)), "resize": RESIZE, "colour_order": "RGB"}, **info)
