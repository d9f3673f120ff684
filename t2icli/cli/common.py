"""Helpers shared by the Click commands: device choice, progress lines on stderr."""

import click


def resolve_device(device):
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else is validated by torch."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise click.BadParameter(f"{device!r}: {exc}", param_hint="--device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("cuda requested but no CUDA device is available", param_hint="--device")
    return str(dev)


def err(message):
    """Print a progress/log line on stderr (stdout is for results)."""
    click.echo(message, err=True)


def model_or_pretrained(model_run, command):
    """(path, pretrained): --model RUN when given, else the shipped pretrained toybirds model (t2icli.pretrained),
    named on stderr. A UsageError naming --model when neither exists (before anything is loaded)."""
    if model_run is not None:
        return model_run, False
    from t2icli.pretrained import DEFAULT, ROOT, shipped_model

    path = shipped_model()
    if path is None:
        raise click.UsageError(f"no --model given, and this t2i has no shipped pretrained {DEFAULT} model "
                               f"({ROOT}/{DEFAULT}/generator.pt): pass --model RUN (a run folder of "
                               "`t2i train attngan|stackgan2|stackgan|gancls`)")
    err(f"t2i {command}: no --model given; using the shipped pretrained {DEFAULT} model {path}")
    return path, True
