"""Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), over 10 shuffled splits, from a user's classifier.

The classifier is an Inception-v3 in torchvision's layout (t2icli.models.inception) whose weights the user
gives: ImageNet's (1000 classes) or a fine-tuned one such as the 50-class CUB model StackGAN's evaluation
uses. Its final layer has either `num_classes` outputs, or `num_classes + 1` when output 0 is a background
class (TF-slim fine-tuned models): that logit is dropped before the softmax. Images go in as uint8 RGB
exactly as saved, resized as common.RESIZE states; the result records the image count, splits, resize
and the weights file's sha256, the things whose omission made published scores irreproducible.

As StackGAN's / DM-GAN's evaluation (MinfengZhu/DM-GAN eval/IS/bird/inception_score_bird.py:91-121): the images
are shuffled before the 10 consecutive splits (seeded here), so each split sees every class; evaluation images
come in test-caption order, which on CUB is class by class, and unshuffled splits of ~5 classes each would
under-report IS several-fold. Two networks: "torchvision" (ImageNet Inception-v3 as torchvision computes it) and
"tf-slim": the TF-slim inception_v3 that StackGAN's fine-tuned CUB classifier was trained in
(DM-GAN eval/IS/bird/inception/slim/inception_model.py: every 3x3 average pool of the mixed blocks is 'SAME'
padded, which excludes the padding from the mean; torchvision's includes it). "auto" takes tf-slim for a
classifier with a background output (the TF-slim fine-tuning convention) and torchvision otherwise.
"""

import os

import numpy as np

from t2icli.metrics.common import MetricError, RESIZE, check_file, file_sha256, inception_input, uint8_batches

__all__ = ["inception_score_from_probs", "load_classifier", "class_probabilities", "inception_score", "IS_BACKBONES",
           "tf_slim_inception"]

IS_BACKBONES = ("auto", "torchvision", "tf-slim")
SPLIT_ORDER = "shuffled with the seed, then consecutive splits (as StackGAN's / DM-GAN's inception_score)"


def inception_score_from_probs(probs, splits=10, seed=0, shuffle=True):
    """IS of class probabilities p(y|x) [n, K]: per split, exp(mean_x KL(p(y|x) || p(y))) with p(y) the split's
    mean; returns (mean, std, per-split list) over `splits` splits [i n / splits, (i + 1) n / splits) of the rows
    permuted by `seed` (shuffle=False: in the given order, which for class-ordered images under-reports IS)."""
    probs = np.asarray(probs, np.float64)
    n = len(probs)
    if splits < 1 or n < splits:
        raise MetricError(f"Inception Score over {splits} splits needs at least {splits} images, got {n}")
    if shuffle:
        probs = probs[np.random.default_rng(int(seed)).permutation(n)]
    scores = []
    for i in range(splits):
        part = probs[i * n // splits : (i + 1) * n // splits]  # the reference's split boundaries
        py = part.mean(0, keepdims=True)  # [1, K] marginal p(y)
        kl = (part * (np.log(part + 1e-12) - np.log(py + 1e-12))).sum(1)  # [m]
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores)), scores


def tf_slim_inception(num_classes):
    """Inception-v3 with TF-slim inception_v3's pooling (torchvision parameter layout, so the same weights file
    loads): every mixed block's 3x3 stride-1 average pool excludes the zero padding from its mean, Mixed_7c's
    included (unlike the FID graph's max pool there). [B, 3, 299, 299] in [-1, 1] -> logits [B, num_classes]."""
    from t2icli.metrics.fid_inception import avg3_no_pad
    from t2icli.models.inception import Inception3, InceptionA, InceptionC, InceptionE

    model = Inception3(num_classes=num_classes, aux_logits=True)
    for block in model.modules():
        if isinstance(block, (InceptionA, InceptionC, InceptionE)):
            block.pool3 = avg3_no_pad  # an instance attribute shadows the class's torchvision pool
    return model


def load_classifier(weights, num_classes=1000, device="cpu", backbone="auto"):
    """Inception-v3 classifier from the weights file `weights` (torchvision layout).

    backbone: "torchvision", "tf-slim" (tf_slim_inception's pooling) or "auto" (tf-slim when the file has a
    background output, i.e. num_classes + 1 outputs, else torchvision). Returns (model in eval mode,
    drop_background: bool, info {"weights", "weights_sha256", "num_classes", "background_dropped", "backbone"}).
    Raises MetricError if the file is missing, unreadable, not an Inception-v3, or its final layer has neither
    num_classes nor num_classes + 1 outputs, or backbone is unknown.
    """
    if backbone not in IS_BACKBONES:
        raise MetricError(f"--is-backbone {backbone}: choose from {', '.join(IS_BACKBONES)}")
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
    drop = outputs == num_classes + 1
    if backbone == "auto":
        backbone = "tf-slim" if drop else "torchvision"
    model = tf_slim_inception(outputs) if backbone == "tf-slim" else Inception3(num_classes=outputs)
    if not has_aux:
        model.AuxLogits = None
    try:
        load_inception_weights(model, state)
    except InceptionWeightsError as exc:
        raise MetricError(f"--inception-weights {weights}: {exc}") from None
    model.to(device).eval().requires_grad_(False)
    info = {"weights": os.path.abspath(weights), "weights_sha256": file_sha256(weights), "num_classes": num_classes,
            "background_dropped": drop, "backbone": backbone,
            "pooling": ("TF-slim: 3x3 average pools exclude the padding" if backbone == "tf-slim"
                        else "torchvision: 3x3 average pools include the padding")}
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


def inception_score(images, weights, num_classes=1000, splits=10, batch_size=50, device="cpu", progress=None,
                    seed=0, backbone="auto"):
    """IS of uint8 images [n, H, W, 3] -> {"metric": "is", "mean", "std", "splits", "split_scores", "n",
    "split_order", "seed", "weights", "weights_sha256", "num_classes", "background_dropped", "backbone",
    "pooling", "resize", "colour_order": "RGB"}. The splits are of the images shuffled by `seed`."""
    if len(images) < splits:
        raise MetricError(f"Inception Score over {splits} splits needs at least {splits} images, got {len(images)}")
    model, drop, info = load_classifier(weights, num_classes, device, backbone)
    probs = class_probabilities(model, images, drop, batch_size, device, progress)
    mean, std, scores = inception_score_from_probs(probs, splits, seed=seed)
    return dict({"metric": "is", "mean": mean, "std": std, "splits": int(splits), "split_scores": scores,
                 "n": int(len(images)), "split_order": SPLIT_ORDER, "seed": int(seed), "resize": RESIZE,
                 "colour_order": "RGB"}, **info)
