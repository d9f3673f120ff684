"""The DAMSM pair (text encoder + image encoder), its config, and the inference export every later command loads.

The export is one file, `RUN/damsm.pt`, loadable with `torch.load(weights_only=True)`:
{"format": "t2i-damsm", "version": 1, "config": dict, "vocab": [str], "text_encoder": state dict,
"image_encoder": state dict}. `load_damsm(RUN, device)` rebuilds both encoders from it alone.
"""

import dataclasses
import os

import torch
import torch.nn as nn

from t2icli.fileio import atomic_torch_save
from t2icli.models.config import ConfigDict
from t2icli.models.image_encoder import InceptionImageEncoder, SmallImageEncoder
from t2icli.models.text_encoder import TextEncoder
from t2icli.errors import T2IError

__all__ = ["DAMSMConfig", "DAMSM", "build_damsm", "save_damsm", "load_damsm", "DAMSMExportError", "EXPORT_NAME"]

EXPORT_NAME = "damsm.pt"
_FORMAT, _VERSION = "t2i-damsm", 1
IMAGE_ENCODERS = ("small", "inception_v3")


class DAMSMExportError(T2IError):
    """A DAMSM export that is missing or unreadable (the message names the path)."""


@dataclasses.dataclass
class DAMSMConfig(ConfigDict):
    """Everything needed to rebuild the two encoders (and the DAMSM loss constants they were trained with)."""

    _error = DAMSMExportError
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


def save_damsm(path, text_encoder, image_encoder, config, vocab):
    """Write the inference export atomically (tmp file + fsync + rename). `path` is a file or a run folder."""
    if os.path.isdir(path):
        path = os.path.join(path, EXPORT_NAME)
    config = config.to_dict() if isinstance(config, DAMSMConfig) else dict(config)
    blob = {
        "format": _FORMAT, "version": _VERSION, "config": config, "vocab": list(vocab),
        "text_encoder": {k: v.detach().cpu() for k, v in text_encoder.state_dict().items()},
        "image_encoder": {k: v.detach().cpu() for k, v in image_encoder.state_dict().items()},
    }
    atomic_torch_save(blob, path)
    return path


def load_damsm(path, device="cpu"):
    """Load a DAMSM export: `path` is a run folder (uses RUN/damsm.pt) or the file itself.

    Returns (text_encoder, image_encoder, config: DAMSMConfig, vocab: list[str]) on `device`, in eval
    mode, with gradients off. Raises DAMSMExportError if the file is missing or not a DAMSM export.
    """
    path = os.fspath(path)
    file = os.path.join(path, EXPORT_NAME) if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise DAMSMExportError(f"{path}: no DAMSM export ({EXPORT_NAME}); train one with `t2i train damsm`")
    try:
        blob = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report any unreadable file the same way
        raise DAMSMExportError(f"{file}: unreadable DAMSM export ({exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise DAMSMExportError(f"{file}: not a t2i DAMSM export")
    if blob.get("version") != _VERSION:
        raise DAMSMExportError(f"{file}: DAMSM export version {blob.get('version')}, this t2i reads {_VERSION}")
    config = DAMSMConfig.from_dict(blob["config"])
    model = DAMSM(config)
    model.text_encoder.load_state_dict(blob["text_encoder"])
    model.image_encoder.load_state_dict(blob["image_encoder"])
    model.to(device).eval().requires_grad_(False)
    return model.text_encoder, model.image_encoder, config, list(blob["vocab"])
