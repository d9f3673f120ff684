"""`t2i train gancls` and `t2i train stackgan`: parse and validate options, then call t2icli.training.gancls/stackgan."""

import click

from t2icli.cli.common import err, resolve_device, user_errors
from t2icli.cli.train_gan import _check_resume

__all__ = ["gancls", "stackgan"]

_PRESET_NAMES = ["toybirds-cpu"]  # keys of PRESETS in t2icli.training.gancls / stackgan (no torch import for --help)


def _options(width_defaults, preset_help):
    """The options both baseline trainers share (applied bottom-up, so listed here in reverse help order)."""
    gf, df, batch = width_defaults
    return [
        click.option("--data", required=True, metavar="DIR", type=click.Path(exists=True, file_okay=False),
                     help="Prepared dataset folder (from `t2i prep`)."),
        click.option("--damsm", required=True, metavar="RUN", type=click.Path(exists=True),
                     help="DAMSM run folder (from `t2i train damsm` on the same --data): its frozen text encoder gives "
                          "the sentence features (unless --text-embeddings) and its encoders the R-precision."),
        click.option("--out", required=True, metavar="RUN", type=click.Path(file_okay=False),
                     help="Run folder to create (or to continue with --resume latest)."),
        click.option("--text-embeddings", default=None, metavar="PATH", type=click.Path(exists=True, dir_okay=False),
                     help="StackGAN's char-CNN-RNN-embeddings.pickle of the training split (per image E x 1024, in "
                          "the order of the filenames.pickle beside it, or of the split's images): condition on the "
                          "papers' original embeddings instead of the DAMSM sentence features. Such a model cannot "
                          "embed new captions: `t2i sample` refuses it, `t2i eval` needs the test split's embeddings "
                          "(its --text-embeddings)."),
        click.option("--preset", default=None, type=click.Choice(_PRESET_NAMES),
                     help="A named configuration; options given explicitly override it. " + preset_help),
        click.option("--max-minutes", default=None, metavar="MIN", type=click.FloatRange(min=0, min_open=True),
                     help="Stop training after this many minutes (this invocation), then evaluate and export."),
        click.option("--batch-size", default=batch, show_default=True, metavar="B", type=click.IntRange(min=2),
                     help="Global batch size (its roll gives the mismatched captions): under torchrun it is split "
                          "over the processes (must be divisible by their number)."),
        click.option("--lr-g", default=2e-4, show_default=True, metavar="LR", type=click.FloatRange(min=0, min_open=True),
                     help="Generator Adam learning rate (betas 0.5, 0.999)."),
        click.option("--lr-d", default=2e-4, show_default=True, metavar="LR", type=click.FloatRange(min=0, min_open=True),
                     help="Discriminator Adam learning rate (betas 0.5, 0.999)."),
        click.option("--gf-dim", default=gf, show_default=True, metavar="C", type=click.IntRange(min=1),
                     help="Generator width (ngf)."),
        click.option("--df-dim", default=df, show_default=True, metavar="C", type=click.IntRange(min=1),
                     help="Discriminator width (ndf; its 4x4 code has up to 8x that)."),
        click.option("--z-dim", default=100, show_default=True, metavar="N", type=click.IntRange(min=1),
                     help="Noise dimension."),
        click.option("--ema/--no-ema", default=True, show_default=True,
                     help="Keep an EMA copy of G and export it (else the raw G is exported)."),
        click.option("--ema-beta", default=0.999, show_default=True, metavar="BETA",
                     type=click.FloatRange(0, 1, max_open=True), help="EMA decay per step."),
        click.option("--snapshot-every", default=1000, show_default=True, metavar="STEPS", type=click.IntRange(min=1),
                     help="Write fakes<step>.png (fixed noise and prompts) and a quick generated-image R-precision "
                          "every this many steps (and at step 0)."),
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
                     help="Wrap G and D (StackGAN: both Ds) in torch.compile (slow first step; faster steps on GPU)."),
        click.option("--threads", default=0, show_default=True, metavar="N", type=click.IntRange(min=0),
                     help="CPU threads for torch (0 = torch's default, one per core). 1 is faster on a busy machine."),
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


def _with_options(width_defaults, preset_help):
    def deco(fn):
        for opt in reversed(_options(width_defaults, preset_help)):
            fn = opt(fn)
        return fn
    return deco


def _run(ctx, kind, kwargs):
    """Apply the preset under explicit options, validate cheaply, call the library, print the result."""
    from click.core import ParameterSource

    preset = kwargs.pop("preset")
    if kwargs.get("steps") is not None and kwargs.get("epochs") is not None:
        raise click.UsageError("give --steps or --epochs, not both")
    if kwargs.get("text_embeddings") is not None and kwargs["prompts"]:
        raise click.UsageError("--prompt needs the DAMSM text encoder; it does not go with --text-embeddings")
    if preset is not None:
        if kind == "gancls":
            from t2icli.training.gancls import PRESETS
        else:
            from t2icli.training.stackgan import PRESETS
        explicit = {name for name in kwargs if ctx.get_parameter_source(name) not in
                    (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)}
        for name, value in PRESETS[preset].items():
            if name in kwargs and name not in explicit:
                if name == "steps" and "epochs" in explicit:
                    continue
                if name == "prompts" and kwargs.get("text_embeddings") is not None:
                    continue  # no text encoder for new captions under --text-embeddings
                kwargs[name] = value
    from t2icli.data import load_meta

    with user_errors():
        load_meta(kwargs["data"])  # a clear error before anything heavy
    kwargs["device"] = resolve_device(kwargs["device"])
    kwargs["num_workers"] = kwargs.pop("workers")
    kwargs["prompts"] = list(kwargs["prompts"])
    threads = kwargs.pop("threads")
    import torch

    if threads:
        torch.set_num_threads(threads)
    from t2icli.models.attngan import GeneratorExportError
    from t2icli.models.damsm import DAMSMExportError
    from t2icli.training.run import RunError

    if kind == "gancls":
        from t2icli.training.gancls import train
    else:
        from t2icli.training.stackgan import train
    with user_errors(RunError, DAMSMExportError, GeneratorExportError):
        result = train(preset=preset, **kwargs)
    if not result["is_main"]:
        return  # under torchrun only rank 0 reports
    ips = result["images_per_s"]
    err(f"trained {result['step']} steps ({result['stop']}) in {result['train_seconds']:.0f} s"
        + (f", {ips:.1f} img/s" if ips else "") + f", {result['seconds']:.0f} s in all; export {result['export']}; "
        f"grid {result['snapshot']}")
    rp = result["rprecision"]
    if rp is None:
        click.echo("R-precision: n/a (char-CNN-RNN conditioning, or too few test images of other classes)")
    else:
        click.echo(f"R-precision (generated images, {rp['n']} test captions, 1 true + {rp['n_negatives']} other-class "
                   f"captions, {len(rp['runs'])} runs): {rp['mean']:.4f} ± {rp['std']:.4f}")


@click.command()
@_with_options((64, 64, 64), "toybirds-cpu: 64 px, gf-dim 16, df-dim 16, z-dim 64, batch 32, 3000 steps, "
                                       "lr 2e-4, stops after 7 minutes.")
@click.option("--steps", default=None, metavar="N", type=click.IntRange(min=1),
              help="Train N optimiser steps in total (counting resumed ones). Default: --epochs 600.")
@click.option("--epochs", default=None, metavar="N", type=click.IntRange(min=1), help="Train N epochs (instead of --steps).")
@click.option("--proj-dim", default=128, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="The text feature is compressed to N by FC + leaky ReLU (in G and in D).")
@click.option("--interp/--no-interp", default=True, show_default=True,
              help="Manifold interpolation (GAN-INT): also train G on interpolated captions' features.")
@click.option("--interp-beta", default=0.5, show_default=True, metavar="BETA", type=click.FloatRange(0, 1),
              help="Interpolated feature beta * t1 + (1 - beta) * t2 of two captions.")
@click.option("--train-style-encoder", is_flag=True, default=False,
              help="Also train the style encoder S(x) -> z (squared loss on generated images) for "
                   "`t2i sample --style-from IMAGE`.")
@click.pass_context
def gancls(ctx, **kwargs):
    """Train GAN-INT-CLS (Reed and others, 2016): a DCGAN with a matching-aware discriminator.

    D learns (real image, right text) -> real, (real image, wrong text) and (fake image, right
    text) -> fake; G is also trained on interpolations of two captions' features. The text
    feature is the DAMSM sentence feature of --damsm (or, with --text-embeddings, StackGAN's
    char-CNN-RNN embeddings, as the paper). Writes fakes<step>.png, stats.jsonl, checkpoints/
    and RUN/generator.pt; prints the generated-image R-precision on stdout.

    \b
    Examples:
      t2i train gancls --data data/toybirds --damsm runs/damsm --out runs/gancls --preset toybirds-cpu
      t2i train gancls --data data/toybirds --damsm runs/damsm --out runs/gancls --steps 20000 --train-style-encoder
      t2i train gancls --data data/cub --damsm runs/damsm-cub --out runs/gancls-cub --epochs 600 \\
          --text-embeddings Data/birds/train/char-CNN-RNN-embeddings.pickle
      torchrun --standalone --nproc_per_node=2 -m t2icli train gancls --data data/cub --damsm runs/damsm-cub \\
          --out runs/gancls-cub --batch-size 128 --device cuda --precision bf16
    """
    _run(ctx, "gancls", kwargs)


@click.command()
@_with_options((128, 64, 64), "toybirds-cpu: 16 -> 64 px, gf-dim 16, df-dim 16, z-dim 64, cond-dim 64, 2 "
                                        "residual blocks, batch 32, 2500 + 2500 steps, lr 2e-4, stops after 7 minutes.")
@click.option("--stage1-steps", default=10000, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="Optimiser steps of the Stage-I GAN (a quarter of the final side).")
@click.option("--stage2-steps", default=10000, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="Optimiser steps of the Stage-II GAN (the data's side), Stage-I frozen.")
@click.option("--cond-dim", default=128, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="Conditioning-augmentation code dimension.")
@click.option("--res-blocks", default=4, show_default=True, metavar="N", type=click.IntRange(min=0),
              help="Residual blocks of the Stage-II generator.")
@click.option("--kl-weight", default=2.0, show_default=True, metavar="W", type=click.FloatRange(min=0),
              help="Weight of the conditioning-augmentation KL term.")
@click.pass_context
def stackgan(ctx, **kwargs):
    """Train StackGAN (v1, Zhang and others, 2017): Stage-I, then Stage-II with Stage-I frozen.

    Stage-I draws a quarter-size sketch from noise and the conditioning-augmented text;
    Stage-II refines it to the data's size (64 -> 256 on CUB 256 px, 16 -> 64 on toybirds).
    --max-minutes is shared by the stages in proportion to their steps. Text features as
    `train gancls`.

    \b
    Examples:
      t2i train stackgan --data data/toybirds --damsm runs/damsm --out runs/stackgan --preset toybirds-cpu
      t2i train stackgan --data data/cub --damsm runs/damsm-cub --out runs/stackgan-cub \\
          --stage1-steps 60000 --stage2-steps 60000 --device cuda
      torchrun --standalone --nproc_per_node=4 -m t2icli train stackgan --data data/cub --damsm runs/damsm-cub \\
          --out runs/stackgan-cub --batch-size 64 --device cuda --precision bf16 --compile
    """
    _run(ctx, "stackgan", kwargs)
