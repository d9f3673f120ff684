"""`t2i train gancls` and `t2i train stackgan`: parse and validate options, then call t2icli.training.gancls/stackgan."""

import click

from t2icli.cli.gan_options import apply_preset, call_trainer, options, prepare, report

__all__ = ["gancls", "stackgan"]

_PRESET_NAMES = ["toybirds-cpu"]  # keys of PRESETS in t2icli.training.gancls / stackgan (no torch import for --help)


def _with_options(width_defaults, preset_help):
    """The GAN trainers' shared options (with the baselines' widths and batch) + --text-embeddings."""
    gf, df, batch = width_defaults
    shared = options(
        damsm_help="DAMSM run folder (from `t2i train damsm` on the same --data): its frozen text encoder gives the "
                   "sentence features (unless --text-embeddings) and its encoders the R-precision.",
        batch_default=batch, batch_help="Global batch size (its roll gives the mismatched captions): under torchrun "
                                        "it is split over the processes (must be divisible by their number).",
        gf_default=gf, gf_help="Generator width (ngf).",
        df_default=df, df_help="Discriminator width (ndf; its 4x4 code has up to 8x that).",
        compile_help="Wrap G and D (StackGAN: both Ds) in torch.compile (slow first step; faster steps on GPU).",
        preset_names=_PRESET_NAMES, preset_help=preset_help)
    text_embeddings = click.option(
        "--text-embeddings", default=None, metavar="PATH", type=click.Path(exists=True, dir_okay=False),
        help="StackGAN's char-CNN-RNN-embeddings.pickle of the training split (per image E x 1024, in the order of "
             "the filenames.pickle beside it, or of the split's images): condition on the papers' original "
             "embeddings instead of the DAMSM sentence features. Such a model cannot embed new captions: `t2i "
             "sample` refuses it, `t2i eval` needs the test split's embeddings (its --text-embeddings).")

    def deco(fn):
        return shared(text_embeddings(fn))

    return deco


def _run(ctx, kind, kwargs):
    """Apply the preset under explicit options, validate cheaply, call the library, print the result."""
    if kwargs.get("text_embeddings") is not None and kwargs["prompts"]:
        raise click.UsageError("--prompt needs the DAMSM text encoder; it does not go with --text-embeddings")
    if kind == "gancls":
        from t2icli.training.gancls import PRESETS, train
    else:
        from t2icli.training.stackgan import PRESETS, train
    # no text encoder for new captions under --text-embeddings: the preset's prompts do not apply
    preset = apply_preset(ctx, kwargs, PRESETS, skip=("prompts",) if kwargs.get("text_embeddings") else ())
    prepare(kwargs)
    result = call_trainer(train, preset=preset, **kwargs)
    report(result, "char-CNN-RNN conditioning, or too few test images of other classes")


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
