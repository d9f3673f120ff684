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
