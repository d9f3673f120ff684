"""The multi-stage text-to-image GAN of AttnGAN (Xu et al. 2018) and StackGAN++ (Zhang et al. 2018): G and per-stage Ds.

One generator class serves both: `attention=True` is AttnGAN (stage i >= 1 attends to the words e),
`attention=False` is StackGAN++ (stage i >= 1 sees only the conditioning code c, tiled over space).

    c, mu, logvar = F_ca(e_bar)                       conditioning augmentation, c in R^cond_dim
    h_0 = F_0(z, c)                                   FC -> 4x4 -> upsampling blocks -> first stage size
    h_i = F_i(h_{i-1}, F_attn_i(e, h_{i-1}))          attention (or tiled c), 2 residual blocks, one x2 upsampling
    x_i = G_i(h_i) = tanh(conv3x3(h_i))               one image per stage, each twice the previous side

The inference export (RUN/generator.pt) is written and read by models/export.py.
"""

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2icli import ops
from t2icli.models.config import ConfigDict, ModelConfigError

__all__ = [
    "GeneratorConfig", "stage_sizes", "check_stages", "CondAugment", "UpBlock", "ResBlock", "InitStage",
    "NextStage", "Generator", "StageDiscriminator", "build_discriminators", "init_weights", "word_mask",
]

MIN_FIRST_SIZE = 16


def stage_sizes(image_size, stages):
    """Image side of every stage: final `image_size` halved (stages - 1) times, e.g. (64, 3) -> [16, 32, 64]."""
    return [int(image_size) >> (stages - 1 - i) for i in range(stages)]


def check_stages(image_size, stages):
    """Raise ModelConfigError unless `stages` (1..3) fits `image_size`.

    Rule: the final size is a power of two and the first stage's side, image_size / 2^(stages-1), is at
    least 16 px (it is grown from 4x4 by x2 upsampling and judged by a discriminator that ends at 4x4).
    """
    image_size, stages = int(image_size), int(stages)
    if not 1 <= stages <= 3:
        raise ModelConfigError(f"--stages {stages}: choose 1, 2 or 3")
    if image_size < MIN_FIRST_SIZE or image_size & (image_size - 1):
        raise ModelConfigError(f"image size {image_size} px: the generator needs a power of two >= {MIN_FIRST_SIZE}")
    first = image_size >> (stages - 1)
    if first < MIN_FIRST_SIZE:
        most = int(math.log2(image_size // MIN_FIRST_SIZE)) + 1
        raise ModelConfigError(f"--stages {stages} on {image_size} px images gives a first stage of {first} px; "
                                   f"it must be >= {MIN_FIRST_SIZE} px, so use --stages <= {most} (or larger images)")


@dataclasses.dataclass
class GeneratorConfig(ConfigDict):
    """Everything needed to rebuild a generator (and its discriminators' widths)."""

    _what = "generator config"

    image_size: int = 64  # final stage's side
    stages: int = 3
    gf_dim: int = 32  # channels of every h_i; F_0's 4x4 block has 16x that
    df_dim: int = 64
    z_dim: int = 100
    cond_dim: int = 100  # c of conditioning augmentation
    text_dim: int = 256  # D of the DAMSM words e and sentence e_bar
    attention: bool = True  # AttnGAN; False = StackGAN++
    res_blocks: int = 2

    @property
    def sizes(self):
        """Side of every stage's image, e.g. [16, 32, 64]."""
        return stage_sizes(self.image_size, self.stages)

    def validate(self):
        """Raise ModelConfigError for an impossible configuration."""
        check_stages(self.image_size, self.stages)
        self.check_positive("gf_dim", "df_dim", "z_dim", "cond_dim", "text_dim")
        return self


def word_mask(tokens):
    """tokens [B, T] (0 = padding) -> bool [B, T], True at padding: the words attention must ignore."""
    return tokens == 0


# -- building blocks --------------------------------------------------------------------------------
def _conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)


class UpBlock(nn.Sequential):
    """x2 nearest upsampling -> 3x3 conv -> BN -> GLU: [B, cin, s, s] -> [B, cout, 2s, 2s]."""

    def __init__(self, cin, cout):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), _conv3x3(cin, 2 * cout),
                         nn.BatchNorm2d(2 * cout), nn.GLU(dim=1))


class ResBlock(nn.Module):
    """x + BN(conv3x3(GLU(BN(conv3x3(x))))): [B, C, s, s] -> [B, C, s, s]."""

    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(_conv3x3(channels, 2 * channels), nn.BatchNorm2d(2 * channels), nn.GLU(dim=1),
                                  _conv3x3(channels, channels), nn.BatchNorm2d(channels))

    def forward(self, x):
        return x + self.body(x)


class CondAugment(nn.Module):
    """Conditioning augmentation F_ca: e_bar [B, text_dim] -> FC -> GLU -> (mu, logvar); c = mu + sigma * eps."""

    def __init__(self, text_dim, cond_dim):
        super().__init__()
        self.cond_dim = int(cond_dim)
        self.fc = nn.Linear(text_dim, 4 * self.cond_dim)  # GLU halves it to [mu | logvar]

    def forward(self, e_bar, eps=None):
        """e_bar [B, text_dim]; eps [B, cond_dim] or None (drawn from the global RNG). Returns (c, mu, logvar)."""
        x = F.glu(self.fc(e_bar), dim=1)  # [B, 2 * cond_dim]
        mu, logvar = x[:, : self.cond_dim], x[:, self.cond_dim :]  # [B, cond_dim] each
        if eps is None:
            eps = torch.randn_like(mu)
        c = mu + torch.exp(0.5 * logvar) * eps  # [B, cond_dim]
        return c, mu, logvar


class InitStage(nn.Module):
    """F_0: (z [B, z_dim], c [B, cond_dim]) -> FC -> BN -> GLU -> [B, 16gf, 4, 4] -> upsampling to h_0 [B, gf, s, s].

    Every upsampling block halves the width and the last one ends at gf (at 64 px: 16gf -> 8gf -> 4gf -> 2gf -> gf,
    as the paper; at 16 px: 16gf -> 8gf -> gf).
    """

    def __init__(self, z_dim, cond_dim, gf_dim, size):
        super().__init__()
        n_up = int(math.log2(size // 4))
        self.c0 = 16 * gf_dim
        widths = [self.c0 >> k for k in range(n_up)] + [gf_dim]  # [16gf, 8gf, ..., gf]
        self.fc = nn.Sequential(nn.Linear(z_dim + cond_dim, self.c0 * 16 * 2, bias=False),
                                nn.BatchNorm1d(self.c0 * 16 * 2), nn.GLU(dim=1))
        self.up = nn.Sequential(*[UpBlock(widths[k], widths[k + 1]) for k in range(n_up)])

    def forward(self, z, c):
        x = self.fc(torch.cat([c, z], dim=1)).view(z.shape[0], self.c0, 4, 4)  # [B, C0, 4, 4]
        return self.up(x)  # [B, gf_dim, s, s]


class NextStage(nn.Module):
    """F_i (i >= 1): joins h_{i-1} with word context (attention) or the tiled code c, 2 residual blocks, x2 up.

    h [B, gf, s, s] -> h' [B, gf, 2s, 2s]; also returns beta [B, T, s*s] (attention) or None.
    """

    def __init__(self, gf_dim, text_dim, cond_dim, attention=True, res_blocks=2):
        super().__init__()
        self.attention = bool(attention)
        if self.attention:
            self.proj = nn.Conv2d(text_dim, gf_dim, 1, bias=False)  # words -> image channels (AttnGAN's conv1x1)
            self.joint = nn.Identity()
        else:  # StackGAN++: concat tiled c, then a 3x3 conv back to 2 * gf channels
            self.proj = None
            self.joint = nn.Sequential(_conv3x3(gf_dim + cond_dim, 4 * gf_dim), nn.BatchNorm2d(4 * gf_dim),
                                       nn.GLU(dim=1))
        self.res = nn.Sequential(*[ResBlock(2 * gf_dim) for _ in range(res_blocks)])
        self.up = UpBlock(2 * gf_dim, gf_dim)

    def forward(self, h, c, e, mask, return_attn=False):
        """h [B, gf, s, s]; c [B, cond_dim]; e [B, text_dim, T]; mask [B, T] True = padding."""
        B, C, s, _ = h.shape
        beta = None
        if self.attention:
            e_proj = self.proj(e.unsqueeze(3)).squeeze(3)  # [B, gf, T]  e' = U e
            out = ops.word_region_attention(h.reshape(B, C, s * s), e_proj.to(h.dtype), mask, return_attn=return_attn)
            ctx, beta = out if return_attn else (out, None)  # ctx [B, gf, s*s], beta [B, T, s*s]
            x = torch.cat([h, ctx.reshape(B, C, s, s)], dim=1)  # [B, 2gf, s, s]
        else:
            x = self.joint(torch.cat([h, c[:, :, None, None].expand(-1, -1, s, s).to(h.dtype)], dim=1))  # [B, 2gf, s, s]
        return self.up(self.res(x)), beta


class Generator(nn.Module):
    """The multi-stage generator: (z, e_bar, e, mask) -> images of every stage (see the module docstring)."""

    def __init__(self, config):
        super().__init__()
        if isinstance(config, dict):
            config = GeneratorConfig.from_dict(config)
        self.config = config.validate()
        cfg = config
        sizes = cfg.sizes
        self.ca = CondAugment(cfg.text_dim, cfg.cond_dim)
        self.f0 = InitStage(cfg.z_dim, cfg.cond_dim, cfg.gf_dim, sizes[0])
        self.f = nn.ModuleList([NextStage(cfg.gf_dim, cfg.text_dim, cfg.cond_dim, cfg.attention, cfg.res_blocks)
                                for _ in sizes[1:]])
        self.to_img = nn.ModuleList([nn.Sequential(_conv3x3(cfg.gf_dim, 3), nn.Tanh()) for _ in sizes])  # G_i

    def forward(self, z, e_bar, e, mask, eps=None, return_attn=False):
        """z [B, z_dim] ~ N(0, I); e_bar [B, text_dim] sentence; e [B, text_dim, T] words; mask [B, T] True = pad;
        eps [B, cond_dim] conditioning noise or None (drawn).

        Returns {"images": [x_i [B, 3, s_i, s_i] in [-1, 1]], "mu", "logvar" [B, cond_dim], "c" [B, cond_dim],
        and with return_attn "attn": [beta_i [B, T, s_{i-1}^2] for i >= 1] (empty list without attention)}.
        """
        c, mu, logvar = self.ca(e_bar, eps)
        h = self.f0(z, c)  # h_0 [B, gf, s_0, s_0]
        images, attn = [self.to_img[0](h)], []
        for i, stage in enumerate(self.f, start=1):
            h, beta = stage(h, c, e, mask, return_attn=return_attn)  # h_i [B, gf, s_i, s_i]
            images.append(self.to_img[i](h))
            if beta is not None:
                attn.append(beta)
        out = {"images": images, "mu": mu, "logvar": logvar, "c": c}
        if return_attn:
            out["attn"] = attn
        return out


# -- discriminators ---------------------------------------------------------------------------------
class StageDiscriminator(nn.Module):
    """One stage's D: image [B, 3, s, s] -> code [B, 8df, 4, 4] -> unconditional and conditional logits [B].

    The conditional head joins the code with the sentence feature e_bar tiled to 4x4 (AttnGAN's D_GET_LOGITS).
    """

    def __init__(self, size, df_dim, text_dim):
        super().__init__()
        n_down = int(math.log2(size // 4))
        layers, cin = [], 3
        for k in range(n_down):
            cout = df_dim * 2 ** min(k, 3)
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1, bias=False))
            if k > 0:  # no BN on the first layer, as DCGAN/AttnGAN
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = cout
        code = 8 * df_dim
        layers += [nn.Conv2d(cin, code, 3, 1, 1, bias=False), nn.BatchNorm2d(code), nn.LeakyReLU(0.2, inplace=True)]
        self.encode = nn.Sequential(*layers)
        self.uncond = nn.Conv2d(code, 1, 4, 4)
        self.joint = nn.Sequential(nn.Conv2d(code + text_dim, code, 3, 1, 1, bias=False), nn.BatchNorm2d(code),
                                   nn.LeakyReLU(0.2, inplace=True))
        self.cond = nn.Conv2d(code, 1, 4, 4)

    def forward(self, x):
        """x [B, 3, s, s] -> image code [B, 8df, 4, 4]."""
        return self.encode(x)

    def logits(self, code, e_bar=None):
        """Unconditional logit [B] (e_bar None) or conditional logit [B] of code with sentence e_bar [B, text_dim]."""
        if e_bar is None:
            return self.uncond(code).view(-1)
        tiled = e_bar[:, :, None, None].expand(-1, -1, code.shape[2], code.shape[3]).to(code.dtype)
        return self.cond(self.joint(torch.cat([code, tiled], dim=1))).view(-1)


def build_discriminators(config):
    """One independent StageDiscriminator per stage of `config` (GeneratorConfig or dict), as an nn.ModuleList."""
    if isinstance(config, dict):
        config = GeneratorConfig.from_dict(config)
    return nn.ModuleList([StageDiscriminator(s, config.df_dim, config.text_dim) for s in config.sizes])


def init_weights(module):
    """AttnGAN's init: orthogonal conv/linear weights, BN weight ~ N(1, 0.02), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, 1.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module
