"""What the four GAN trainers' commands share: their common options, the preset rule, and the result report."""

import os

import click

from t2icli.cli.common import err, resolve_device

__all__ = ["check_resume", "options", "apply_preset", "prepare", "call_trainer", "report"]


def check_resume(ctx, param, value):
    """--resume: 'latest' or an existing checkpoint file / run folder."""
    if value is None or value == "latest" or os.path.exists(value):
        return value
    raise click.BadParameter(f"{value!r} is neither 'latest' nor an existing checkpoint file or run folder")


def options(*, damsm_help, batch_default, batch_help, gf_default, gf_help, df_default, df_help, compile_help,
            preset_names, preset_help):
    """Decorator adding the options every GAN trainer has (the texts that differ are arguments)."""
    opts = [
        click.option("--data", required=True, metavar="DIR", type=click.Path(exists=True, file_okay=False),
                     help="Prepared dataset folder (from `t2i prep`)."),
        click.option("--damsm", required=True, metavar="RUN", type=click.Path(exists=True), help=damsm_help),
        click.option("--out", required=True, metavar="RUN", type=click.Path(file_okay=False),
                     help="Run folder to create (or to continue with --resume latest)."),
        click.option("--preset", default=None, type=click.Choice(preset_names),
                     help="A named configuration; options given explicitly override it. " + preset_help),
        click.option("--max-minutes", default=None, metavar="MIN", type=click.FloatRange(min=0, min_open=True),
                     help="Stop training after this many minutes (this invocation), then evaluate and export."),
        click.option("--batch-size", default=batch_default, show_default=True, metavar="B",
                     type=click.IntRange(min=2), help=batch_help),
        click.option("--lr-g", default=2e-4, show_default=True, metavar="LR", type=click.FloatRange(min=0, min_open=True),
                     help="Generator Adam learning rate (betas 0.5, 0.999)."),
        click.option("--lr-d", default=2e-4, show_default=True, metavar="LR", type=click.FloatRange(min=0, min_open=True),
                     help="Discriminator Adam learning rate (betas 0.5, 0.999)."),
        click.option("--gf-dim", default=gf_default, show_default=True, metavar="C", type=click.IntRange(min=1),
                     help=gf_help),
        click.option("--df-dim", default=df_default, show_default=True, metavar="C", type=click.IntRange(min=1),
                     help=df_help),
        click.option("--z-dim", default=100, show_default=True, metavar="N", type=click.IntRange(min=1),
                     help="Noise dimension."),
        click.option("--ema/--no-ema", default=True, show_default=True,
                     help="Keep an EMA copy of G and export it (else the raw G is exported)."),
        click.option("--ema-beta", default=0.999, show_default=True, metavar="BETA",
                     type=click.FloatRange(0, 1, max_open=True), help="EMA decay per step."),
        click.option("--snapshot-every", default=1000, show_default=True, metavar="STEPS", type=click.IntRange(min=1),
                     help="Write fakes<step>.png (fixed noise and prompts, every stage) and a quick generated-image "
                          "R-precision every this many steps (and at step 0)."),
        click.option("--prompt", "prompts", multiple=True, metavar="TEXT",
                     help="A caption drawn (with fixed noise) in every snapshot grid, besides the first test "
                          "captions; repeat for more."),
        click.option("--checkpoint-every", default=None, metavar="STEPS", type=click.IntRange(min=1),
                     help="Write a full-state checkpoint every this many steps.  [default: --snapshot-every]"),
        click.option("--device", default="auto", show_default=True, metavar="DEV",
                     help="auto (cuda if available, else cpu), cpu, cuda, cuda:1, ..."),
        click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "bf16"]),
                     help="bf16: autocast the forward passes on CUDA (losses stay fp32); ignored on CPU."),
        click.option("--compile", "compile", is_flag=True, default=False, help=compile_help),
        click.option("--threads", default=0, show_default=True, metavar="N", type=click.IntRange(min=0),
                     help="CPU threads for torch (0 = torch's default, one per core). 1 is faster on a busy machine."),
        click.option("--keep", "keep_checkpoints", default=3, show_default=True, metavar="K",
                     type=click.IntRange(min=1), help="Keep the latest K checkpoints in RUN/checkpoints."),
        click.option("--seed", default=0, show_default=True, metavar="INT", type=click.IntRange(min=0),
                     help="Random seed (initialisation, data order, noise)."),
        click.option("--resume", default=None, metavar="latest|PATH", callback=check_resume,
                     help="Continue a run: 'latest' = newest checkpoint in --out, or a checkpoint file / run folder."),
        click.option("--workers", default=0, show_default=True, metavar="N", type=click.IntRange(min=0),
                     help="Data-loading processes (0 = in the training process; best on a 2-core CPU)."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Show the progress bar on stderr."),
    ]

    def deco(fn):
        for opt in reversed(opts):  # decorators apply bottom-up: keep the listed order in --help
            fn = opt(fn)
        return fn

    return deco


def apply_preset(ctx, kwargs, presets, skip=()):
    """Fill kwargs from presets[kwargs.pop("preset")] where the user gave no explicit value. Returns the preset name.

    A preset's "steps" is not applied when the user chose --epochs; names in `skip` are never applied."""
    from click.core import ParameterSource

    preset = kwargs.pop("preset")
    if kwargs.get("steps") is not None and kwargs.get("epochs") is not None:
        raise click.UsageError("give --steps or --epochs, not both")
    if preset is None:
        return None
    explicit = {name for name in kwargs if ctx.get_parameter_source(name) not in
                (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)}
    for name, value in presets[preset].items():
        if name in kwargs and name not in explicit and name not in skip:
            if name == "steps" and "epochs" in explicit:
                continue
            kwargs[name] = value
    return preset


def prepare(kwargs):
    """Cheap checks and plumbing before the trainer: the data folder, the device, workers, threads, prompts."""
    from t2icli.data import load_meta

    load_meta(kwargs["data"])  # a clear error before anything heavy
    kwargs["device"] = resolve_device(kwargs["device"])
    kwargs["num_workers"] = kwargs.pop("workers")
    kwargs["prompts"] = list(kwargs["prompts"])
    threads = kwargs.pop("threads")
    if threads:
        import torch

        torch.set_num_threads(threads)


def call_trainer(train, **kwargs):
    """Run a trainer, turning its user-facing errors into clean CLI errors."""

    return train(**kwargs)


def report(result, none_reason):
    """Progress summary on stderr, the generated-image R-precision on stdout (rank 0 only under torchrun)."""
    if not result["is_main"]:
        return
    ips = result["images_per_s"]
    err(f"trained {result['step']} steps ({result['stop']}) in {result['train_seconds']:.0f} s"
        + (f", {ips:.1f} img/s" if ips else "") + f", {result['seconds']:.0f} s in all; export {result['export']}; "
        f"grid {result['snapshot']}")
    rp = result["rprecision"]
    if rp is None:
        click.echo(f"R-precision: n/a ({none_reason})")
    else:
        click.echo(f"R-precision (generated images, {rp['n']} test captions, 1 true + {rp['n_negatives']} other-class "
                   f"captions, {len(rp['runs'])} runs): {rp['mean']:.4f} ± {rp['std']:.4f}")
