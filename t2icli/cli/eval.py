"""`t2i eval`: R-precision, Inception Score, FID and attribute accuracy of a trained generator (one JSON object with --json)."""

import json

import click

from t2icli.cli.common import err, model_or_pretrained, resolve_device

_METRICS = ["rprecision", "is", "fid", "attr", "all"]  # t2icli.metrics.evaluate.METRICS + "all" (no torch import)
_BACKBONES = ["auto", "data", "fid-inception", "torchvision", "dmgan"]  # metrics.fid.BACKBONES + auto, data
_IS_BACKBONES = ["auto", "torchvision", "tf-slim"]  # t2icli.metrics.inception_score.IS_BACKBONES (no torch import)


def _round(x):
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _summary(r):
    """One human-readable line per metric result (stdout without --json)."""
    m = r["metric"]
    if "skipped" in r:
        return f"{m}: skipped ({r['skipped']})"
    if m == "rprecision":
        real = r.get("real")
        return (f"R-precision (DM-GAN protocol, n={r['n']}, {r['folds']} folds, 1 + {r['negatives']} captions): "
                f"{_round(r['mean'])} ± {_round(r['std'])}"
                + (f"; real test images {_round(real['mean'])} ± {_round(real['std'])}" if real else ""))
    if m == "attr":
        per = ", ".join(f"{k} {_round(v)}" for k, v in r["per_attribute"].items() if v is not None)
        real = f"; real {_round(r['real']['accuracy'])}" if "real" in r else ""
        words = r.get("words")  # --captions: how much of the file the model could read
        oov = (f"\n  out of vocabulary (dropped): {words['out_of_vocabulary']} of {words['total']} words, in "
               f"{words['captions_with_oov']} of {r['n']} captions" if words else "")
        mix = ""
        marg = r.get("marginals")
        if marg:  # every image's drawn values against the real images': a shift or a dropped value
            worst = max(marg, key=lambda k: marg[k]["tv"])
            w = marg[worst]
            shares = lambda xs: " / ".join(f"{v} {x:.2f}" for v, x in zip(w["values"], xs))  # noqa: E731
            mix = ("\n  value mix vs real (total variation, 0 = the same): "
                   + ", ".join(f"{k} {v['tv']:.2f}" for k, v in marg.items())
                   + f"\n  furthest: {worst} drawn {shares(w['generated'])}; real {shares(w['real'])}")
        bound = r.get("misplaced_colours")
        if bound and bound["misplaced"] is not None:  # a wrong colour that is another part's: bound to the wrong part
            mix += (f"\n  wrong colours drawn in another part's stated colour: {bound['misplaced']:.2f} of "
                    f"{bound['wrong']} (chance {bound['chance']:.2f})")
        spill = r.get("leaked_colours")
        if spill and spill["generated"]["leaked"] is not None:  # a stated colour drawn on a part left free
            mix += (f"\n  free parts drawn in a stated colour: {spill['generated']['leaked']:.2f} of "
                    f"{spill['generated']['free']} (real images {spill['real']['leaked']:.2f})")
        for st in r.get("per_stage") or []:  # --stage all
            agree = ", ".join(f"{k} {v:.2f}" for k, v in st["agreement_with_last"].items())
            ceiling = f" (real images at {st['size']} px: {_round(st['real'])})" if "real" in st else ""
            mix += (f"\n  stage {st['size']} px: accuracy {_round(st['accuracy'])}{ceiling}; agreeing with the last "
                    f"stage: {agree}")
        groups = r.get("by_group")  # --captions with "group" labels
        by = ("\n  per group: " + ", ".join(f"{g} {_round(v['accuracy'])} ({v['lines']} lines)"
                                             for g, v in groups.items()) if groups else "")
        return (f"attribute accuracy (n={r['n']}, {r['n_mentions']} mentioned attributes): {_round(r['accuracy'])}"
                f"{real}\n  per attribute: {per}{mix}{by}{oov}")
    if m == "fid" and r.get("stats_only"):
        return f"FID reference statistics ({r['backbone']}, {r['n']} real {r['split']} images): {r['path']}"
    terms = ""
    if m == "fid" and "terms" in r:
        t = r["terms"]
        terms = (f"\n  = mean term {_round(t['mean'])} + covariance term {_round(t['covariance'])}; spread (trace of "
                 f"the covariance) {_round(t['spread_generated'])} generated, {_round(t['spread_real'])} real")
    if m == "fid" and r.get("backbone") == "data":
        return (f"FID (data features, n={r['n']} vs {r['n_real']} real {r['split']}): {_round(r['value'])}; floor "
                f"(real train vs real {r['split']}, n={r['n']}) {_round(r['floor'])}{terms}")
    if m == "fid":
        return f"FID ({r['backbone']}, n={r['n']} vs {r['n_real']} real, {r['resize']}): {_round(r['value'])}{terms}"
    if m == "is":
        return (f"Inception Score ({r['backbone']}, n={r['n']}, {r['splits']} shuffled splits): "
                f"{_round(r['mean'])} ± {_round(r['std'])}")
    return json.dumps(r)


@click.command("eval")
@click.option("--metric", default="rprecision", show_default=True, type=click.Choice(_METRICS),
              help="Which metric; all = every one that applies (IS/FID need --inception-weights, attr needs "
                   "attribute truth; the others are reported as skipped).")
@click.option("--model", "model_run", metavar="RUN", type=click.Path(exists=True),
              help="Generator run folder (or its generator.pt), from `t2i train attngan|stackgan2|stackgan|gancls`. "
                   "Default: the shipped pretrained toybirds model, when this t2i has one (evaluate it on a "
                   "default `t2i prep toybirds` folder).")
@click.option("--data", required=True, metavar="DIR", type=click.Path(exists=True, file_okay=False),
              help="Prepared dataset folder the model was trained on; its test captions drive generation.")
@click.option("--n-samples", default=30000, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="Images to generate, cycling over the test captions (30000 as DM-GAN; less for toy data).")
@click.option("--damsm", metavar="RUN", type=click.Path(exists=True), default=None,
              help="DAMSM run whose encoders score R-precision.  [default: the one stored with the model]")
@click.option("--text-embeddings", metavar="PATH", type=click.Path(exists=True, dir_okay=False), default=None,
              help="For a gancls/stackgan model trained with --text-embeddings: the TEST split's "
                   "char-CNN-RNN-embeddings.pickle (matched to the test images as in training); generation uses "
                   "these embeddings of the test captions instead of encoding them.")
@click.option("--inception-weights", metavar="PATH", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Inception-v3 weights file (torchvision layout) for IS and FID; none can be downloaded here.")
@click.option("--num-classes", default=1000, show_default=True, metavar="K", type=click.IntRange(min=2),
              help="IS: classes of the classifier (50 for StackGAN's fine-tuned CUB model; a K+1-th background "
                   "output 0 is dropped before the softmax).")
@click.option("--fid-backbone", default="auto", show_default=True, type=click.Choice(_BACKBONES),
              help="auto: fid-inception with --inception-weights, else data. data: the features of a small CNN "
                   "trained on the data set's own real train images (nothing to download; reported with its floor, "
                   "real train vs real test at the same count; metrics/data_fid.py). "
                   "fid-inception: TF inception-2015-12-05 weights as pytorch-fid/torch-fidelity use them; "
                   "torchvision: ImageNet Inception-v3 fed [-1, 1]; dmgan: the same network fed as DM-GAN's FID "
                   "code feeds it (torchvision's input transform applied to [0, 1] pixels), what DM-GAN's "
                   "published FIDs used.")
@click.option("--stats-only", is_flag=True, help="FID: only write the real test split's reference statistics "
                                                 "(cached in DATA/cache/) and print where.")
@click.option("--is-backbone", default="auto", show_default=True, type=click.Choice(_IS_BACKBONES),
              help="IS network: torchvision's Inception-v3 pooling, or tf-slim (3x3 average pools exclude the padding, "
                   "as the TF-slim model StackGAN's fine-tuned CUB classifier was trained in); auto = tf-slim for a "
                   "classifier with a background output (--num-classes 50 with 51 outputs), else torchvision.")
@click.option("--splits", default=10, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="IS: number of splits (of the images shuffled with --seed, as StackGAN's/DM-GAN's evaluation).")
@click.option("--word-limit", default=None, metavar="N", type=click.IntRange(min=1),
              help="Words per test caption (longer ones are cut as in training).  [default: 25, or 20 on COCO, as "
                   "AttnGAN's/DM-GAN's eval_bird.yml / eval_coco.yml]")
@click.option("--attr-steps", default=1500, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="attr: training steps of the attribute classifier (trained once per data set and value, cached "
                   "in DATA/cache/).")
@click.option("--fid-steps", default=1500, show_default=True, metavar="N", type=click.IntRange(min=1),
              help="--fid-backbone data: training steps of the data set's feature network (trained once per data set "
                   "and value, cached in DATA/cache/).")
@click.option("--captions", "captions_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False),
              default=None,
              help="attr: generate from the captions in FILE instead of the test captions, one JSON object per "
                   'line: {"text": "the wings are blue", "attributes": {"wing": "blue", ...}} (the attributes the '
                   'text states, by the data set\'s names; optional "image": "test/000123"). One image per line, '
                   "line j with the noise of (seed, j); reports out-of-vocabulary words.")
@click.option("--stage", default="last", show_default=True, type=click.Choice(["last", "all"]),
              help="attr: all = also score every earlier stage's images (resized to the classifier's side), each "
                   "with how often its reading agrees with the last stage's: where a word is lost (per_stage).")
@click.option("--seed", default=0, show_default=True, metavar="INT", type=click.IntRange(min=0),
              help="Seed of the generated images' noise and of the R-precision negatives.")
@click.option("--batch-size", default=50, show_default=True, metavar="B", type=click.IntRange(min=1),
              help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, metavar="DEV", help="auto, cpu, cuda, cuda:1, ...")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout (progress on stderr).")
def eval_cmd(metric, model_run, data, n_samples, damsm, text_embeddings, inception_weights, num_classes, fid_backbone,
             stats_only, is_backbone, splits, word_limit, attr_steps, fid_steps, seed, batch_size, device, as_json,
             captions_file, stage):
    """Evaluate a generator on the test captions of its data set.

    \b
    rprecision  DM-GAN's protocol: true caption vs 99 other-class captions per image (drawn with
                replacement, ties are hits), 10 shuffled folds; also on the real test images (the ceiling)
    is          Inception Score, 10 shuffled splits, from --inception-weights
    fid         FID against the real test split (--fid-backbone): in Inception features (--inception-weights),
                or in the data set's own feature network (--fid-backbone data, with its real-vs-real floor)
    attr        attribute accuracy of the attributes each caption mentions (toybirds);
                with --captions FILE, of your own captions (see scripts/paraphrases.py)
    Generated images are truncated to uint8 as the references save them; captions are cut to --word-limit.

    \b
    Examples:
      t2i eval --metric rprecision --model runs/attngan --data data/toybirds --n-samples 2000 --json
      t2i eval --metric attr --model runs/attngan --data data/toybirds --n-samples 2000
      t2i eval --metric attr --model runs/attngan --data data/toybirds --captions my_captions.jsonl
      t2i eval --metric fid --model runs/attngan --data data/toybirds --n-samples 2000
      t2i eval --metric fid --model runs/attngan --data data/cub --inception-weights pt_inception-2015-12-05.pth
      t2i eval --metric fid --stats-only --data data/cub --inception-weights pt_inception-2015-12-05.pth
      t2i eval --metric is --model runs/attngan --data data/cub --inception-weights cub_inception.pth --num-classes 50
      t2i eval --metric all --model runs/attngan --data data/toybirds --n-samples 1000 --json
      t2i eval --model runs/stackgan-cub --data data/cub \\
          --text-embeddings Data/birds/test/char-CNN-RNN-embeddings.pickle
    """
    from t2icli.metrics.evaluate import METRICS, check_request, evaluate, fid_stats_only, resolve_fid_backbone

    metrics = list(METRICS) if metric == "all" else [metric]
    fid_backbone = resolve_fid_backbone(fid_backbone, inception_weights)
    if text_embeddings is not None and stats_only:
        raise click.UsageError("--text-embeddings goes with a --model to evaluate, not with --stats-only")
    if captions_file is not None:
        from click.core import ParameterSource

        if metric != "attr" or stats_only or text_embeddings is not None:
            raise click.UsageError("--captions goes with --metric attr (and neither --stats-only nor "
                                   "--text-embeddings)")
        if click.get_current_context().get_parameter_source("n_samples") == ParameterSource.COMMANDLINE:
            raise click.UsageError("--n-samples does not go with --captions: one image is generated per line")
    if stage == "all" and (metric not in ("attr", "all") or stats_only or text_embeddings is not None):
        raise click.UsageError("--stage all goes with --metric attr or all (it scores every stage's images with the "
                               "attribute classifier)")
    if model_run is None and not stats_only:
        model_run, _ = model_or_pretrained(model_run, "eval")
    skip = check_request(metrics, data, model_run, damsm, inception_weights, stats_only, fid_backbone)
    dev = resolve_device(device)

    def progress(done, total):
        if done == total or done % max(1, batch_size * 20) < batch_size:
            err(f"  {done}/{total}")

    if captions_file is not None:
        from t2icli.metrics.captions_file import captions_attr_metric

        results = [captions_attr_metric(model_run, data, captions_file, seed=seed, batch_size=batch_size, device=dev,
                                        attr_steps=attr_steps, progress=progress, log=err, stage=stage)]
    elif stats_only:
        results = [fid_stats_only(data, backbone=fid_backbone, inception_weights=inception_weights,
                                  batch_size=batch_size, device=dev, progress=progress, log=err)]
    else:
        results = evaluate(metrics, model_run, data, n_samples=n_samples, damsm=damsm,
                           inception_weights=inception_weights, num_classes=num_classes, fid_backbone=fid_backbone,
                           splits=splits, seed=seed, batch_size=batch_size, device=dev, progress=progress, log=err,
                           skip=skip, attr_steps=attr_steps, text_embeddings=text_embeddings, word_limit=word_limit,
                           is_backbone=is_backbone, fid_steps=fid_steps, stage=stage)
    if metric == "all" and not stats_only:
        out = {"metric": "all", "n": n_samples, "seed": seed, "metrics": {r["metric"]: r for r in results}}
    else:
        out = results[0]
    if as_json:
        click.echo(json.dumps(out))
    else:
        for r in results:
            click.echo(_summary(r))
