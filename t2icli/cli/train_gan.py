"""`t2i train attngan` and `t2i train stackgan2`: parse and validate options, then call t2icli.training.attngan.train."""

import os

import click

from t2icli.cli.common import err, resolve_device, user_errors

__all__ = ["attngan", "stackgan2"]

_PRESET_NAMES = ["toybirds-cpu"]  # keys of t2icli.training.attngan.PRESETS (listed here so --help imports no torch)


def _check_resume(ctx, param, value):
    if value is None or value == "latest" or os.path.exists(value):
        return value
    raise click.BadParameter(f"{value!r} is neither 'latest' nor an existing checkpoint file or run folder")


def _common_options(fn):
    """The options both multi-stage trainers share (applied bottom-up, so listed here in reverse help order)."""
    options = [
        click.option("--data", required=True, metavar="DIR", type=click.Path(exists=True, file_okay=False),
                     help="Prepared dataset folder (from `t2i prep`)."),
        click.option("--damsm", required=True, metavar="RUN", type=click.Path(exists=True),
                     help="DAMSM run folder (from `t2i train damsm` on the same --data); its text encoder is frozen."),
        click.option("--out", required=True, metavar="RUN", type=click.Path(file_okay=False),
                     help="Run folder to create (or to continue with --resume latest)."),
        click.option("--preset", default=None, type=click.Choice(_PRESET_NAMES),
                     help="A named configuration; options given explicitly override it. toybirds-cpu: 3 stages "
                          "16/32/64 px, gf-dim 8, df-dim 8, batch 16, 2500 steps, lr 5e-4, stops after 7 minutes."),
        click.option("--stages", default=3, show_default=True, metavar="S", type=click.IntRange(1, 3),
                     help="Generator stages; each doubles the side, the last equals the data's image size; the "
                          "first must be >= 16 px (64 px data: up to 3 stages, 16/32/64)."),
        click.option("--steps", default=None, metavar="N", type=click.IntRange(min=1),
                     help="Train N optimiser steps in total (counting resumed ones). Default: --epochs 600."),
        click.option("--epochs", default=None, metavar="N", type=click.IntRange(min=1),
                     help="Train N epochs (instead of --steps)."),
        click.option("--max-minutes", default=None, metavar="MIN", type=click.FloatRange(min=0, min_open=True),
                     help="Stop training after this many minutes (this invocation), then evaluate and export."),
        click.option("--batch-size", default=20, show_default=True, metavar="B", type=click.IntRange(min=2),
                     help="Global batch size: under torchrun it is split over the processes (must be divisible by "
                          "their number)."),
        click.option("--lr-g", default=2e-4, show_default=True, metavar="LR", type=click.FloatRange(min=0, min_open=True),
                     help="Generator Adam learning rate (betas 0.5, 0.999)."),
        click.option("--lr-d", default=2e-4, show_default=True, metavar="LR", type=click.FloatRange(min=0, min_open=True),
                     help="Discriminators' Adam learning rate (betas 0.5, 0.999)."),
        click.option("--gf-dim", default=32, show_default=True, metavar="C", type=click.IntRange(min=1),
                     help="Generator width: channels of every h_i (the first 4x4 block has 16x that)."),
        click.option("--df-dim", default=64, show_default=True, metavar="C", type=click.IntRange(min=1),
                     help="Discriminator width (its 4x4 code has 8x that)."),
        click.option("--z-dim", default=100, show_default=True, metavar="N", type=click.IntRange(min=1),
                     help="Noise dimension."),
        click.option("--cond-dim", default=100, show_default=True, metavar="N", type=click.IntRange(min=1),
                     help="Conditioning-augmentation code dimension."),
        click.option("--ema/--no-ema", default=True, show_default=True,
                     help="Keep an EMA copy of G and export it (else the raw G is exported)."),
        click.option("--ema-beta", default=0.999, show_default=True, metavar="BETA",
                     type=click.FloatRange(0, 1, max_open=True), help="EMA decay per step."),
        click.option("--snapshot-every", default=1000, show_default=True, metavar="STEPS", type=click.IntRange(min=1),
                     help="Write fakes<step>.png (every stage, fixed noise and prompts) and a quick generated-image "
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
        click.option("--compile", "compile", is_flag=True, default=False,
                     help="Wrap G and every D in torch.compile (slow first step; faster steps on GPU)."),
        click.option("--keep", "keep_checkpoints", default=3, show_default=True, metavar="K",
                     type=click.IntRange(min=1), help="Keep the latest K checkpoints in RUN/checkpoints."),
        click.option("--seed", default=0, show_default=True, metavar="INT", type=click.IntRange(min=0),
                     help="Random seed (initialisation, data order, noise)."),
        click.option("--resume", default=None, metavar="latest|PATH", callback=_check_resume,
                     help="Continue a run: 'latest' = newest checkpoint in --out, or a checkpoint file / run folder."),
        click.option("--workers", default=0, show_default=True, metavar="N", type=click.IntRange(min=0),
                     help="Data-loading processes (0 = in the training process; best on a 2-core CPU)."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Show the progress bar on stderr."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def _run(ctx, kind, kwargs):
    """Apply the preset under explicit options, validate cheaply, call the library, print the result."""
    from click.core import ParameterSource

    preset = kwargs.pop("preset")
    if kwargs["steps"] is not None and kwargs["epochs"] is not None:
        raise click.UsageError("give --steps or --epochs, not both")
    if preset is not None:
        from t2icli.training.attngan import PRESETS

        explicit = {name for name in kwargs if ctx.get_parameter_source(name) not in
                    (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)}
        for name, value in PRESETS[preset].items():
            if name in kwargs and name not in explicit:
                if name == "steps" and "epochs" in explicit:
                    continue
                kwargs[name] = value
    from t2icli.data import load_meta

    with user_errors():
        load_meta(kwargs["data"])  # a clear error before anything heavy
    kwargs["device"] = resolve_device(kwargs["device"])
    kwargs["num_workers"] = kwargs.pop("workers")
    kwargs["prompts"] = list(kwargs["prompts"])
    from t2icli.models.attngan import GeneratorExportError
    from t2icli.models.damsm import DAMSMExportError
    from t2icli.training.attngan import train
    from t2icli.training.run import RunError

    with user_errors(RunError, DAMSMExportError, GeneratorExportError):
        result = train(kind=kind, preset=preset, **kwargs)
    if not result["is_main"]:
        return  # under torchrun only rank 0 reports
    ips = result["images_per_s"]
    err(f"trained {result['step']} steps ({result['stop']}) in {result['train_seconds']:.0f} s"
        + (f", {ips:.1f} img/s" if ips else "") + f", {result['seconds']:.0f} s in all; export {result['export']}; "
        f"grid {result['snapshot']}")
    rp = result["rprecision"]
    if rp is None:
        click.echo("R-precision: n/a (the test split has too few images of other classes)")
    else:
        click.echo(f"R-precision (generated images, {rp['n']} test captions, 1 true + {rp['n_negatives']} other-class "
                   f"captions, {len(rp['runs'])} runs): {rp['mean']:.4f} ± {rp['std']:.4f}")


@click.command()
@_common_options
@click.option("--damsm-weight", default=5.0, show_default=True, metavar="LAMBDA", type=click.FloatRange(min=0),
              help="Weight of the DAMSM word+sentence loss on the final stage (5 for birds-like data, 50 for COCO).")
@click.pass_context
def attngan(ctx, **kwargs):
    """Train an AttnGAN: attentional multi-stage generator + one discriminator per stage.

    Needs a DAMSM run on the same data (its frozen encoders give the word/sentence features,
    the DAMSM loss and the R-precision). Writes fakes<step>.png / attn<step>.png grids,
    stats.jsonl, checkpoints/ and RUN/generator.pt (EMA generator + text encoder + vocabulary,
    for `t2i sample`); prints the generated-image R-precision on test captions on stdout.

    \b
    Examples:
      t2i train attngan --data data/toybirds --damsm runs/damsm --out runs/attngan --preset toybirds-cpu
      t2i train attngan --data data/toybirds --damsm runs/damsm --out runs/attngan --stages 3 --steps 20000
      t2i train attngan --data data/toybirds --damsm runs/damsm --out runs/attngan --resume latest --steps 30000
      t2i train attngan --data data/cub --damsm runs/damsm-cub --out runs/attngan-cub --epochs 600 \\
          --device cuda --precision bf16
      torchrun --standalone --nproc_per_node=4 -m t2icli train attngan --data data/cub --damsm runs/damsm-cub \\
          --out runs/attngan-cub --batch-size 80 --device cuda --precision bf16 --compile
    """
    _run(ctx, "attngan", kwargs)


@click.command()
@_common_options
@click.option("--color-consistency/--no-color-consistency", default=True, show_default=True,
              help="StackGAN++ colour-consistency regulariser between consecutive stages (pixel mean x1, "
                   "covariance x5).")
@click.pass_context
def stackgan2(ctx, **kwargs):
    """Train a StackGAN++: the same multi-stage tree without attention or DAMSM loss.

    The generator is conditioned only on the sentence feature. StackGAN++ used a pretrained
    char-CNN-RNN text embedding, which cannot be downloaded here: the frozen text encoder of
    the DAMSM run given with --damsm stands in for it (its sentence feature only; the DAMSM
    image encoder is used just to report R-precision).

    \b
    Examples:
      t2i train stackgan2 --data data/toybirds --damsm runs/damsm --out runs/stackgan2 --preset toybirds-cpu
      t2i train stackgan2 --data data/toybirds --damsm runs/damsm --out runs/stackgan2 --steps 20000
    """
    _run(ctx, "stackgan2", kwargs)
