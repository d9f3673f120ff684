"""The model card `t2i serve` shows: which generator is loaded, on what data and how far it trained, with its eval figures.

Everything beyond the export itself is optional: the run folder's run.json / config.json (the data set), stats.jsonl
(the training R-precision of the last snapshot) and eval.json (`t2i eval --json` output) are read when present and
readable, and a problem with one of them becomes a line in the card's "notes" rather than an error.
"""

import json
import os

__all__ = ["model_card", "eval_figures"]

_LABELS = {"rprecision": "R-precision", "attr": "attribute accuracy", "fid": "FID", "is": "Inception Score"}


def _read_json(path, notes):
    """The JSON value in file `path`, or None when it is absent or unreadable (then a note says why)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        notes.append(f"{path}: unreadable ({exc.__class__.__name__}: {exc}); ignored")
        return None


def _number(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def eval_figures(blob):
    """The headline figure of each metric in a `t2i eval --json` object (one metric, or {"metric": "all",
    "metrics": {...}}), as a list of {"metric", "label", "value", "std", "n", "real"} (std/n/real None when absent).
    Skipped metrics and entries without a number are left out."""
    if not isinstance(blob, dict):
        return []
    entries = list(blob["metrics"].values()) if isinstance(blob.get("metrics"), dict) else [blob]
    out = []
    for r in entries:
        if not isinstance(r, dict) or "skipped" in r or r.get("stats_only"):
            continue
        name = str(r.get("metric", "?"))
        value = next((_number(r.get(k)) for k in ("mean", "accuracy", "value") if _number(r.get(k)) is not None), None)
        if value is None:
            continue
        real = r.get("real") if isinstance(r.get("real"), dict) else {}
        real_value = next((_number(real.get(k)) for k in ("mean", "accuracy") if _number(real.get(k)) is not None),
                          None)
        out.append({"metric": name, "label": _LABELS.get(name, name), "value": value, "std": _number(r.get("std")),
                    "n": _number(r.get("n")), "real": real_value})
    return out


def _last_rprecision(stats_path, notes):
    """{"step", "mean", "std", "n"} of the last stats.jsonl record with a generated-image R-precision, or None."""
    if not os.path.isfile(stats_path):
        return None
    last, bad = None, 0
    try:
        with open(stats_path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    bad += 1  # e.g. the half-written last line of a killed run
                    continue
                rp = rec.get("gen_rprecision") if isinstance(rec, dict) else None
                if isinstance(rp, dict) and _number(rp.get("mean")) is not None:
                    last = {"step": rec.get("step"), "mean": rp["mean"], "std": _number(rp.get("std")),
                            "n": _number(rp.get("n"))}
    except (OSError, UnicodeDecodeError) as exc:
        notes.append(f"{stats_path}: unreadable ({exc}); ignored")
        return None
    if bad:
        notes.append(f"{stats_path}: {bad} unreadable line(s) skipped")
    return last


def _dataset(model, records, notes):
    """{"source", "path", "image_size", "train_images"} of the data the model was trained on, as far as known.
    records: the run's run.json and config.json dicts (either may be None)."""
    path = model.config.get("data") or next((r["data"] for r in records if r and isinstance(r.get("data"), str)), None)
    meta = None
    if path and os.path.isfile(os.path.join(path, "dataset.json")):
        meta = _read_json(os.path.join(path, "dataset.json"), notes)
    if not isinstance(meta, dict):  # the data folder is elsewhere (a shipped model): the run's own record of it
        meta = next((r["dataset"] for r in records if r and isinstance(r.get("dataset"), dict)), {})
    splits = meta.get("splits") if isinstance(meta.get("splits"), dict) else {}
    train = splits.get("train") if isinstance(splits.get("train"), dict) else {}
    return {"source": meta.get("source"), "path": path,
            "image_size": meta.get("image_size"), "train_images": train.get("images")}


def model_card(model, model_run, pretrained=False):
    """What `GET /api/model` answers and the page shows.

    model: the loaded GeneratorModel; model_run: the --model path (run folder or its generator.pt); pretrained: True
    for the shipped model. Returns {"kind", "run", "pretrained", "attention", "stages", "sizes", "steps", "ema",
    "text_source", "captions" (bool: can it embed new captions), "captions_error" (why not, or None), "vocab_size",
    "word_limit", "data": {...}, "eval": [eval_figures of RUN/eval.json], "training_rprecision": {...} or None,
    "device", "notes": [problems with the optional files]}.
    """
    from t2icli.metrics.common import MetricError

    run = os.path.abspath(model_run if os.path.isdir(model_run) else os.path.dirname(os.path.abspath(model_run)))
    notes = []
    records = [_read_json(os.path.join(run, name), notes) for name in ("run.json", "config.json")]
    records = [r if isinstance(r, dict) else None for r in records]
    evaluation = _read_json(os.path.join(run, "eval.json"), notes)
    training = _last_rprecision(os.path.join(run, "stats.jsonl"), notes)
    steps = model.config.get("step")
    if steps is None and training is not None:
        steps = training.get("step")
    try:
        model.check_captions()
        captions_error = None
    except MetricError as exc:
        captions_error = str(exc)
    return {
        "kind": model.kind, "run": run, "pretrained": bool(pretrained), "attention": bool(model.attention),
        "stages": len(model.sizes), "sizes": [int(s) for s in model.sizes], "steps": steps,
        "ema": model.config.get("ema"), "text_source": model.text_source, "captions": captions_error is None,
        "captions_error": captions_error, "vocab_size": len(model.vocab),
        "word_limit": (model.config.get("damsm_config") or {}).get("word_limit"),
        "data": _dataset(model, records, notes), "eval": eval_figures(evaluation), "training_rprecision": training,
        "device": str(model.device), "notes": notes,
    }
