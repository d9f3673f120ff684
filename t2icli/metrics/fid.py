"""Fréchet Inception Distance (Heusel et al. 2017) between generated images and a prepared split's real images.

FID = |mu_r - mu_g|^2 + Tr(Sigma_r + Sigma_g - 2 (Sigma_r Sigma_g)^(1/2)) over the 2048-d pool3 features
of an Inception-v3. Two backbones, both from a weights file the user gives (--inception-weights):
  fid-inception  TF inception-2015-12-05 in the PyTorch layout that pytorch-fid / torch-fidelity use
                 (FIDInception3: TF pooling, 1008 classes) - the FID most papers mean;
  torchvision    torchvision's ImageNet Inception-v3 fed [-1, 1], as its transform_input intends;
  dmgan          the same network fed as DM-GAN's eval/FID/inception.py:124-131 feeds it, which is what
                 DM-GAN's published FIDs (and the AttnGAN FIDs in its tables) were computed on: it applies
                 torchvision's transform_input formula x * std / 0.5 + (mean - 0.5) / 0.5 to [0, 1] pixels
                 (transforms.ToTensor) instead of to ImageNet-normalised ones, so the network sees about
                 [-0.03, 0.43] rather than [-1, 1]. Compare with those tables only in this mode.
Both take uint8 RGB exactly as saved, resized bilinearly to 299 and scaled to [-1, 1] (common.RESIZE):
pytorch-fid feeds its FID Inception that way, and torchvision's `transform_input` maps ImageNet-normalised
input to the same [-1, 1] range, so raw [0, 1] pixels scaled to [-1, 1] are what both nets see.
Reference statistics of the real split are cached in DATA/cache/ keyed by sha256(split images + extractor
+ resize + weights hash).
"""

import io
import json
import os

import numpy as np

from t2icli.fileio import atomic_write_bytes
from t2icli.metrics.common import MetricError, RESIZE, check_file, file_sha256, inception_input, sha256_of, uint8_batches

__all__ = ["BACKBONES", "INPUTS", "dmgan_inception", "frechet_distance", "fid_terms", "build_backbone",
           "extract_features", "feature_stats", "reference_stats", "fid_of_images", "stats_cache_path"]

BACKBONES = ("fid-inception", "torchvision", "dmgan")
#: What each backbone's network sees (recorded in every FID result).
INPUTS = {"fid-inception": "x / 127.5 - 1", "torchvision": "x / 127.5 - 1",
          "dmgan": "p = x / 255, then p * std / 0.5 + (mean - 0.5) / 0.5 per channel with ImageNet's mean and std "
                   "(DM-GAN eval/FID/inception.py:127-131)"}


def dmgan_inception(num_classes=1000, aux_logits=True):
    """torchvision-layout Inception-v3 whose features(x) take x in [-1, 1] (as every t2i backbone) and feed the
    network DM-GAN's input: p = (x + 1) / 2 in [0, 1], then p * std / 0.5 + (mean - 0.5) / 0.5 per channel."""
    import torch

    from t2icli.models.inception import Inception3

    class DMGANInception3(Inception3):
        def features(self, x, logits=True):
            mean = torch.tensor((0.485, 0.456, 0.406), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            std = torch.tensor((0.229, 0.224, 0.225), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            p = (x + 1) / 2  # [B, 3, 299, 299] in [0, 1], what transforms.ToTensor gave DM-GAN's loader
            return super().features(p * (std / 0.5) + (mean - 0.5) / 0.5, logits)

    return DMGANInception3(num_classes=num_classes, aux_logits=aux_logits)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Fréchet distance of two Gaussians: mu [D], sigma [D, D] -> float (the sum of fid_terms' two terms)."""
    t = fid_terms(mu1, sigma1, mu2, sigma2)
    return t["mean"] + t["covariance"]


def fid_terms(mu_g, sigma_g, mu_r, sigma_r):
    """The Fréchet distance's two terms, for the JSON: {"mean": |mu_g - mu_r|^2, "covariance": Tr(Sigma_g + Sigma_r -
    2 (Sigma_g Sigma_r)^(1/2)), "spread_generated": Tr Sigma_g, "spread_real": Tr Sigma_r} (floats). A large mean
    term says the images sit elsewhere in the feature space; a large covariance term with spread_generated well
    under spread_real, that they vary less than the reference (blurred or alike images).

    Tr (Sigma_1 Sigma_2)^(1/2) is computed as sum_k sqrt(lambda_k) over the eigenvalues of the symmetric PSD
    matrix Sigma_1^(1/2) Sigma_2 Sigma_1^(1/2) (same eigenvalues as Sigma_1 Sigma_2): the same value
    scipy.linalg.sqrtm gives pytorch-fid, but exact for the near-singular covariances of few images (no complex
    parts, tiny negative eigenvalues of round-off clipped to 0) and ~10x faster at D = 2048.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu_g, np.float64)), np.atleast_1d(np.asarray(mu_r, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma_g, np.float64)), np.atleast_2d(np.asarray(sigma_r, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise MetricError(f"feature statistics differ in shape: {mu1.shape}/{sigma1.shape} vs {mu2.shape}/{sigma2.shape}")
    if not (np.isfinite(sigma1).all() and np.isfinite(sigma2).all() and np.isfinite(mu1).all() and np.isfinite(mu2).all()):
        raise MetricError("FID: the feature statistics are not finite")
    diff = mu1 - mu2
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)  # Sigma_1 = V diag(w) V^T
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # Sigma_1^(1/2)
    m = root1 @ sigma2 @ root1
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(lam, 0, None)).sum())
    tr1, tr2 = float(np.trace(sigma1)), float(np.trace(sigma2))
    return {"mean": float(diff @ diff), "covariance": tr1 + tr2 - 2.0 * tr_covmean, "spread_generated": tr1,
            "spread_real": tr2}


def build_backbone(backbone, weights, device="cpu"):
    """The Inception network of `backbone` ("fid-inception" | "torchvision") with weights from file `weights`.

    Returns (model in eval mode on device, info dict {"backbone", "weights", "weights_sha256", "resize"}).
    Raises MetricError for an unknown backbone, a missing file or a file that is not that network.
    """
    import torch

    from t2icli.models.inception import Inception3, InceptionWeightsError, load_inception_weights

    if backbone not in BACKBONES:
        raise MetricError(f"--fid-backbone {backbone!r}: choose from {', '.join(BACKBONES)}")
    weights = check_file(weights, "--inception-weights")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's error here
        raise MetricError(f"--inception-weights {weights}: cannot read as a PyTorch state dict ({exc})") from None
    if backbone == "fid-inception":
        from t2icli.metrics.fid_inception import FIDInception3

        fc = state.get("fc.weight") if isinstance(state, dict) else None
        model = FIDInception3(num_classes=fc.shape[0] if torch.is_tensor(fc) else 1008)
    else:
        has_aux = isinstance(state, dict) and any(str(k).startswith("AuxLogits.") for k in state)
        fc = state.get("fc.weight") if isinstance(state, dict) else None
        build = dmgan_inception if backbone == "dmgan" else Inception3
        model = build(num_classes=fc.shape[0] if torch.is_tensor(fc) else 1000, aux_logits=has_aux)
    try:
        load_inception_weights(model, state)
    except InceptionWeightsError as exc:
        raise MetricError(f"--inception-weights {weights} for --fid-backbone {backbone}: {exc}") from None
    model.to(device).eval().requires_grad_(False)
    info = {"backbone": backbone, "weights": os.path.abspath(weights), "weights_sha256": file_sha256(weights),
            "resize": RESIZE, "input": INPUTS[backbone]}
    return model, info


def extract_features(model, images, batch_size=50, device="cpu", progress=None):
    """Pool3 features of uint8 images [n, H, W, 3] (numpy/memmap/tensor) -> float64 numpy [n, 2048].

    progress: optional callable(done, total) for stderr progress.
    """
    import torch

    feats = []
    with torch.no_grad():
        for s, batch in uint8_batches(images, batch_size):
            x = inception_input(batch, device)  # [b, 3, 299, 299]
            feats.append(model.features(x, logits=False)["pool"].double().cpu().numpy())
            if progress:
                progress(s + len(batch), len(images))
    if not feats:
        raise MetricError("FID needs at least 2 images, got 0")
    return np.concatenate(feats)


def feature_stats(feats):
    """feats [n, D] -> (mu [D], sigma [D, D]) with the unbiased covariance. Needs n >= 2."""
    feats = np.asarray(feats, np.float64)
    if len(feats) < 2:
        raise MetricError(f"FID needs at least 2 images, got {len(feats)}")
    return feats.mean(0), np.cov(feats, rowvar=False)


def stats_cache_path(data, split, info):
    """DATA/cache/fid-<split>-<key>.npz, key = sha256(split images + backbone + resize + weights hash)[:16]."""
    images = os.path.join(os.fspath(data), split, "images.npy")
    key = sha256_of(file_sha256(images), info["backbone"], info["resize"], info["weights_sha256"])
    return os.path.join(os.fspath(data), "cache", f"fid-{split}-{info['backbone']}-{key[:16]}.npz"), key


def reference_stats(data, split, model, info, batch_size=50, device="cpu", progress=None, log=None):
    """(mu, sigma, meta) of the real `split` of prepared dataset `data`, from the cache or computed and cached.

    meta: {"path", "key", "n", "cached": bool}. The cache file is an .npz with mu, sigma, n and the key.
    """
    from t2icli.data import PreparedDataset

    path, key = stats_cache_path(data, split, info)
    if os.path.isfile(path):
        with np.load(path) as z:
            if str(z["key"]) == key:
                return z["mu"], z["sigma"], {"path": path, "key": key, "n": int(z["n"]), "cached": True}
    ds = PreparedDataset(data, split, train=False)
    if log:
        log(f"FID: computing reference statistics of {len(ds)} real {split} images ({info['backbone']})")
    feats = extract_features(model, ds.images_uint8, batch_size, device, progress)
    mu, sigma = feature_stats(feats)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma, n=len(feats), key=key,
             info=json.dumps({k: info[k] for k in ("backbone", "weights_sha256", "resize")}))
    atomic_write_bytes(path, buf.getvalue())
    return mu, sigma, {"path": path, "key": key, "n": len(feats), "cached": False}


def fid_of_images(images, data, split="test", backbone="fid-inception", weights=None, batch_size=50, device="cpu",
                  progress=None, log=None):
    """FID of uint8 images [n, H, W, 3] against the real `split` of `data`.

    Returns {"metric": "fid", "value", "terms" (fid_terms), "n", "n_real", "backbone", "weights", "weights_sha256",
    "resize", "reference_stats": cache path}.
    """
    model, info = build_backbone(backbone, weights, device)
    mu_r, sigma_r, ref = reference_stats(data, split, model, info, batch_size, device, progress, log)
    if log:
        log(f"FID: features of {len(images)} generated images")
    mu_g, sigma_g = feature_stats(extract_features(model, images, batch_size, device, progress))
    terms = fid_terms(mu_g, sigma_g, mu_r, sigma_r)
    return dict({"metric": "fid", "value": terms["mean"] + terms["covariance"], "terms": terms, "n": int(len(images)),
                 "n_real": ref["n"], "reference_stats": ref["path"]}, **info)
