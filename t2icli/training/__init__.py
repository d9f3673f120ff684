"""Training: one loop (loop.py), one config class per trainer (config.py), and the trainers (damsm, attngan +
stackgan2, stackgan, gancls). `train(kind, **fields)` is the one entry point from Python."""

__all__ = ["train"]

_MODULES = {"damsm": "damsm", "attngan": "attngan", "stackgan2": "attngan", "stackgan": "stackgan", "gancls": "gancls"}


def train(kind, resume=None, progress=True, **fields):
    """Train `kind` ("damsm", "attngan", "stackgan2", "stackgan" or "gancls") with the config fields given (the
    names of the `t2i train KIND` flags: data=, out=, damsm=, steps=, ...; see training/config.py), as the command
    line does. resume: None, "latest" or a checkpoint / run folder. Returns the trainer's result dict."""
    from importlib import import_module

    from t2icli.errors import ConfigError
    from t2icli.training.config import CONFIGS

    if kind not in CONFIGS:
        raise ConfigError(f"unknown trainer {kind!r}; choose from {', '.join(CONFIGS)}")
    cfg = CONFIGS[kind](**fields)
    return import_module(f"t2icli.training.{_MODULES[kind]}").train(cfg, resume=resume, progress=progress)
