"""The multi-stage text-to-image GAN of AttnGAN (Xu et al. 2018) and StackGAN++ (Zhang et al. 2018): G and per-stage Ds.

One generator class serves both: `attention=True` is AttnGAN (stage i >= 1 attends to the words e),
`attention=False` is StackGAN++ (stage i >= 1 sees only the conditioning code c, tiled over space).

    c, mu, logvar = F_ca(e_bar)                       conditioning augmentation, c in R^cond_dim
    h_0 = F_0(z, c)                                   FC -> 4x4 -> upsampling blocks -> first stage size
    h_i = F_i(h_{i-1}, F_attn_i(e, h_{i-1}))          attention (or tiled c), R_NUM residual blocks, one x2 upsampling
    x_i = G_i(h_i) = tanh(conv3x3(h_i))               one image per stage, each twice the previous side

Widths as the reference code (docs/FIDELITY.md cites the lines): AttnGAN keeps every h_i at gf channels
(taoxugit/AttnGAN code/model.py G_NET); StackGAN++ halves them along the tree, gf -> gf/2 -> gf/4, each next
stage joining [c tiled ; h] with a 3x3 conv back to its input width (hanzhanggit/StackGAN-v2 code/model.py
NEXT_STAGE_G, G_NET). The discriminators are the references' D_NET64 / D_NET128 / D_NET256 (see
StageDiscriminator).

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
    "tiled_condition_conv3x3",
]

MIN_FIRST_SIZE = 16
LAYOUTS = ("reference", "legacy")


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
    gf_dim: int = 32  # channels of h_0 (AttnGAN: of every h_i); F_0's 4x4 block has 16x that
    df_dim: int = 64
    z_dim: int = 100
    cond_dim: int = 100  # c of conditioning augmentation
    text_dim: int = 256  # D of the DAMSM words e and sentence e_bar
    attention: bool = True  # AttnGAN; False = StackGAN++
    res_blocks: int = 2  # the reference's GAN.R_NUM: residual blocks per next stage (2 for CUB, 3 for COCO)
    # "reference": the widths of the reference code (see the module docstring). "legacy": StackGAN++ as t2i built
    # it before it matched StackGAN-v2 (every h_i at gf, joint conv to 2gf); only exports made then carry it.
    layout: str = "reference"
    # False: StackGAN++'s unconditional mode (StackGAN-v2 cfg GAN.B_CONDITION False): no text, no conditioning
    # augmentation; z alone starts the tree and stands in for c at every next stage, the Ds judge images only.
    conditional: bool = True

    _predates = {"layout": "legacy"}  # an export without "layout" predates the field

    @property
    def sizes(self):
        """Side of every stage's image, e.g. [16, 32, 64]."""
        return stage_sizes(self.image_size, self.stages)

    @property
    def widths(self):
        """Channels of every h_i: [gf] * stages (AttnGAN, legacy) or [gf, gf/2, gf/4] (StackGAN++)."""
        halve = not self.attention and self.layout == "reference"
        return [int(self.gf_dim) >> i if halve else int(self.gf_dim) for i in range(int(self.stages))]

    def validate(self):
        """Raise ModelConfigError for an impossible configuration."""
        check_stages(self.image_size, self.stages)
        self.check_positive("gf_dim", "df_dim", "z_dim", "cond_dim", "text_dim")
        if self.layout not in LAYOUTS:
            raise ModelConfigError(f"generator layout {self.layout!r}: choose from {LAYOUTS}")
        if int(self.res_blocks) < 0:
            raise ModelConfigError(f"res_blocks (R_NUM) must be >= 0, got {self.res_blocks}")
        if not self.conditional and self.attention:
            raise ModelConfigError("an unconditional generator has no words to attend to: it is StackGAN++ only "
                                       "(attention False)")
        halve = not self.attention and self.layout == "reference"
        if halve and int(self.gf_dim) % (1 << (int(self.stages) - 1)):
            raise ModelConfigError(f"gf_dim {self.gf_dim}: StackGAN++ halves it at each of its {self.stages} "
                                       f"stages, so it must be a multiple of {1 << (int(self.stages) - 1)}")
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
    """Conditioning augmentation F_ca: e_bar [B, text_dim] -> FC -> act -> (mu, logvar); c = mu + sigma * eps.

    act="glu": FC to 4 cond_dim, GLU (AttnGAN, StackGAN++ CA_NET). act="relu": FC to 2 cond_dim, ReLU (StackGAN v1,
    hanzhanggit/StackGAN-Pytorch code/model.py CA_NET; its logvar is >= 0, so sigma >= 1: the reference's own choice).
    """

    def __init__(self, text_dim, cond_dim, act="glu"):
        super().__init__()
        if act not in ("glu", "relu"):
            raise ValueError(f"conditioning augmentation act must be 'glu' or 'relu', got {act!r}")
        self.cond_dim, self.act = int(cond_dim), act
        self.fc = nn.Linear(text_dim, (4 if act == "glu" else 2) * self.cond_dim)  # GLU halves it to [mu | logvar]

    def forward(self, e_bar, eps=None):
        """e_bar [B, text_dim]; eps [B, cond_dim] or None (drawn from the global RNG). Returns (c, mu, logvar)."""
        x = self.fc(e_bar)
        x = F.glu(x, dim=1) if self.act == "glu" else F.relu(x)  # [B, 2 * cond_dim]
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
    """F_i (i >= 1): joins h_{i-1} with word context (attention) or the tiled code c, residual blocks, x2 up.

    h [B, gf, s, s] -> h' [B, out_dim, 2s, 2s] (out_dim defaults to gf); also returns beta [B, T, s*s] (attention)
    or None. Widths by kind:
      attention (AttnGAN NEXT_STAGE_G):   [h ; ctx] 2gf -> R_NUM ResBlock(2gf) -> up to out_dim
      joint="reference" (StackGAN-v2):   [c ; h] -> 3x3 conv + GLU to gf -> R_NUM ResBlock(gf) -> up to out_dim
      joint="legacy" (t2i before):       [h ; c] -> 3x3 conv + GLU to 2gf -> R_NUM ResBlock(2gf) -> up to out_dim
    """

    def __init__(self, gf_dim, text_dim, cond_dim, attention=True, res_blocks=2, out_dim=None, joint="reference"):
        super().__init__()
        self.attention = bool(attention)
        out_dim = int(out_dim or gf_dim)
        if self.attention:
            self.proj = nn.Conv2d(text_dim, gf_dim, 1, bias=False)  # words -> image channels (AttnGAN's conv1x1)
            self.joint = nn.Identity()
            width = 2 * gf_dim
        else:  # StackGAN++: concat tiled c, then a 3x3 conv (GLU halves its 2 * width outputs)
            self.proj = None
            width = gf_dim if joint == "reference" else 2 * gf_dim
            self.joint = nn.Sequential(_conv3x3(gf_dim + cond_dim, 2 * width), nn.BatchNorm2d(2 * width),
                                       nn.GLU(dim=1))
        self.c_first = not self.attention and joint == "reference"  # StackGAN-v2 concatenates (c, h)
        self.res = nn.Sequential(*[ResBlock(width) for _ in range(res_blocks)])
        self.up = UpBlock(width, out_dim)

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
            tiled = c[:, :, None, None].expand(-1, -1, s, s).to(h.dtype)  # [B, cond_dim, s, s]
            x = self.joint(torch.cat([tiled, h] if self.c_first else [h, tiled], dim=1))  # [B, width, s, s]
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
        w = cfg.widths  # channels of every h_i
        # Unconditional StackGAN++ (StackGAN-v2 code/model.py:140-143, 184-187, 260-264): no CA, F_0 sees z alone
        # and the next stages join z tiled where c would be.
        self.ca = CondAugment(cfg.text_dim, cfg.cond_dim) if cfg.conditional else None
        c_dim = cfg.cond_dim if cfg.conditional else cfg.z_dim
        self.f0 = InitStage(cfg.z_dim, cfg.cond_dim if cfg.conditional else 0, cfg.gf_dim, sizes[0])
        self.f = nn.ModuleList([NextStage(w[i - 1], cfg.text_dim, c_dim, cfg.attention, cfg.res_blocks,
                                          out_dim=w[i], joint=cfg.layout) for i in range(1, len(sizes))])
        self.to_img = nn.ModuleList([nn.Sequential(_conv3x3(w[i], 3), nn.Tanh()) for i in range(len(sizes))])  # G_i

    def forward(self, z, e_bar, e, mask, eps=None, return_attn=False):
        """z [B, z_dim] ~ N(0, I); e_bar [B, text_dim] sentence; e [B, text_dim, T] words; mask [B, T] True = pad;
        eps [B, cond_dim] conditioning noise or None (drawn).

        Returns {"images": [x_i [B, 3, s_i, s_i] in [-1, 1]], "mu", "logvar" [B, cond_dim], "c" [B, cond_dim],
        and with return_attn "attn": [beta_i [B, T, s_{i-1}^2] for i >= 1] (empty list without attention)}.
        An unconditional generator ignores e_bar, e, mask and eps; its mu and logvar are None and c is z.
        """
        if self.ca is None:
            c, mu, logvar = z, None, None  # StackGAN-v2 G_NET.forward: c_code = z_code
            h = self.f0(z, z[:, :0])  # h_0 from z alone
        else:
            c, mu, logvar = self.ca(e_bar, eps)
            h = self.f0(z, c)  # h_0 [B, gf, s_0, s_0]
        images, attn = [self.to_img[0](h)], []
        for i, stage in enumerate(self.f, start=1):
            h, beta = stage(h, c, e, mask, return_attn=return_attn)  # h_i [B, widths[i], s_i, s_i]
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

    The image path is the reference's D_NET64 / D_NET128 / D_NET256 (taoxugit/AttnGAN code/model.py; the same
    in hanzhanggit/StackGAN-v2 code/model.py and StackGAN-Pytorch's STAGE1_D / STAGE2_D): stride-2 4x4 convs
    double the width from df (no BN on the first) down to 4x4, ending at df * 2^(n - 1) for n = log2(s / 4)
    downsamplings (8df at 64 px, 16df at 128, 32df at 256); then 3x3 conv blocks halve it back to the code's
    8df, one per doubling beyond 8df (none at 64 px, 16->8 at 128, 32->16->8 at 256). Below 64 px (toybirds'
    first stages) the widths never reach 8df, and one 3x3 block raises them to 8df: the heads see the same
    8df code at every size (the generalisation t2i has always used for small stages).

    Heads (AttnGAN's D_GET_LOGITS): unconditional conv4x4(code) (none with uncond=False, as StackGAN's
    Stage-I D); conditional: [code ; condition tiled 4x4] -> 3x3 conv to 8df + BN + LeakyReLU -> conv4x4
    (none with cond=False, as StackGAN++'s unconditional mode).
    `cond_dim` is the condition's size: the sentence feature e_bar (AttnGAN, text_dim) or the CA mean mu
    (StackGAN, StackGAN++: cond_dim).
    """

    def __init__(self, size, df_dim, cond_dim, uncond=True, cond=True):
        super().__init__()
        if not (uncond or cond):
            raise ValueError("a discriminator needs a conditional or an unconditional head")
        n_down = int(math.log2(size // 4))
        layers, cin = [], 3
        for k in range(n_down):
            cout = df_dim * 2 ** k  # uncapped, as the references: 16df at 128 px, 32df at 256 px
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1, bias=False))
            if k > 0:  # no BN on the first layer, as DCGAN/AttnGAN
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = cout
        code = 8 * df_dim
        if cin < code:  # below 64 px: one block up to the code width
            layers += _block3x3_leaky(cin, code)
            cin = code
        while cin > code:  # Block3x3_leakRelu 32df -> 16df -> 8df (img_code_s64_1, img_code_s64_2)
            layers += _block3x3_leaky(cin, cin // 2)
            cin //= 2
        self.encode = nn.Sequential(*layers)
        self.uncond = nn.Conv2d(code, 1, 4, 4) if uncond else None
        self.joint = nn.Sequential(*_block3x3_leaky(code + cond_dim, code)) if cond else None
        self.cond = nn.Conv2d(code, 1, 4, 4) if cond else None

    def forward(self, x):
        """x [B, 3, s, s] -> image code [B, 8df, 4, 4]."""
        return self.encode(x)

    def logits(self, code, e_bar=None):
        """Unconditional logit [B] (e_bar None) or conditional logit [B] of code with the condition e_bar
        [B, cond_dim] (sentence feature or CA mean). e_bar may be a list of conditions: one logit [B] each, the
        image's share of the joint convolution computed once (D's real pairs and wrong pairs share their code).
        Raises ValueError for e_bar None without an unconditional head."""
        if e_bar is None:
            if self.uncond is None:
                raise ValueError("this discriminator has no unconditional head (uncond=False)")
            return _map_logit(self.uncond, code)
        if self.cond is None:
            raise ValueError("this discriminator has no conditional head (cond=False)")
        conv, bn, act = self.joint
        w_code, w_cond = conv.weight.split([code.shape[1], conv.weight.shape[1] - code.shape[1]], dim=1)
        image_part = F.conv2d(code, w_code, padding=1)  # [B, 8df, 4, 4]

        def logit(e):  # [B, cond_dim] -> [B]; BN sees each condition's batch alone, as a call per condition did
            return _map_logit(self.cond, act(bn(image_part + tiled_condition_conv3x3(e, w_cond, code.shape[2:]))))

        return [logit(e) for e in e_bar] if isinstance(e_bar, (list, tuple)) else logit(e_bar)


def _map_logit(conv, x):
    """A head conv (4x4 kernel, stride 4, one output channel) on D's code x [B, C, 4, 4] -> logits [B]: one dot
    product per sample, computed as a linear layer (the same sums; oneDNN's convolution cost ~5x as much for this
    shape, and D's heads run 7 times per stage and step). Another map size fails in F.linear's shape check."""
    return F.linear(x.flatten(1), conv.weight.flatten(1), conv.bias).view(-1)  # [B]


def tiled_condition_conv3x3(cond, weight, size):
    """The condition's share of a 3x3 convolution (padding 1, no bias) of [image code ; cond tiled over H x W]:
    conv3x3(cat([x, tile(cond)]), [W_x | W_c]) = conv3x3(x, W_x) + this, without tiling cond or convolving it.

    A tiled vector is constant over space, so output position p gets sum over the taps k that fall inside the
    H x W map of W_c[:, :, k] @ cond: one [O, K] x [K] product per tap (9), then a 0/1 sum over taps per position
    (unfold of a map of ones marks which taps fall inside: the padding's zeros are the others). On D's 4x4 code the
    joint convolution of [8df code ; 256 sentence] was the largest convolution of the toybirds-pretrained step.
    cond [B, K]; weight [O, K, 3, 3]; size (H, W) -> [B, O, H, W].
    """
    H, W = size
    per_tap = torch.einsum("bk,okt->bot", cond.to(weight.dtype), weight.flatten(2))  # [B, O, 9]
    inside = F.unfold(per_tap.new_ones(1, 1, H, W), 3, padding=1)[0]  # [9, H*W]  1 where tap k of p is inside
    return (per_tap @ inside.to(per_tap.dtype)).view(cond.shape[0], weight.shape[0], H, W)


def _block3x3_leaky(cin, cout):
    """The references' Block3x3_leakRelu: 3x3 conv (no bias) -> BN -> LeakyReLU(0.2), as a list of layers."""
    return [_conv3x3(cin, cout), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]


def build_discriminators(config, condition_dim=None):
    """One independent StageDiscriminator per stage of `config` (GeneratorConfig or dict), as an nn.ModuleList.

    condition_dim: size of what the conditional heads see; default the sentence feature (text_dim), as AttnGAN.
    StackGAN++ conditions its Ds on the CA mean mu instead (StackGAN-v2 code/model.py D_NET64, efg = EMBEDDING_DIM):
    pass config.cond_dim for that. An unconditional config (StackGAN++ without text) gets Ds with the
    unconditional head only.
    """
    if isinstance(config, dict):
        config = GeneratorConfig.from_dict(config)
    dim = config.text_dim if condition_dim is None else int(condition_dim)
    return nn.ModuleList([StageDiscriminator(s, config.df_dim, dim, cond=config.conditional) for s in config.sizes])


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
