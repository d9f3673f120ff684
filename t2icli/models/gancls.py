"""GAN-INT-CLS (Reed et al. 2016, "Generative Adversarial Text to Image Synthesis"): DCGAN G and D with text, style encoder.

    t_hat = LeakyReLU(FC(t))                      the sentence feature t [text_dim] compressed to proj_dim (128)
    x = G(z, t) = DCGAN([z ; t_hat] as 1x1)       1 -> 4 (transposed conv), x2 steps to image_size, tanh
    D(x, t) = conv4x4(BN(conv1x1([phi(x) ; t_hat' tiled 4x4])))   phi(x): strided convs down to [8ndf, 4, 4]
    S(x) -> z                                     the style encoder of section 4.4 (same conv stack as D)

layout="reference" is reedscot/icml2016 main_cls_int.lua's networks (G lines 99-168, D lines 171-226): stride-2
transposed convs, a bottleneck residual block after G's 4x4 and 8x8 states and after D's 4x4 code, BatchNorm in
D's text projection t_hat' (G's has none), no conv biases (the Lua script zeroes every conv bias before each
forward pass, lines 309-310 and 394-395). layout="coco" is the COCO script's (main_cls.lua, with
scripts/train_coco.sh): the same G, and a D with a LeakyReLU after its third convolution and no BatchNorm in its text
projection (main_cls.lua:204-210, 231-233). layout="legacy" is the network t2i used before (resize-convs, no
residual blocks, no BatchNorm in D's projection); exports made then carry it.

The export (RUN/generator.pt, with the style encoder when trained) is models/export.py's.
"""

import dataclasses
import math

import torch
import torch.nn as nn

from t2icli.models.config import ConfigDict, ModelConfigError

__all__ = ["GanClsConfig", "GanClsGenerator", "CondDiscriminator", "StyleEncoder", "init_dcgan", "check_size", "LAYOUTS"]

LAYOUTS = ("reference", "coco", "legacy")


def check_size(image_size, smallest=8, flag="image size"):
    """Raise ModelConfigError unless image_size is a power of two >= `smallest`."""
    s = int(image_size)
    if s < smallest or s & (s - 1):
        raise ModelConfigError(f"{flag} {s} px: this model needs a power of two >= {smallest}")
    return s


def down_stack(size, ndf, cin=3):
    """DCGAN encoder: stride-2 4x4 convs from [cin, size, size] to [C, 4, 4], widths ndf * 2^k (at most 8ndf), BN
    after all but the first, LeakyReLU(0.2). Returns (nn.Sequential, C)."""
    layers = []
    for k in range(int(math.log2(size // 4))):
        cout = ndf * 2 ** min(k, 3)
        layers.append(nn.Conv2d(cin, cout, 4, 2, 1, bias=False))
        if k > 0:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        cin = cout
    return nn.Sequential(*layers), cin


@dataclasses.dataclass
class GanClsConfig(ConfigDict):
    """Everything needed to rebuild a GAN-INT-CLS generator (and its D's width)."""

    _what = "GAN-INT-CLS config"

    image_size: int = 64
    gf_dim: int = 128  # ngf (main_cls_int.lua: 128): the 4x4 block has (image_size / 8) * ngf channels, halved per x2
    df_dim: int = 64  # ndf
    z_dim: int = 100
    text_dim: int = 256  # t: DAMSM sentence feature (256) or char-CNN-RNN embedding (1024)
    proj_dim: int = 128  # t_hat
    cond_dim: int = 0  # no conditioning augmentation: the per-image eps noise is empty
    layout: str = "reference"  # see the module docstring; exports without the field are "legacy"

    _predates = {"layout": "legacy"}  # an export without "layout" predates the field

    @property
    def sizes(self):
        return [int(self.image_size)]

    @property
    def stages(self):
        return 1

    def validate(self):
        check_size(self.image_size)
        self.check_positive("gf_dim", "df_dim", "z_dim", "text_dim", "proj_dim")
        if self.layout not in LAYOUTS:
            raise ModelConfigError(f"GAN-INT-CLS layout {self.layout!r}: choose from {LAYOUTS}")
        return self


class TextProjection(nn.Sequential):
    """t [B, text_dim] -> t_hat [B, proj_dim]: FC (+ BatchNorm when bn, as D's fcD) + LeakyReLU(0.2)."""

    def __init__(self, text_dim, proj_dim, bn=False):
        layers = [nn.Linear(text_dim, proj_dim)] + ([nn.BatchNorm1d(proj_dim)] if bn else [])
        super().__init__(*layers, nn.LeakyReLU(0.2, inplace=True))


class Bottleneck(nn.Module):
    """main_cls_int.lua's residual block: act(x + BN(conv3x3(act(BN(conv3x3(act(BN(conv1x1(x))))))))).

    [B, C, s, s] -> [B, C, s, s] through C/4 channels; act is ReLU in G, LeakyReLU(0.2) in D.
    """

    def __init__(self, channels, leaky=False):
        super().__init__()
        c, mid = int(channels), max(int(channels) // 4, 1)

        def act():
            return nn.LeakyReLU(0.2, inplace=True) if leaky else nn.ReLU(True)

        self.body = nn.Sequential(nn.Conv2d(c, mid, 1, bias=False), nn.BatchNorm2d(mid), act(),
                                  nn.Conv2d(mid, mid, 3, 1, 1, bias=False), nn.BatchNorm2d(mid), act(),
                                  nn.Conv2d(mid, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        self.act = act()

    def forward(self, x):
        return self.act(x + self.body(x))


def _reference_generator(cfg):
    """main_cls_int.lua's netG (lines 99-168) generalised to any power-of-two size: transposed conv 1 -> 4 to
    widths[0], BN; a residual block (with its ReLU) after each of the first two states (4x4 and 8x8 at 64 px, where
    their BN has no ReLU of its own); then transposed conv + BN + ReLU per x2; a last transposed conv to RGB, tanh."""
    n_up = int(math.log2(cfg.image_size // 4))  # 4 -> image_size
    widths = [cfg.gf_dim * 2 ** (n_up - 1 - k) for k in range(n_up)]  # 64 px: [8ngf, 4ngf, 2ngf, ngf]
    layers = [nn.ConvTranspose2d(cfg.z_dim + cfg.proj_dim, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0])]
    for k, (cin, cout) in enumerate(zip(widths, widths[1:] + [3])):
        if k < 2:
            layers.append(Bottleneck(cin))  # its closing ReLU is the state's activation
        elif k > 0:
            layers.append(nn.ReLU(True))
        layers.append(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False))
        if cout != 3:
            layers.append(nn.BatchNorm2d(cout))
    return nn.Sequential(*layers, nn.Tanh())


def _legacy_generator(cfg):
    """t2i's GAN-INT-CLS G before layout existed: x2 steps as resize-convolutions (nearest x2 + 3x3 conv)."""
    n_up = int(math.log2(cfg.image_size // 4))  # 4 -> image_size
    widths = [cfg.gf_dim * 2 ** (n_up - 1 - k) for k in range(n_up)]  # 64 px: [8ngf, 4ngf, 2ngf, ngf]
    layers = [nn.ConvTranspose2d(cfg.z_dim + cfg.proj_dim, widths[0], 4, 1, 0, bias=False),  # 1x1 -> 4x4
              nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
    # Measured on toybirds 64 px (ngf 16, 600 steps), the transposed-conv G of the time stayed at grey noise while
    # D rejected its checkerboard texture; the resize-conv G learnt colours and shapes in the same budget.
    for cin, cout in zip(widths, widths[1:]):
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(True)]
    layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(widths[-1], 3, 3, 1, 1), nn.Tanh()]
    return nn.Sequential(*layers)


class GanClsGenerator(nn.Module):
    """x = G(z, t): DCGAN generator conditioned on the compressed sentence feature (layout: see the module doc).

    forward has the multi-stage generator's signature, so the same sampling and evaluation code drives it:
    (z [B, z_dim], e_bar = t [B, text_dim], e, mask, eps, return_attn) -> {"images": [x [B, 3, S, S]]}; e, mask and
    eps are ignored (no words, no conditioning augmentation).
    """

    def __init__(self, config):
        super().__init__()
        if isinstance(config, dict):
            config = GanClsConfig.from_dict(config)
        self.config = cfg = config.validate()
        self.proj = TextProjection(cfg.text_dim, cfg.proj_dim)  # fcG: no BatchNorm
        self.net = _legacy_generator(cfg) if cfg.layout == "legacy" else _reference_generator(cfg)

    def forward(self, z, e_bar, e=None, mask=None, eps=None, return_attn=False):
        x = torch.cat([z, self.proj(e_bar)], dim=1)[:, :, None, None]  # [B, z_dim + proj_dim, 1, 1]
        out = {"images": [self.net(x)]}  # [B, 3, S, S] in [-1, 1]
        if return_attn:
            out["attn"] = []
        return out


def reference_down_stack(size, ndf, coco=False):
    """main_cls_int.lua's convD (lines 172-201), generalised: stride-2 4x4 convs to [C, 4, 4] (widths ndf * 2^k, at
    most 8ndf; BN after all but the first; LeakyReLU after all but the last two, as the reference at 64 px, or with
    coco after all but the last, as main_cls.lua), then a LeakyReLU bottleneck residual block. Returns
    (nn.Sequential, C)."""
    layers, cin = [], 3
    n = int(math.log2(size // 4))
    for k in range(n):
        cout = ndf * 2 ** min(k, 3)
        layers.append(nn.Conv2d(cin, cout, 4, 2, 1, bias=False))
        if k > 0:
            layers.append(nn.BatchNorm2d(cout))
        if k == 0 or k < n - (1 if coco else 2):
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        cin = cout
    return nn.Sequential(*layers, Bottleneck(cin, leaky=True)), cin


class CondDiscriminator(nn.Module):
    """Matching-aware D: (x [B, 3, S, S], t [B, text_dim]) -> logit [B].

    phi(x) [B, C, 4, 4] joined with the text projected to proj_dim (FC + BN + LeakyReLU in the reference layout,
    FC + LeakyReLU in the legacy one; used as it is when proj_dim is None) replicated over the 4x4 grid, then a
    `joint_kernel` conv + BN + LeakyReLU and a 4x4 conv. layout="reference" is main_cls_int.lua's netD (residual
    block on phi(x), no conv biases); "legacy" t2i's earlier D (plain DCGAN phi(x)).
    """

    def __init__(self, size, df_dim, text_dim, proj_dim=128, joint_kernel=1, layout="reference"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r}: choose from {LAYOUTS}")
        ref = layout != "legacy"
        self.encode, code = (reference_down_stack(size, df_dim, coco=layout == "coco") if ref
                             else down_stack(size, df_dim))
        self.proj = TextProjection(text_dim, proj_dim, bn=layout == "reference") if proj_dim else nn.Identity()
        tdim = proj_dim or text_dim
        self.joint = nn.Sequential(nn.Conv2d(code + tdim, code, joint_kernel, 1, joint_kernel // 2, bias=False),
                                   nn.BatchNorm2d(code), nn.LeakyReLU(0.2, inplace=True))
        self.out = nn.Conv2d(code, 1, 4, 1, 0, bias=not ref)

    def forward(self, x):
        """x [B, 3, S, S] -> image code [B, C, 4, 4] (compute once, score against several texts)."""
        return self.encode(x)

    def logits(self, code, t):
        """code [B, C, 4, 4], t [B, text_dim] -> raw logit [B] of 'real image matching this text'."""
        t = self.proj(t)[:, :, None, None].expand(-1, -1, code.shape[2], code.shape[3])  # [B, tdim, 4, 4]
        return self.out(self.joint(torch.cat([code, t.to(code.dtype)], dim=1))).view(-1)


class StyleEncoder(nn.Module):
    """S(x) -> z (section 4.4): the DCGAN encoder then a 4x4 conv to z_dim. x [B, 3, S, S] -> [B, z_dim]."""

    def __init__(self, size, df_dim, z_dim):
        super().__init__()
        self.encode, code = down_stack(size, df_dim)
        self.out = nn.Conv2d(code, z_dim, 4, 1, 0)

    def forward(self, x):
        return self.out(self.encode(x)).flatten(1)


def init_dcgan(module):
    """DCGAN's init: conv weights ~ N(0, 0.02), BN weight ~ N(1, 0.02), zero biases; linear layers orthogonal."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, 1.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module
