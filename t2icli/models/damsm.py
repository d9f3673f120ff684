"""The DAMSM pair (text encoder + image encoder) and its config; its export (RUN/damsm.pt) is models/export.py's."""

import dataclasses

import torch.nn as nn

from t2icli.models.config import ConfigDict
from t2icli.models.image_encoder import InceptionImageEncoder, SmallImageEncoder
from t2icli.models.text_encoder import TextEncoder

__all__ = ["DAMSMConfig", "DAMSM", "build_damsm", "IMAGE_ENCODERS"]

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
