"""`t2i eval`'s library side: check the request, generate test-caption images once, run each metric, return JSON-able dicts."""

import os

import numpy as np
import torch

from t2icli.metrics.common import MetricError, check_file

__all__ = ["METRICS", "check_request", "evaluate", "rprecision_metric", "attr_metric", "fid_stats_only",
           "resolve_fid_backbone"]

METRICS = ("rprecision", "is", "fid", "attr")


def _test_split(meta):
    return "test" if "test" in meta["splits"] else "train"


def _damsm_path(model, damsm, model_run=None):
    """The DAMSM run whose encoders score R-precision: --damsm, else the one stored with the model, else a damsm.pt
    kept in the model's own folder (a shipped model carries its DAMSM: the run it recorded is on another machine)."""
    path = damsm or (model.config.get("damsm_run") if model is not None else None)
    beside = os.path.join(model_run, "damsm.pt") if model_run and os.path.isdir(model_run) else None
    if not damsm and beside and os.path.isfile(beside) and not (path and os.path.exists(path)):
        return beside
    if not path:
        raise MetricError("R-precision needs DAMSM encoders: the model records no DAMSM run; give --damsm RUN")
    if not os.path.exists(path):
        raise MetricError(f"the DAMSM run {path} (stored with the model) is gone; give --damsm RUN")
    return path


def resolve_fid_backbone(backbone, inception_weights):
    """--fid-backbone auto -> "fid-inception" when Inception weights are given, else "data" (the data set's own
    feature network, which needs no download); any other name as it is."""
    if backbone == "auto":
        return "fid-inception" if inception_weights is not None else "data"
    return backbone


def check_request(metrics, data, model_run=None, damsm=None, inception_weights=None, stats_only=False,
                  fid_backbone="fid-inception"):
    """Cheap validation before anything heavy. metrics: names from METRICS; fid_backbone: a resolved name (see
    resolve_fid_backbone). Raises MetricError / DataError.

    Returns the metrics to skip in an `all` request as {name: reason} (empty for explicit metrics).
    """
    from t2icli.data import load_meta

    meta = load_meta(data)
    skip = {}
    explicit = len(metrics) == 1
    if stats_only:
        if metrics != ["fid"]:
            raise MetricError("--stats-only goes with --metric fid")
        if fid_backbone == "data":
            raise MetricError("--stats-only writes Inception reference statistics: give --inception-weights and an "
                              "Inception --fid-backbone (the data backbone's network is cached on first use)")
        check_file(inception_weights, "--inception-weights")
        return skip
    if model_run is None:
        raise MetricError("--model RUN is required (the generator to evaluate)")
    for m in metrics:
        if m == "fid" and fid_backbone == "data":
            continue
        if m in ("is", "fid") and (inception_weights is None or not os.path.isfile(inception_weights)):
            if explicit:
                check_file(inception_weights, "--inception-weights")
            skip[m] = "needs --inception-weights (an Inception-v3 weights file)"
        if m == "attr" and not meta.get("attributes"):
            if explicit:
                raise MetricError(f"--metric attr: --data {data} has no attribute truth (toybirds has)")
            skip[m] = "the data set has no attribute truth"
        if m == "rprecision" and damsm is not None and not os.path.exists(damsm):
            raise MetricError(f"--damsm {damsm}: no such run")
    return skip


@torch.no_grad()
def _image_features(image_encoder, images, batch_size, device):
    """DAMSM global features f_bar [n, D] (float64 CPU) of uint8 images [n, S, S, 3]."""
    out = []
    for s in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(device)
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [b, 3, S, S]
        out.append(image_encoder(x)[1].double().cpu())
    return torch.cat(out)


@torch.no_grad()
def _sentence_features(text_encoder, tokens, lengths, batch_size, device):
    """DAMSM sentence features e_bar [n, D] (float64 CPU) of tokens [n, T] / lengths [n]."""
    out = []
    tokens, lengths = torch.as_tensor(tokens), torch.as_tensor(lengths)
    for s in range(0, len(tokens), batch_size):
        out.append(text_encoder(tokens[s : s + batch_size].to(device), lengths[s : s + batch_size])[1].double().cpu())
    return torch.cat(out)


def rprecision_metric(images, caps, ds, damsm_run, seed=0, batch_size=50, device="cpu", real=True, log=None):
    """R-precision (DM-GAN protocol, rprecision_folds) of uint8 images [n, S, S, 3] made from captions `caps`
    (from generate.test_captions over split ds), scored by the DAMSM run `damsm_run`; with real=True also of
    the real test images of the same captions (the ceiling). Returns the JSON-able dict."""
    from t2icli.metrics.generate import test_captions
    from t2icli.metrics.rprecision_folds import PROTOCOL, PROTOCOL_CHOICES, dmgan_rprecision
    from t2icli.models.export import ExportError, load_damsm

    try:
        text_enc, image_enc, _, vocab = load_damsm(damsm_run, device)
    except ExportError as exc:
        raise MetricError(f"--damsm: {exc}") from None
    if list(vocab) != list(ds.vocab):
        raise MetricError(f"the DAMSM run {damsm_run} was trained on a different vocabulary than --data {ds.path}")
    n_caps = int(ds.image_captions[-1])
    pool = test_captions(ds, n_caps, seed)  # every test caption once, cut the same way as `caps`
    e_pool = _sentence_features(text_enc, pool["tokens"], pool["lengths"], batch_size, device)  # [C, D]
    e_true = e_pool[torch.as_tensor(caps["rows"])]  # [n, D]
    classes = np.asarray(ds.class_ids)
    args = dict(pool_image_classes=classes, pool_caption_starts=ds.image_captions, seed=seed)
    if log:
        log(f"R-precision: DAMSM features of {len(images)} generated images")
    res = dmgan_rprecision(_image_features(image_enc, images, batch_size, device), e_true,
                           e_pool, classes[caps["images"]], **args)
    out = {"metric": "rprecision", "mean": res["mean"], "std": res["std"], "n": res["n"], "folds": len(res["folds"]),
           "fold_values": res["folds"], "negatives": res["n_negatives"], "encoder_run": os.path.abspath(damsm_run),
           "seed": int(seed), "split": ds.split, "protocol": PROTOCOL, **PROTOCOL_CHOICES}
    if real:
        real_images = ds.images_uint8[np.sort(np.unique(caps["images"]))]
        index = {int(i): k for k, i in enumerate(np.sort(np.unique(caps["images"])))}
        f_real = _image_features(image_enc, real_images, batch_size, device)
        f_real = f_real[torch.as_tensor([index[int(i)] for i in caps["images"]])]  # [n, D]
        r = dmgan_rprecision(f_real, e_true, e_pool, classes[caps["images"]], **args)
        out["real"] = {"mean": r["mean"], "std": r["std"], "n": r["n"], "fold_values": r["folds"]}
    return out


def attr_metric(images, caps, ds, data, device="cpu", log=None, attr_steps=None, stage_images=None):
    """Attribute accuracy of uint8 images [n, S, S, 3] generated from `caps` over the attributes each caption
    mentions, per attribute and overall, with the same protocol on the real images as the ceiling; the value mix
    of every image against the real ones (marginals), where wrong colours come from (misplaced_colours) and whether
    stated colours spill onto parts the caption leaves free (leaked_colours).
    stage_images: the earlier stages' uint8 images of the same captions, each scored as well (per_stage)."""
    from t2icli.metrics.attributes import (attribute_marginals, leaked_colours, load_or_train_classifier,
                                           mentioned_accuracy, misplaced_colours, predict_attributes, stage_readings)

    if ds.attributes is None or ds.caption_mentions is None:
        raise MetricError(f"--data {data}: no attribute truth for split {ds.split}")
    clf, info = load_or_train_classifier(data, device, log=log, steps=attr_steps)
    truth = np.asarray(ds.attributes)[caps["images"]]  # [n, A]
    mentions = np.asarray(ds.caption_mentions)[caps["rows"]]  # [n]
    pred_gen = predict_attributes(clf, images, info["size"], device=device)  # [n, A]
    gen = mentioned_accuracy(pred_gen, truth, mentions, info["names"])
    uniq = np.sort(np.unique(caps["images"]))
    pred_real = predict_attributes(clf, ds.images_uint8[uniq], info["size"], device=device)
    pos = np.searchsorted(uniq, caps["images"])
    real = mentioned_accuracy(pred_real[pos], truth, mentions, info["names"])
    schema = ds.meta["attributes"]
    marginals = attribute_marginals(pred_gen, pred_real[pos], schema)
    bits = (mentions.astype(np.int64)[:, None] >> np.arange(truth.shape[1])) & 1  # [n, A]
    stated = np.where(bits == 1, truth, -1)  # [n, A] the value each caption states, -1 where it says nothing
    extra = {}
    if stage_images is not None:
        extra["per_stage"] = stage_readings(clf, info, stage_images, pred_gen, truth, mentions, device=device,
                                            real_images=ds.images_uint8[caps["images"]])
    return {"metric": "attr", "accuracy": gen["overall"], "n": int(len(images)), "n_mentions": gen["n_mentions"],
            "per_attribute": {k: v["accuracy"] for k, v in gen["per_attribute"].items()},
            "real": {"accuracy": real["overall"],
                     "per_attribute": {k: v["accuracy"] for k, v in real["per_attribute"].items()},
                     "all_attributes": info["real_test"]["overall"]},
            "marginals": marginals, "marginal_tv": {k: v["tv"] for k, v in marginals.items()},
            "misplaced_colours": misplaced_colours(pred_gen, stated, schema),
            "leaked_colours": {"generated": leaked_colours(pred_gen, stated, schema),
                               "real": leaked_colours(pred_real[pos], stated, schema)}, **extra,
            "classifier": info["path"], "classifier_recipe": info["recipe"],
            "classifier_shipped": bool(info.get("shipped")),
            "protocol": "accuracy over the attributes each caption mentions (micro average); real = the same "
                        "captions' real images; marginals: the share of each value among the classifier's "
                        "predictions on every generated image and on the same rows' real images, with their "
                        "total variation distance (marginal_tv); misplaced_colours: of the mentioned colours drawn "
                        "wrong (where the caption names another part's different colour), the share drawn in such "
                        "a colour, with its chance level; leaked_colours: of the colour parts a caption leaves "
                        "free (where it states another part's colour), the share drawn in a stated colour, on the "
                        "generated and on the same rows' real images"
                        + ("; per_stage: the same accuracy on each earlier stage's images (resized to the "
                           "classifier's side) and their predictions' agreement with the last stage's, every "
                           "image; real: the same rows' real images shrunk to the stage's side"
                           if stage_images is not None else "")}


def fid_stats_only(data, *, backbone, inception_weights, batch_size=50, device="cpu", progress=None, log=None):
    """Write (or find) the FID reference statistics of the real test split; returns a JSON-able dict."""
    from t2icli.data import load_meta
    from t2icli.metrics.fid import build_backbone, reference_stats

    split = _test_split(load_meta(data))
    model, info = build_backbone(backbone, inception_weights, device)
    _, _, ref = reference_stats(data, split, model, info, batch_size, device, progress, log)
    return dict({"metric": "fid", "stats_only": True, "path": ref["path"], "key": ref["key"], "n": ref["n"],
                 "cached": ref["cached"], "split": split}, **info)


def evaluate(metrics, model_run, data, *, n_samples=30000, damsm=None, inception_weights=None, num_classes=1000,
             fid_backbone="fid-inception", splits=10, seed=0, batch_size=50, device="cpu", progress=None, log=None,
             skip=None, attr_steps=None, text_embeddings=None, word_limit=None, is_backbone="auto", fid_steps=None,
             stage="last"):
    """Run `metrics` (names from METRICS) on images generated by RUN `model_run` from the test captions of `data`.

    Images are generated once (n_samples, cycling over the test captions, noise (seed, j)), truncated to uint8
    as the references save them, and shared by every metric; captions are cut to `word_limit` words (None: the
    evaluation configs' 25, 20 for COCO). attr_steps overrides the attribute classifier's training steps.
    text_embeddings: the test split's char-CNN-RNN embeddings file, which conditions a model trained on
    --text-embeddings instead of encoding the captions (the metrics score the images against the captions as
    usual). is_backbone: the IS network (inception_score.IS_BACKBONES); fid_backbone "data" uses the data set's own
    feature network (metrics/data_fid.py, trained for fid_steps steps); stage "all" adds the attribute accuracy of
    every earlier stage's images to attr's result (per_stage). Returns a list of per-metric dicts (a
    {"metric", "skipped": reason} entry for those in `skip`); each records "word_limit" and "uint8".
    """
    from t2icli.metrics.generate import EVAL_UINT8, generate_from_test_captions, load_model

    skip = dict(skip or {})
    todo = [m for m in metrics if m not in skip]
    model = load_model(model_run, device)
    damsm_run = _damsm_path(model, damsm, model_run) if "rprecision" in todo else None
    images, caps, ds = (None, None, None)
    if todo:
        if log:
            log(f"generating {n_samples} images from the test captions of {data}")
        images, caps, ds = generate_from_test_captions(model, data, n_samples, seed, batch_size=batch_size,
                                                       progress=progress, text_embeddings=text_embeddings,
                                                       word_limit=word_limit, all_stages=stage == "all")
    earlier = None
    if stage == "all" and images is not None:
        images, earlier = images[-1], images[:-1]
    results = []
    for m in metrics:
        if m in skip:
            results.append({"metric": m, "skipped": skip[m]})
        elif m == "rprecision":
            results.append(rprecision_metric(images, caps, ds, damsm_run, seed, batch_size, device, log=log))
        elif m == "attr":
            results.append(attr_metric(images, caps, ds, data, device, log=log, attr_steps=attr_steps,
                                       stage_images=earlier))
        elif m == "fid" and fid_backbone == "data":
            from t2icli.metrics.data_fid import data_fid

            results.append(data_fid(images, data, ds.split, seed=seed, device=device, log=log, steps=fid_steps))
        elif m == "fid":
            from t2icli.metrics.fid import fid_of_images

            results.append(dict(fid_of_images(images, data, ds.split, fid_backbone, inception_weights, batch_size,
                                              device, progress, log), seed=int(seed)))
        elif m == "is":
            from t2icli.metrics.inception_score import inception_score

            results.append(inception_score(images, inception_weights, num_classes, splits, batch_size, device,
                                           progress, seed=seed, backbone=is_backbone))
        else:
            raise MetricError(f"unknown metric {m!r}; choose from {', '.join(METRICS)}")
    for r in results:
        r.setdefault("model", os.path.abspath(os.fspath(model_run)))
        r.setdefault("kind", model.kind)
        if ds is not None and "skipped" not in r:
            r.setdefault("word_limit", int(ds.word_limit))
            r.setdefault("uint8", EVAL_UINT8)
        if text_embeddings is not None:
            r.setdefault("text_embeddings", os.path.abspath(os.fspath(text_embeddings)))
    return results
