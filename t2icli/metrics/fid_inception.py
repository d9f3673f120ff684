"""The "FID Inception": Inception-v3 as TensorFlow's inception-2015-12-05 graph computes it (FID's reference network).

FID was defined (Heusel et al. 2017) with TensorFlow's 2015 Inception graph, which differs from
torchvision's Inception-v3 in its pooling: the average pools of Mixed_5b..5d, Mixed_6b..6e and Mixed_7b
exclude the zero padding from the mean (count_include_pad=False), Mixed_7c's pool branch is a max
pool, and the classifier has 1008 outputs. The parameter names and shapes are torchvision's, so the
PyTorch port of those weights that pytorch-fid and torch-fidelity distribute (pt_inception-2015-12-05)
loads with `load_inception_weights`. Built here from the blocks of t2icli/models/inception.py.
"""

import torch
import torch.nn.functional as F

from t2icli.models.inception import Inception3, InceptionA, InceptionC, InceptionE

__all__ = ["FIDInception3", "FID_NUM_CLASSES", "avg3_no_pad"]

FID_NUM_CLASSES = 1008


def avg3_no_pad(x):
    """3x3 stride-1 average pool whose border windows average only the real pixels (TF 'SAME' pooling)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max3(x):
    """3x3 stride-1 max pool (Mixed_7c's pool branch in the TF graph)."""
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class FIDInceptionA(InceptionA):
    """Mixed_5b..5d with the TF average pool."""

    pool3 = staticmethod(avg3_no_pad)


class FIDInceptionC(InceptionC):
    """Mixed_6b..6e with the TF average pool."""

    pool3 = staticmethod(avg3_no_pad)


class FIDInceptionE(InceptionE):
    """Mixed_7b (pool="avg", TF average pool) and Mixed_7c (pool="max", TF's max pool)."""

    def __init__(self, cin, pool="avg"):
        super().__init__(cin)
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool3 = _max3 if pool == "max" else avg3_no_pad


class FIDInception3(Inception3):
    """Inception-v3 with TF inception-2015-12-05's pooling and 1008 classes, no auxiliary head.

    Input: [B, 3, 299, 299] in [-1, 1] (uint8 RGB x as x / 127.5 - 1). `features(x)["pool"]` [B, 2048]
    is the pool3 feature FID uses. State-dict keys equal torchvision's Inception-v3 without AuxLogits.
    """

    def __init__(self, num_classes=FID_NUM_CLASSES):
        super().__init__(num_classes=num_classes, aux_logits=False)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
