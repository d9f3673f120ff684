"""`t2i sample`: images from captions with a trained generator (grids, attention pictures, interpolations)."""

import time

import click

from t2icli.cli.common import err, model_or_pretrained, resolve_device

_T0 = time.perf_counter()  # module import time ~ command start: reported as the cold-start time with --verbose


@click.command()
@click.argument("captions", nargs=-1, metavar="CAPTION [CAPTION ...]")
@click.option("--model", "model_run", default=None, metavar="RUN", type=click.Path(exists=True),
              help="Generator run folder (or its generator.pt) from `t2i train attngan|stackgan2|stackgan|gancls`. "
                   "Default: the shipped pretrained toybirds model, when this t2i has one.")
@click.option("--out", required=True, metavar="PATH", type=click.Path(),
              help="out.png for one caption (out-00.png, out-01.png, ... for several), or a folder: "
                   "<k>-<words>.png per caption.")
@click.option("--n", default=8, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="Images per caption; image k is the same whatever N (noise seeded by --seed and k).")
@click.option("--seed", default=0, show_default=True, metavar="INT", type=click.IntRange(min=0), help="Noise seed.")
@click.option("--stage", default="last", show_default=True, type=click.Choice(["last", "all"]),
              help="last: the final stage's images; all: every stage's images, one row per stage.")
@click.option("--save-attn", is_flag=True,
              help="Also write <png>-attn.png: the caption's words, and under each its attention map over the "
                   "image, for every attention stage (AttnGAN models).")
@click.option("--interpolate", nargs=2, metavar="CAPTION_A CAPTION_B", default=None,
              help="Instead of CAPTIONs: images along the straight line between two captions' sentence and word "
                   "features at fixed noise (GAN-INT-CLS 5.4); --n rows, --steps columns.")
@click.option("--steps", default=8, show_default=True, metavar="K", type=click.IntRange(min=2),
              help="Columns of --interpolate.")
@click.option("--style-from", "style_from", default=None, metavar="IMAGE",
              type=click.Path(exists=True, dir_okay=False),
              help="GAN-INT-CLS style transfer: draw each caption's content in the pose and background of IMAGE "
                   "(z = S(IMAGE), needs a gancls model trained with --train-style-encoder); one image per caption, "
                   "beside IMAGE.")
@click.option("--device", default="auto", show_default=True, metavar="DEV", help="auto, cpu, cuda, cuda:1, ...")
@click.option("--verbose", is_flag=True, help="Print the time from start to the last PNG on stderr.")
def sample(captions, model_run, out, n, seed, stage, save_attn, interpolate, steps, style_from, device, verbose):
    """Generate images from captions with a trained generator.

    Without --model, the pretrained toybirds model shipped with t2i is used (named on stderr).
    Words not in the model's vocabulary are dropped with a warning on stderr; an empty
    caption, one of only punctuation, or one with no known word is an error (exit 2). A caption
    longer than the model's word limit (18 for birds) keeps its first words, with a warning.
    The written paths go to stdout.

    \b
    Examples:
      t2i sample "a small red bird" --model runs/attngan --out red.png
      t2i sample "a small red bird" "a large blue bird with a long beak" --model runs/attngan --out pics/ --save-attn
      t2i sample "a yellow bird with black wings" --model runs/attngan --out stages.png --stage all --n 4
      t2i sample --interpolate "a small red bird" "a large blue bird" --steps 8 --n 2 --model runs/attngan --out line.png
      t2i sample "a yellow bird with black wings" --style-from photo.png --model runs/gancls --out styled.png
    """
    if interpolate and captions:
        raise click.UsageError("give CAPTIONs or --interpolate CAPTION_A CAPTION_B, not both")
    if not interpolate and not captions:
        raise click.UsageError("give at least one CAPTION (or --interpolate CAPTION_A CAPTION_B)")
    if style_from is not None:
        from click.core import ParameterSource

        ctx = click.get_current_context()
        given = [f for f, name in (("--interpolate", "interpolate"), ("--save-attn", "save_attn"), ("--n", "n"))
                 if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)]
        if given:
            raise click.UsageError(f"--style-from draws one image per caption (z comes from IMAGE); it does not go "
                                   f"with {', '.join(given)}")
    from t2icli.data.text import tokenize

    for text in (interpolate or captions):
        if not text.strip():
            raise click.BadParameter("an empty caption: give some words, e.g. \"a small red bird\"",
                                     param_hint="CAPTION")
        if not tokenize(text):  # checked before the model is loaded
            shown = text if len(text) <= 60 else text[:60] + "..."
            raise click.BadParameter(f"{shown!r} has no words (only punctuation or symbols): give some words, "
                                     "e.g. \"a small red bird\"", param_hint="CAPTION")
    model_run, _ = model_or_pretrained(model_run, "sample")
    dev = resolve_device(device)
    from t2icli.metrics.generate import load_model
    from t2icli.sample import SampleError, encode_captions, interpolate as interpolate_fn, sample as sample_fn
    from t2icli.sample import sample_style

    model = load_model(model_run, dev)
    try:
        # Vocabulary problems are usage errors (exit 2), checked before anything is generated.
        encode_captions(model, list(interpolate or captions), warn=err)
    except SampleError as exc:
        raise click.UsageError(str(exc)) from None
    if interpolate:
        res = interpolate_fn(model, interpolate[0], interpolate[1], out, steps=steps, n=n, seed=seed)
        click.echo(res["png"])
    elif style_from is not None:
        for r in sample_style(model, list(captions), style_from, out, seed=seed, stage=stage):
            click.echo(r["png"])
    else:
        for r in sample_fn(model, list(captions), out, n=n, seed=seed, stage=stage, save_attn=save_attn):
            click.echo(r["png"])
            if r["attention"]:
                click.echo(r["attention"])
    if verbose:
        err(f"t2i sample: {time.perf_counter() - _T0:.2f} s from command import to last PNG")
