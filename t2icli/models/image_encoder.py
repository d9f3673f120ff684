"""DAMSM image encoders: a compact CNN trained from scratch, and a frozen Inception-v3 with two learned heads.

Both map images in [-1, 1] to local region features f [B, D, H', W'] (the regions words attend to)
and a global feature f_bar [B, D] in the same D as the text encoder (AttnGAN's CNN_ENCODER).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2icli.models.inception import Inception3

__all__ = ["SmallImageEncoder", "InceptionImageEncoder"]


def _conv_bn(cin, cout, stride):
    """3x3 conv -> BatchNorm -> LeakyReLU(0.2)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)
    )


class SmallImageEncoder(nn.Module):
    """A compact CNN for small images (toybirds, CPU), trained from scratch with the text encoder.

    [B, 3, S, S] -> halve the resolution until it reaches `grid` (each stage: stride-2 conv, 3x3 conv,
    width x2) -> local f [B, D, grid, grid] by a 1x1 conv; one more stride-2 stage, spatial pooling
    and a linear layer -> global f_bar [B, D]. pool="avgmax" concatenates average and max pooling:
    a small bird anywhere in the frame is found by the max, not diluted by the background.
    """

    def __init__(self, out_dim=256, image_size=64, grid=8, width=32, max_width=256, pool="avgmax"):
        super().__init__()
        if image_size % grid or (image_size // grid) & (image_size // grid - 1):
            raise ValueError(f"image_size {image_size} must be grid {grid} times a power of two")
        self.out_dim, self.image_size, self.grid, self.width = int(out_dim), int(image_size), int(grid), int(width)
        layers, cin, c, size = [], 3, self.width, self.image_size
        while size > self.grid:
            layers += [_conv_bn(cin, c, 2), _conv_bn(c, c, 1)]
            cin, c, size = c, min(2 * c, max_width), size // 2
        self.trunk = nn.Sequential(*layers)  # [B, cin, grid, grid]
        self.emb_features = nn.Conv2d(cin, self.out_dim, 1)  # local features, AttnGAN's name
        if pool not in ("avg", "avgmax"):
            raise ValueError(f"pool must be 'avg' or 'avgmax', got {pool!r}")
        self.pool = pool
        self.head = _conv_bn(cin, c, 2)  # [B, c, grid/2, grid/2]
        self.emb_cnn_code = nn.Linear(c * (2 if pool == "avgmax" else 1), self.out_dim)  # global, AttnGAN's name

    def forward(self, x):
        """x: [B, 3, S, S] in [-1, 1]. Returns (f [B, D, grid, grid], f_bar [B, D])."""
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        h = self.trunk(x)  # [B, C, grid, grid]
        g = self.head(h)  # [B, C', grid/2, grid/2]
        pooled = g.mean((2, 3))  # [B, C']
        if self.pool == "avgmax":
            pooled = torch.cat([pooled, g.amax((2, 3))], 1)  # [B, 2C']
        return self.emb_features(h), self.emb_cnn_code(pooled)


class InceptionImageEncoder(nn.Module):
    """AttnGAN's CNN_ENCODER: frozen Inception-v3, input resized to 299; Mixed_6e [768, 17, 17] through a
    1x1 conv to D (local), the 2048-d average pool through a linear layer to D (global).

    batch_stats: False (default) keeps the backbone in eval mode whatever train() says: frozen weights AND frozen
    BatchNorm statistics. True lets the backbone follow train()/eval() as the reference's DAMSM training does
    (taoxugit/AttnGAN code/pretrain_DAMSM.py:51 calls cnn_model.train() on the whole encoder): in training its
    BatchNorm layers normalise with batch statistics and their running statistics drift toward the data set, and
    those drifted statistics are what the GAN's DAMSM term later uses in eval mode (trainer.py:62). Its weights
    stay frozen either way. The backbone's AuxLogits and fc are kept only so torchvision's ImageNet weights load
    strictly; `unused_parameters` names them (models.parameter_count leaves them out, as the reference's
    CNN_ENCODER does not hold them).
    """

    unused_parameters = ("backbone.AuxLogits", "backbone.fc")

    def __init__(self, out_dim=256, batch_stats=False):
        super().__init__()
        self.out_dim = int(out_dim)
        self.batch_stats = bool(batch_stats)
        self.backbone = Inception3(aux_logits=True)
        self.backbone.requires_grad_(False)
        self.emb_features = nn.Conv2d(768, self.out_dim, 1, bias=False)
        self.emb_cnn_code = nn.Linear(2048, self.out_dim)
        nn.init.uniform_(self.emb_features.weight, -0.1, 0.1)
        nn.init.uniform_(self.emb_cnn_code.weight, -0.1, 0.1)

    def train(self, mode=True):
        """Set the heads' mode; the backbone follows it only with batch_stats (else it stays in eval mode)."""
        super().train(mode)
        self.backbone.train(bool(mode) and self.batch_stats)
        return self

    def forward(self, x):
        """x: [B, 3, S, S] in [-1, 1]. Returns (f [B, D, 17, 17], f_bar [B, D])."""
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        # The backbone's weights are frozen (requires_grad False), but no torch.no_grad() here: AttnGAN's DAMSM
        # term must send gradients through the backbone to the generated images. For real images (no grad) no
        # graph is built anyway.
        feats = self.backbone.features(x, logits=False)
        return self.emb_features(feats["mixed_6e"]), self.emb_cnn_code(feats["pool"])
