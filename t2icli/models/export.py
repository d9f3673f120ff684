"""Write, read and load the inference exports of every kind: the DAMSM pair and the generators of every GAN.

Each export is one file of tensors, numbers, strings, lists and dicts, loadable with
`torch.load(weights_only=True)` (no pickled code), written atomically (t2icli.fileio), and enough to rebuild its
networks with no training code:

  RUN/damsm.pt      {"format": "t2i-damsm", "version": 1, "config": DAMSMConfig dict, "vocab": [str],
                     "text_encoder": state dict, "image_encoder": state dict}
  RUN/generator.pt  {"format": "t2i-generator", "version": 1, "kind": "attngan" | "stackgan2" | "stackgan" |
                     "gancls", "config": the generator's config dict, "vocab": [str], "generator": state dict (the
                     EMA generator when kept), "text_encoder": state dict of the frozen DAMSM text encoder,
                     "damsm_config": its DAMSMConfig dict, "damsm_run": path, "extra": {data, step, ...},
                     "text_source": "damsm" | "char-cnn-rnn" (what conditioned G), "style_encoder": state dict or
                     None (GAN-INT-CLS trained with --train-style-encoder)}

A path argument is the file or the run folder holding it.
"""

import os

import torch

from t2icli.errors import T2IError
from t2icli.fileio import atomic_torch_save

__all__ = ["ExportError", "DAMSM_FILE", "GENERATOR_FILE", "GENERATOR_KINDS", "TEXT_SOURCES", "state_dict_cpu",
           "save_damsm", "read_damsm", "load_damsm", "save_generator", "read_generator", "load_text_encoder",
           "load_generator"]

DAMSM_FILE, GENERATOR_FILE = "damsm.pt", "generator.pt"
_DAMSM_FORMAT, _GENERATOR_FORMAT, _VERSION = "t2i-damsm", "t2i-generator", 1
GENERATOR_KINDS = ("attngan", "stackgan2", "stackgan", "gancls")
TEXT_SOURCES = ("damsm", "char-cnn-rnn")


class ExportError(T2IError):
    """An export that is missing, unreadable or not of the expected kind (the message names the path)."""


def state_dict_cpu(module):
    """module's state dict as detached CPU tensors (what an export stores)."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _file(path, name):
    path = os.fspath(path)
    return os.path.join(path, name) if os.path.isdir(path) else path


def _read(path, name, fmt, what, hint):
    """The checked export dict of `path` (file or run folder). Raises ExportError naming the path."""
    file = _file(path, name)
    if not os.path.isfile(file):
        raise ExportError(f"{os.fspath(path)}: no {what} export ({name}); {hint}")
    try:
        blob = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ExportError(f"{file}: unreadable {what} export ({exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise ExportError(f"{file}: not a t2i {what} export")
    if blob.get("version") != _VERSION:
        raise ExportError(f"{file}: {what} export version {blob.get('version')}, this t2i reads {_VERSION}")
    return blob


# -- DAMSM ----------------------------------------------------------------------------------------------
def save_damsm(path, text_encoder, image_encoder, config, vocab):
    """Write the DAMSM export (config: DAMSMConfig or its dict). Returns the file's path."""
    path = _file(path, DAMSM_FILE)
    blob = {"format": _DAMSM_FORMAT, "version": _VERSION,
            "config": config.to_dict() if hasattr(config, "to_dict") else dict(config), "vocab": list(vocab),
            "text_encoder": state_dict_cpu(text_encoder), "image_encoder": state_dict_cpu(image_encoder)}
    atomic_torch_save(blob, path)
    return path


def read_damsm(path):
    """The raw dict of a DAMSM export ("config", "vocab", both state dicts). Raises ExportError naming the path."""
    return _read(path, DAMSM_FILE, _DAMSM_FORMAT, "DAMSM", "train one with `t2i train damsm`")


def load_damsm(path, device="cpu"):
    """Rebuild a DAMSM export: (text_encoder, image_encoder, DAMSMConfig, vocab: [str]) on `device`, eval mode,
    gradients off. Raises ExportError naming the path."""
    from t2icli.models.damsm import DAMSM, DAMSMConfig

    blob = read_damsm(path)
    config = DAMSMConfig.from_dict(blob["config"])
    model = DAMSM(config)
    model.text_encoder.load_state_dict(blob["text_encoder"])
    model.image_encoder.load_state_dict(blob["image_encoder"])
    model.to(device).eval().requires_grad_(False)
    return model.text_encoder, model.image_encoder, config, list(blob["vocab"])


# -- generators -----------------------------------------------------------------------------------------
def save_generator(path, kind, generator, text_encoder, damsm_config, vocab, damsm_run=None, extra=None,
                   text_source="damsm", style_encoder=None):
    """Write a generator export of `kind` (see the module docstring). Returns the file's path."""
    if kind not in GENERATOR_KINDS:
        raise ValueError(f"kind {kind!r}: choose from {GENERATOR_KINDS}")
    if text_source not in TEXT_SOURCES:
        raise ValueError(f"text_source {text_source!r}: choose from {TEXT_SOURCES}")
    path = _file(path, GENERATOR_FILE)
    blob = {
        "format": _GENERATOR_FORMAT, "version": _VERSION, "kind": kind, "config": generator.config.to_dict(),
        "vocab": list(vocab), "damsm_config": damsm_config.to_dict() if hasattr(damsm_config, "to_dict")
        else dict(damsm_config), "damsm_run": None if damsm_run is None else str(damsm_run),
        "generator": state_dict_cpu(generator), "text_encoder": state_dict_cpu(text_encoder),
        "extra": dict(extra or {}), "text_source": text_source,
        "style_encoder": None if style_encoder is None else state_dict_cpu(style_encoder),
    }
    atomic_torch_save(blob, path)
    return path


def read_generator(path):
    """The raw dict of a generator export of any kind. Raises ExportError naming the path."""
    return _read(path, GENERATOR_FILE, _GENERATOR_FORMAT, "generator", "train one with `t2i train ...`")


def load_text_encoder(blob, device="cpu"):
    """The frozen text encoder stored in an export dict: (text_encoder in eval mode without gradients, DAMSMConfig)."""
    from t2icli.models.damsm import DAMSMConfig
    from t2icli.models.text_encoder import TextEncoder

    dcfg = DAMSMConfig.from_dict(blob["damsm_config"])
    text_encoder = TextEncoder(dcfg.vocab_size, dcfg.embedding_dim, dcfg.hidden, dcfg.dropout)
    text_encoder.load_state_dict(blob["text_encoder"])
    text_encoder.to(device).eval().requires_grad_(False)
    return text_encoder, dcfg


def _build_generator(kind, config, path):
    """A freshly built generator of `kind` for an export's config dict."""
    if kind in ("attngan", "stackgan2"):
        from t2icli.models.attngan import Generator, GeneratorConfig

        return Generator(GeneratorConfig.from_dict(config))
    if kind == "gancls":
        from t2icli.models.gancls import GanClsConfig, GanClsGenerator

        return GanClsGenerator(GanClsConfig.from_dict(config))
    if kind == "stackgan":
        from t2icli.models.stackgan import StackGAN, StackGANConfig

        return StackGAN(StackGANConfig.from_dict(config))
    raise ExportError(f"{path}: a generator export of unknown kind {kind!r} (from a newer t2i?)")


def load_generator(path, device="cpu", blob=None):
    """Rebuild a generator export of any kind. Returns (G, text_encoder, config: dict, vocab: [str], style_encoder
    or None) on `device`, eval mode, gradients off.

    config: the generator's config dict plus "kind", "sizes", "stages", "attention", "damsm_config", "damsm_run",
    "text_source", "style_encoder" (bool) and the export's "extra" entries. blob: the export dict when the caller
    has read it (read_generator). Raises ExportError naming the path.
    """
    blob = read_generator(path) if blob is None else blob
    kind = blob.get("kind") or "attngan"
    G = _build_generator(kind, blob["config"], path)
    G.load_state_dict(blob["generator"])
    G.to(device).eval().requires_grad_(False)
    style = None
    if blob.get("style_encoder") is not None:
        from t2icli.models.gancls import StyleEncoder

        style = StyleEncoder(G.config.image_size, G.config.df_dim, G.config.z_dim)
        style.load_state_dict(blob["style_encoder"])
        style.to(device).eval().requires_grad_(False)
    text_encoder, dcfg = load_text_encoder(blob, device)
    cfg = G.config.to_dict()
    config = dict(cfg, kind=kind, sizes=list(G.config.sizes), stages=int(G.config.stages),
                  attention=bool(getattr(G.config, "attention", False)), damsm_config=dcfg.to_dict(),
                  damsm_run=blob.get("damsm_run"), text_source=blob.get("text_source", "damsm"),
                  style_encoder=style is not None,
                  **{k: v for k, v in blob.get("extra", {}).items() if k not in cfg})
    return G, text_encoder, config, list(blob["vocab"]), style
