"""`t2i env`: versions, devices, the active kernel backend and the kernels' self-check on every device."""

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def env(as_json):
    """Print versions (python, torch, CUDA, t2icli), devices, whether the CPU computes bf16 natively (then
    `--precision bf16` trains in bf16 on it), the malloc in use (with tcmalloc, LD_PRELOAD, CPU training runs
    1.1-1.2x faster: the line says how when the system has it), which kernel backend is active, and the
    self-check of the compiled kernels against the reference on every device (float32, forward and backward;
    a kernel that fails it is replaced by the reference in the process that found it: see T2I_OPS_SELFCHECK).

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
    from t2icli.training.distributed import allocator, cpu_bf16, tcmalloc_library

    info["cpu_bf16"] = cpu_bf16()  # --precision bf16 runs on this CPU (native AVX512-BF16 / AMX) or is ignored
    info["allocator"] = allocator()
    lib = tcmalloc_library() if info["allocator"] == "system" else None
    if lib:
        info["allocator_hint"] = f"LD_PRELOAD={lib} t2i ... trains 1.1-1.2x faster on CPU (to the same bits)"
    try:
        from t2icli.ops import _selfcheck, backend_info, selfcheck

        info["kernels"] = backend_info()
        if info["kernels"]["backend"] != "ext":
            info["selfcheck"] = "not applicable (reference backend)"
        elif not _selfcheck.enabled():
            info["selfcheck"] = "skipped (T2I_OPS_SELFCHECK=0)"
        else:
            info["selfcheck"] = selfcheck()  # cpu and every CUDA device, float32
    except Exception as exc:  # report, never crash `env`
        info["kernels"] = {"backend": "unavailable", "reason": f"{type(exc).__name__}: {exc}"}
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
        return
    for key, value in info.items():
        if key == "selfcheck" and isinstance(value, list):
            for r in value:
                click.echo(f"{key:15s} {r['op']} on {r['device']} ({r['dtype']}): {_verdict(r)}")
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = "; ".join(value)
        click.echo(f"{key:15s} {value}")


def _verdict(r):
    """One self-check record as words: 'ok (max error 3.9e-07, 12 ms)' or 'FAILED (...): ...'."""
    if r["ok"]:
        return f"ok (max error {r['error']:.1e}, {r['ms']:.0f} ms)"
    why = (r["exception"] or (f"NaN/inf in {r['nonfinite']}" if r["nonfinite"] else
                              f"{r['worst']} max error {r['error']:.1e} > {r['tolerance']:.0e}"))
    return f"FAILED ({why}): this process uses the reference for it"
