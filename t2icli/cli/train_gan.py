"""`t2i train attngan` and `t2i train stackgan2`: parse and validate options, then call t2icli.training.attngan.train."""

import click

from t2icli.cli.gan_options import apply_preset, call_trainer, options, prepare, report

__all__ = ["attngan", "stackgan2"]

_PRESET_NAMES = ["toybirds-cpu"]  # keys of t2icli.training.attngan.PRESETS (listed here so --help imports no torch)


def _common_options(fn):
    """The options of both multi-stage trainers: the GAN trainers' shared ones + stages, length, CA code."""
    fn = options(
        damsm_help="DAMSM run folder (from `t2i train damsm` on the same --data); its text encoder is frozen.",
        batch_default=20, batch_help="Global batch size: under torchrun it is split over the processes (must be "
                                     "divisible by their number).",
        gf_default=32, gf_help="Generator width: channels of every h_i (the first 4x4 block has 16x that).",
        df_default=64, df_help="Discriminator width (its 4x4 code has 8x that).",
        compile_help="Wrap G and every D in torch.compile (slow first step; faster steps on GPU).",
        preset_names=_PRESET_NAMES,
        preset_help="toybirds-cpu: 2 stages 32/64 px, gf-dim 8, df-dim 8, batch 16, 4000 steps, lr 2e-3, "
                    "--r1-gamma 2, --damsm-augment (attngan), stops after 7 minutes.")(fn)
    for opt in reversed([
        click.option("--stages", default=3, show_default=True, metavar="S", type=click.IntRange(1, 3),
                     help="Generator stages; each doubles the side, the last equals the data's image size; the "
                          "first must be >= 16 px (64 px data: up to 3 stages, 16/32/64)."),
        click.option("--steps", default=None, metavar="N", type=click.IntRange(min=1),
                     help="Train N optimiser steps in total (counting resumed ones). Default: --epochs 600."),
        click.option("--epochs", default=None, metavar="N", type=click.IntRange(min=1),
                     help="Train N epochs (instead of --steps)."),
        click.option("--cond-dim", default=100, show_default=True, metavar="N", type=click.IntRange(min=1),
                     help="Conditioning-augmentation code dimension."),
        click.option("--r1-gamma", default=0.0, show_default=True, metavar="GAMMA", type=click.FloatRange(min=0),
                     help="R1 gradient penalty on every discriminator's real images (GAMMA/2 * E||grad D||^2; 0 = "
                          "none, as the papers). Keeps D from overpowering a young G: on toybirds it is what makes "
                          "short CPU runs draw bird shapes instead of streaks."),
    ]):
        fn = opt(fn)
    return fn


def _run(ctx, kind, kwargs):
    """Apply the preset under explicit options, validate cheaply, call the library, print the result."""
    from t2icli.training.attngan import PRESETS, train

    preset = apply_preset(ctx, kwargs, PRESETS)
    prepare(kwargs)
    result = call_trainer(train, kind=kind, preset=preset, **kwargs)
    report(result, "the test split has too few images of other classes")


@click.command()
@_common_options
@click.option("--damsm-weight", default=5.0, show_default=True, metavar="LAMBDA", type=click.FloatRange(min=0),
              help="Weight of the DAMSM word+sentence loss on the final stage (5 for birds-like data, 50 for COCO).")
@click.option("--damsm-augment/--no-damsm-augment", default=False, show_default=True,
              help="Score every final image for the DAMSM term after a random shift (up to 1/8 of its side) and "
                   "mirroring, so G cannot satisfy the frozen image encoder with colour streaks drawn anywhere.")
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
