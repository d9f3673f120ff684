"""The DAMSM pair (text encoder + image encoder) and its config; its export (RUN/damsm.pt) is models/export.py's."""

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2icli.models.config import ConfigDict
from t2icli.models.image_encoder import InceptionImageEncoder, SmallImageEncoder
from t2icli.models.text_encoder import TextEncoder

__all__ = ["DAMSMConfig", "DAMSM", "build_damsm", "IMAGE_ENCODERS", "RegionWordPredictor"]

IMAGE_ENCODERS = ("small", "inception_v3")


@dataclasses.dataclass
class DAMSMConfig(ConfigDict):
    """Everything needed to rebuild the two encoders (and the DAMSM loss constants they were trained with)."""

    _what = "DAMSM config"

    vocab_size: int
    word_limit: int = 18
    image_size: int = 64
    image_encoder: str = "small"  # "small" | "inception_v3"
    embedding_dim: int = 300
    hidden: int = 128  # per LSTM direction; D = 2 * hidden
    dropout: float = 0.5
    small_width: int = 16  # first-stage channels of the small CNN (x2 per stage)
    small_grid: int = 8
    small_pool: str = "avg"  # "avg" | "avgmax" (the trainer's default; "avg" reads exports made before it existed)
    gamma1: float = 4.0
    gamma2: float = 5.0
    gamma3: float = 10.0

    @property
    def dim(self):
        """D, the shared feature size of words, sentences, regions and images."""
        return 2 * self.hidden


class DAMSM(nn.Module):
    """The two DAMSM encoders side by side: `encode_text` and `encode_images`."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.text_encoder = TextEncoder(config.vocab_size, config.embedding_dim, config.hidden, config.dropout)
        if config.image_encoder == "small":
            self.image_encoder = SmallImageEncoder(config.dim, config.image_size, config.small_grid, config.small_width,
                                                   pool=config.small_pool)
        elif config.image_encoder == "inception_v3":
            self.image_encoder = InceptionImageEncoder(config.dim)
        else:
            raise ValueError(f"unknown image encoder {config.image_encoder!r}; choose from {IMAGE_ENCODERS}")

    def encode_text(self, tokens, lengths):
        """tokens [B, T], lengths [B] -> (e [B, D, T] words, e_bar [B, D] sentence)."""
        return self.text_encoder(tokens, lengths)

    def encode_images(self, images):
        """images [B, 3, S, S] in [-1, 1] -> (f [B, D, H', W'] regions, f_bar [B, D] global)."""
        return self.image_encoder(images)


def build_damsm(config):
    """A freshly initialised DAMSM (both encoders) for `config` (DAMSMConfig or dict)."""
    if isinstance(config, dict):
        config = DAMSMConfig.from_dict(config)
    return DAMSM(config)


class RegionWordPredictor(nn.Module):
    """Names each caption word from the image's regions and the word's neighbours, never the word itself.

    A training-only head of `t2i train damsm --word-prediction W` (not in AttnGAN, not exported): the masked-word
    task of vision-language pretraining (VisualBERT, Li et al. 2019) on the DAMSM's own region features. For word t
    the neighbours' tokens t-c..t+c (t excluded; `context` c) are embedded and concatenated; that vector asks the
    regions (dot-product attention, its own, not the DAMSM's), and a small MLP reads the answer and the neighbours
    into vocabulary logits. "a red bird with blue wings and a green ___" is only answered by looking at the
    beak: the loss asks the image encoder to keep every part's colour in its regions, which the contrastive DAMSM
    loss does not (other birds' captions differ in the body and wing colours).
    """

    def __init__(self, vocab_size, dim, context=2, embedding=64, hidden=256):
        super().__init__()
        self.vocab_size, self.context = int(vocab_size), int(context)
        width = 2 * self.context * int(embedding)
        self.embedding = nn.Embedding(self.vocab_size + 1, int(embedding))  # index vocab_size: outside the caption
        self.query = nn.Linear(width, int(dim))
        self.out = nn.Sequential(nn.Linear(int(dim) + width, int(hidden)), nn.ReLU(inplace=True),
                                 nn.Linear(int(hidden), self.vocab_size))

    def forward(self, f, tokens, inside):
        """f [B, D, H, W] (or [B, D, N]) regions; tokens [B, T]; inside: bool [B, T], True inside each caption
        (losses.inside_captions) -> logits [B, T, V] (rows outside are meaningless: the loss masks them)."""
        B, T = tokens.shape
        v = f.reshape(f.shape[0], f.shape[1], -1)  # [B, D, N]
        c = self.context
        tok = F.pad(tokens.masked_fill(~inside, self.vocab_size), (c, c), value=self.vocab_size)  # [B, T + 2c]
        ctx = torch.cat([self.embedding(tok[:, c + o:c + o + T]) for o in range(-c, c + 1) if o], 2)  # [B, T, 2cE]
        q = self.query(ctx)  # [B, T, D]
        a = torch.softmax(torch.bmm(q, v) / v.shape[1] ** 0.5, dim=2)  # [B, T, N] over regions
        answer = torch.bmm(a, v.transpose(1, 2))  # [B, T, D]
        return self.out(torch.cat([answer, ctx], 2))  # [B, T, V]
