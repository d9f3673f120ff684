"""StackGAN (v1, Zhang et al. 2017): a Stage-I GAN sketches at 1/4 of the final side, a Stage-II GAN refines it.

    c_1 = F_ca1(t)                                  conditioning augmentation (KL-regularised), c in R^cond_dim
    x_1 = G_1(z, c_1)                               FC -> [8ngf, 4, 4] -> x2 upsampling blocks -> s_1 = S / 4
    c_2 = F_ca2(t)                                  Stage-II's own conditioning augmentation
    x_2 = G_2(x_1, c_2)                             downsample x_1 4x -> join tiled c_2 -> residual blocks ->
                                                    four x2 upsampling blocks -> S = 4 s_1
    D_i(x, mu_i)                                    image code [., 4, 4] joined with the CA mean mu_i tiled (3x3)

The layers are hanzhanggit/StackGAN-Pytorch code/model.py's: CA_NET is FC(2c) + ReLU, STAGE1_G, STAGE2_G; the
Ds are models.attngan.StageDiscriminator, whose 64 px form is STAGE1_D (conditional head only) and whose 256 px
form is STAGE2_D (down to 32ndf, 3x3 blocks back to 8ndf, conditional and unconditional heads).

G_1 is trained first, then frozen while G_2 trains (t2icli/training/stackgan.py). `StackGAN` holds both and has the
multi-stage generator's forward signature, so sampling and evaluation drive it like the others: both stages share
the conditioning noise eps of an image.
"""

import dataclasses
import math

import torch
import torch.nn as nn

from t2icli.models.attngan import CondAugment, StageDiscriminator
from t2icli.models.config import ConfigDict, ModelConfigError
from t2icli.models.gancls import check_size

__all__ = ["StackGANConfig", "Stage1Generator", "Stage2Generator", "StackGAN", "build_discriminators", "stage_sizes"]


def stage_sizes(image_size):
    """(Stage-I side, Stage-II side): (S / 4, S), e.g. 256 -> (64, 256), 64 -> (16, 64)."""
    return [int(image_size) // 4, int(image_size)]


@dataclasses.dataclass
class StackGANConfig(ConfigDict):
    """Everything needed to rebuild both StackGAN generators (and the Ds' width)."""

    _what = "StackGAN config"

    image_size: int = 256  # Stage-II side; Stage-I makes image_size / 4
    gf_dim: int = 128  # Stage-I: 4x4 block of 8 ngf channels, halved per x2; Stage-II: encoder ngf -> 4ngf
    df_dim: int = 64
    z_dim: int = 100
    cond_dim: int = 128  # c (and mu) of conditioning augmentation
    text_dim: int = 256  # t: DAMSM sentence feature (256) or char-CNN-RNN embedding (1024)
    res_blocks: int = 4  # Stage-II residual blocks (GAN.R_NUM)
    # Conditioning augmentation: "relu" = StackGAN-Pytorch's CA_NET (FC to 2c, ReLU); "glu" = the AttnGAN CA t2i
    # used before (FC to 4c, GLU); only exports made then carry it.
    ca: str = "relu"

    _predates = {"ca": "glu"}  # an export without "ca" predates the field

    @property
    def sizes(self):
        return stage_sizes(self.image_size)

    @property
    def stages(self):
        return 2

    def validate(self):
        check_size(self.image_size, 32)  # Stage-I >= 8 px; Stage-II's encoder halves it twice
        self.check_positive("gf_dim", "df_dim", "z_dim", "cond_dim", "text_dim")
        if int(self.res_blocks) < 0:
            raise ModelConfigError(f"res_blocks must be >= 0, got {self.res_blocks}")
        if self.ca not in ("relu", "glu"):
            raise ModelConfigError(f"StackGAN conditioning augmentation {self.ca!r}: choose relu or glu")
        return self


def _up(cin, cout):
    """StackGAN's upBlock: x2 nearest -> conv3x3 -> BN -> ReLU. [B, cin, s, s] -> [B, cout, 2s, 2s]."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(True))


class _ResBlock(nn.Module):
    """ReLU(x + BN(conv3x3(ReLU(BN(conv3x3(x)))))): [B, C, s, s] -> [B, C, s, s]."""

    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True),
                                  nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        self.act = nn.ReLU(True)

    def forward(self, x):
        return self.act(x + self.body(x))


class Stage1Generator(nn.Module):
    """x_1 = G_1(z, c): (z [B, z_dim], c [B, cond_dim]) -> [B, 3, s_1, s_1]."""

    def __init__(self, z_dim, cond_dim, gf_dim, size):
        super().__init__()
        n_up = int(math.log2(size // 4))
        self.c0 = 8 * gf_dim
        widths = [max(self.c0 >> k, 4) for k in range(n_up + 1)]  # 64 px: [8ngf, 4ngf, 2ngf, ngf, ngf/2]
        self.fc = nn.Sequential(nn.Linear(z_dim + cond_dim, self.c0 * 16, bias=False), nn.BatchNorm1d(self.c0 * 16),
                                nn.ReLU(True))
        self.up = nn.Sequential(*[_up(widths[k], widths[k + 1]) for k in range(n_up)])
        self.to_img = nn.Sequential(nn.Conv2d(widths[-1], 3, 3, 1, 1, bias=False), nn.Tanh())

    def forward(self, z, c):
        h = self.fc(torch.cat([c, z], dim=1)).view(z.shape[0], self.c0, 4, 4)  # [B, 8ngf, 4, 4]
        return self.to_img(self.up(h))  # [B, 3, s_1, s_1]


class Stage2Generator(nn.Module):
    """x_2 = G_2(x_1, c): (x_1 [B, 3, s, s], c [B, cond_dim]) -> [B, 3, 4s, 4s]."""

    def __init__(self, cond_dim, gf_dim, res_blocks):
        super().__init__()
        g = gf_dim
        self.encode = nn.Sequential(  # [B, 3, s, s] -> [B, 4ngf, s/4, s/4]
            nn.Conv2d(3, g, 3, 1, 1, bias=False), nn.ReLU(True),
            nn.Conv2d(g, 2 * g, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * g), nn.ReLU(True),
            nn.Conv2d(2 * g, 4 * g, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * g), nn.ReLU(True))
        self.joint = nn.Sequential(nn.Conv2d(4 * g + cond_dim, 4 * g, 3, 1, 1, bias=False), nn.BatchNorm2d(4 * g),
                                   nn.ReLU(True))
        self.res = nn.Sequential(*[_ResBlock(4 * g) for _ in range(res_blocks)])
        widths = [max((4 * g) >> k, 4) for k in range(5)]  # [4ngf, 2ngf, ngf, ngf/2, ngf/4]
        self.up = nn.Sequential(*[_up(widths[k], widths[k + 1]) for k in range(4)])  # s/4 -> 4s
        self.to_img = nn.Sequential(nn.Conv2d(widths[-1], 3, 3, 1, 1, bias=False), nn.Tanh())

    def forward(self, x1, c):
        h = self.encode(x1)  # [B, 4ngf, s/4, s/4]
        h = self.joint(torch.cat([h, c[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3]).to(h.dtype)], 1))
        return self.to_img(self.up(self.res(h)))  # [B, 3, 4s, 4s]


class StackGAN(nn.Module):
    """Both stages: ca1 + g1 (Stage-I), ca2 + g2 (Stage-II).

    forward(z [B, z_dim], e_bar = t [B, text_dim], e, mask, eps [B, cond_dim] or None, return_attn, stages=2) ->
    {"images": [x_1 [B, 3, S/4, S/4], x_2 [B, 3, S, S]] (only x_1 with stages=1), "mu", "logvar" (of the last
    stage run), "mu1", "logvar1", and "attn": [] with return_attn}. e and mask are ignored (no word features).
    """

    def __init__(self, config):
        super().__init__()
        if isinstance(config, dict):
            config = StackGANConfig.from_dict(config)
        self.config = cfg = config.validate()
        s1 = cfg.sizes[0]
        self.ca1 = CondAugment(cfg.text_dim, cfg.cond_dim, act=cfg.ca)
        self.g1 = Stage1Generator(cfg.z_dim, cfg.cond_dim, cfg.gf_dim, s1)
        self.ca2 = CondAugment(cfg.text_dim, cfg.cond_dim, act=cfg.ca)
        self.g2 = Stage2Generator(cfg.cond_dim, cfg.gf_dim, cfg.res_blocks)

    def forward(self, z, e_bar, e=None, mask=None, eps=None, return_attn=False, stages=2):
        if eps is None:
            eps = torch.randn(z.shape[0], self.config.cond_dim, device=z.device)
        c1, mu1, logvar1 = self.ca1(e_bar, eps)
        x1 = self.g1(z, c1)  # [B, 3, s_1, s_1]
        out = {"images": [x1], "mu": mu1, "logvar": logvar1, "mu1": mu1, "logvar1": logvar1}
        if stages == 2:
            c2, mu2, logvar2 = self.ca2(e_bar, eps)
            out["images"].append(self.g2(x1, c2))  # [B, 3, S, S]
            out["mu"], out["logvar"] = mu2, logvar2
        if return_attn:
            out["attn"] = []
        return out


def build_discriminators(config):
    """[D_1 at S/4, D_2 at S] as an nn.ModuleList; each scores (image, mu) with a 3x3 joint conv as StackGAN.

    D_1 is STAGE1_D (conditional head only), D_2 is STAGE2_D (conditional and unconditional heads); both are
    StageDiscriminators conditioned on the CA mean (cond_dim), as hanzhanggit/StackGAN-Pytorch code/model.py.
    """
    if isinstance(config, dict):
        config = StackGANConfig.from_dict(config)
    s1, s2 = config.sizes
    return nn.ModuleList([StageDiscriminator(s1, config.df_dim, config.cond_dim, uncond=False),
                          StageDiscriminator(s2, config.df_dim, config.cond_dim, uncond=True)])
