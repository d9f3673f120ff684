"""Helpers shared by the Click commands: turning library errors into clean CLI errors, device choice."""

import contextlib

import click


@contextlib.contextmanager
def user_errors(*extra_types):
    """Turn the library's user-error exceptions into click.ClickException (message, exit 1).

    OSError (a full disk, a read-only or vanished folder) is the environment's fault, not a bug: it is
    reported as "PATH: reason (errno N)" without a traceback, and exits 1 like the others.
    """
    from t2icli.data.format import DataError

    types = (DataError,) + tuple(extra_types)
    try:
        yield
    except types as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        why = exc.strerror or str(exc)
        code = f" (errno {exc.errno})" if exc.errno else ""
        raise click.ClickException(f"{where}{why}{code}") from None


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
