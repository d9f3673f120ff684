"""`t2i env`: versions, devices and the active kernel backend."""

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def env(as_json):
    """Print versions (python, torch, CUDA, t2icli), devices, and which kernel backend is active.

    \b
    Example:
      t2i env
      t2i env --json
    """
    import json
    import platform

    import torch

    import t2icli

    info = {
        "t2icli": t2icli.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "devices": ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())],
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        from t2icli.ops import backend_info

        info["kernels"] = backend_info()
    except Exception as exc:  # report, never crash `env`
        info["kernels"] = {"backend": "unavailable", "reason": f"{type(exc).__name__}: {exc}"}
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
        return
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = "; ".join(value)
        click.echo(f"{key:15s} {value}")
