"""Pieces every metric shares: the metric error type, file hashing, uint8 image batches and the Inception input."""

import hashlib
import os

import numpy as np

from t2icli.errors import T2IError

__all__ = ["MetricError", "file_sha256", "sha256_of", "uint8_batches", "inception_input", "RESIZE", "INCEPTION_SIZE"]

INCEPTION_SIZE = 299
#: How images reach the Inception networks (stated in every IS/FID result).
RESIZE = "bilinear (align_corners=False, no antialias) to 299x299 from uint8 RGB, then x/127.5-1 (as pytorch-fid)"


class MetricError(T2IError):
    """A user error in evaluating (missing weights file, metric not applicable to the data, ...); names the flag."""


def file_sha256(path, chunk=1 << 20):
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_of(*parts):
    """Hex sha256 of strings joined by NUL (a cache key from several hashes and names)."""
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()


def uint8_batches(images, batch_size):
    """Yield (start, uint8 numpy [b, H, W, 3]) slices of images (numpy/memmap or tensor [n, H, W, 3])."""
    n = len(images)
    for s in range(0, n, batch_size):
        batch = images[s : s + batch_size]
        if hasattr(batch, "numpy"):
            batch = batch.cpu().numpy()
        batch = np.array(batch)  # a writable copy (memmaps are read-only)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise MetricError(f"images must be uint8 [n, H, W, 3] exactly as saved, got {batch.dtype} {batch.shape}")
        yield s, batch


def inception_input(batch, device):
    """uint8 numpy [b, H, W, 3] -> float [b, 3, 299, 299] in [-1, 1] on device (see RESIZE)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float()  # [b, 3, H, W] in [0, 255]
    if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
    return x / 127.5 - 1.0


def check_file(path, flag):
    """Raise MetricError unless `path` names an existing file (message names `flag`)."""
    if path is None:
        raise MetricError(f"{flag} is required for this metric (a weights file of your own: none can be downloaded)")
    if not os.path.isfile(path):
        raise MetricError(f"{flag} {path}: no such file")
    return os.fspath(path)
