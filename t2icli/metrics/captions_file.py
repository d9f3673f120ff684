"""Attribute accuracy on a captions file: images generated from a user's own phrasings, scored on what each line states.

The file (``t2i eval --metric attr --captions FILE``) holds one JSON object per line:

    {"text": "the wings are blue and its body is red", "attributes": {"body": "red", "wing": "blue"}}

``attributes`` are the facts the text states, by attribute and value name of the data set's schema
(dataset.json "attributes"); an optional ``"image": "test/000123"`` names the test image the line describes
(its true attributes must agree), which adds the real-image ceiling to the result; an optional ``"group":
"telegraphic"`` labels the line (a kind of wording, a source), and the result then gives the accuracy of each
group beside the whole file's. Empty lines are skipped.
Line j (0-based, counting captions only) is generated with the noise of (seed, j) and, when it has more words
than the word limit, cut with the rng of (seed, j), exactly as `t2i eval` treats test caption j, so a file of
the data set's own first n test captions gives the numbers of `t2i eval --n-samples n`. Words outside the
model's vocabulary are dropped before encoding (as everywhere in t2i); the result counts them, so a phrasing
the model cannot read shows up as such and not only as a lower accuracy.
"""

import json
import os
from collections import Counter

import numpy as np

from t2icli.metrics.common import MetricError

__all__ = ["read_captions_file", "encode_captions", "captions_attr_metric", "KEYS"]

KEYS = ("text", "attributes", "image", "group")  # what a line may hold


def _fail(path, line_no, message):
    raise MetricError(f"--captions {path} line {line_no}: {message}")


def read_captions_file(path, schema, image_files=None, image_attributes=None):
    """Read and check a captions file against the attribute schema (dataset.json "attributes": [{name, values}]).

    image_files: the split's image file names [N] ("test/000123"), image_attributes: int [N, A] their truth;
    needed only when lines name an "image". Returns {"texts": [n] str, "values": int64 [n, A] (value index, -1 =
    not stated), "mentions": int64 [n] (bit k: attribute k stated), "images": int64 [n] (image index, -1 = none),
    "line_numbers": [n] (1-based line of each caption), "groups": [n] str or None}. Raises MetricError naming the
    file and line.
    """
    path = os.fspath(path)
    names = [a["name"] for a in schema]
    index = {name: k for k, name in enumerate(names)}
    file_index = {f: i for i, f in enumerate(image_files)} if image_files is not None else {}
    texts, values, mentions, images, line_numbers, groups = [], [], [], [], [], []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MetricError(f"--captions {path}: unreadable ({exc})") from None
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            _fail(path, line_no, f"not a JSON object ({exc})")
        if not isinstance(obj, dict):
            _fail(path, line_no, 'expected a JSON object {"text": ..., "attributes": {...}}')
        unknown = sorted(set(obj) - set(KEYS))
        if unknown:
            _fail(path, line_no, f"unknown key(s) {', '.join(map(repr, unknown))}; a line holds {', '.join(KEYS)}")
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            _fail(path, line_no, '"text" must be a non-empty string')
        stated = obj.get("attributes")
        if not isinstance(stated, dict) or not stated:
            _fail(path, line_no, '"attributes" must be an object naming at least one attribute the text states, '
                                 'e.g. {"body": "red", "wing": "blue"}')
        row = np.full(len(names), -1, dtype=np.int64)
        for name, value in stated.items():
            if name not in index:
                _fail(path, line_no, f"unknown attribute {name!r}; this data set has {', '.join(names)}")
            allowed = schema[index[name]]["values"]
            if value not in allowed:
                _fail(path, line_no, f"{name}: unknown value {value!r}; choose from {', '.join(allowed)}")
            row[index[name]] = allowed.index(value)
        group = obj.get("group")
        if "group" in obj and (not isinstance(group, str) or not group.strip()):
            _fail(path, line_no, '"group" must be a non-empty string (a label such as "telegraphic")')
        image = -1
        if "image" in obj:
            if obj["image"] not in file_index:
                like = f" (names look like {image_files[0]!r})" if image_files else ""
                _fail(path, line_no, f"image {obj['image']!r} is not an image of the evaluated split{like}")
            image = file_index[obj["image"]]
            truth = np.asarray(image_attributes[image])
            for k in np.flatnonzero(row >= 0).tolist():
                if row[k] != truth[k]:
                    _fail(path, line_no, f"{names[k]}: the line states {schema[k]['values'][row[k]]!r}, but image "
                                         f"{obj['image']} has {schema[k]['values'][int(truth[k])]!r}")
        texts.append(text)
        values.append(row)
        mentions.append(int(sum(1 << k for k in np.flatnonzero(row >= 0).tolist())))
        images.append(image)
        line_numbers.append(line_no)
        groups.append(group)
    if not texts:
        raise MetricError(f"--captions {path}: no captions (one JSON object per line)")
    return {"texts": texts, "values": np.stack(values), "mentions": np.asarray(mentions, np.int64),
            "images": np.asarray(images, np.int64), "line_numbers": line_numbers, "groups": groups}


def encode_captions(texts, vocab, word_limit, seed=0):
    """Token ids of each text as `t2i eval` feeds test caption j: out-of-vocabulary words dropped, then a caption
    longer than word_limit cut to a random ordered subset (rng of (seed, j, 0xC0)); no known word -> one <end>.

    vocab: t2icli.data.text.Vocab. Returns (tokens int64 [n, word_limit], lengths int64 [n], words dict: counts
    of all and out-of-vocabulary words, lines with OOV words, with no known word, cut to the limit, the most
    frequent OOV words).
    """
    from t2icli.data.text import cut_caption, tokenize

    n = len(texts)
    tokens = np.zeros((n, int(word_limit)), np.int64)
    lengths = np.zeros(n, np.int64)
    oov_counts = Counter()
    total = with_oov = no_known = cut = 0
    for j, text in enumerate(texts):
        ids, oov = vocab.encode(text)
        total += len(tokenize(text))
        oov_counts.update(oov)
        with_oov += bool(oov)
        cut += len(ids) > word_limit
        if not ids:
            no_known += 1
            ids = [0]  # as test_captions: one <end> token, length 1
        tokens[j], lengths[j] = cut_caption(ids, int(word_limit), np.random.default_rng([int(seed), j, 0xC0]))
    n_oov = sum(oov_counts.values())
    words = {"total": total, "out_of_vocabulary": n_oov, "oov_fraction": n_oov / total if total else 0.0,
             "captions_with_oov": with_oov, "captions_without_known_words": no_known,
             "captions_cut_to_word_limit": cut, "word_limit": int(word_limit),
             "most_frequent_oov": [[w, c] for w, c in sorted(oov_counts.items(), key=lambda x: (-x[1], x[0]))[:20]]}
    return tokens, np.maximum(lengths, 1), words


def captions_attr_metric(model_run, data, captions, *, seed=0, batch_size=50, device="cpu", attr_steps=None,
                         progress=None, log=None, stage="last"):
    """Attribute accuracy of images generated by RUN `model_run` from the lines of captions file `captions`,
    scored by the attribute classifier of prepared dataset `data` on the attributes each line states.

    Returns the JSON-able dict of `t2i eval --metric attr` (accuracy, per_attribute, n, n_mentions, classifier,
    ...) plus "captions" (the file), "words" (out-of-vocabulary counts, see encode_captions) and, when every line
    names its image, "real" (the same attributes scored on those real images); "misplaced_colours" (of the stated
    colours drawn wrong, the share drawn in another part's stated colour: attributes.misplaced_colours); when lines
    name a "group", "by_group" {group: {"accuracy", "lines", "n_mentions", "misplaced", "wrong_colours"}} (lines
    without one under "(none)"); with stage "all", "per_stage" (attributes.stage_readings).
    """
    from t2icli.data import PreparedDataset, load_meta
    from t2icli.data.text import Vocab
    from t2icli.metrics.attributes import (load_or_train_classifier, mentioned_accuracy, misplaced_colours,
                                           predict_attributes, stage_readings)
    from t2icli.metrics.generate import EVAL_UINT8, eval_word_limit, load_model, to_uint8

    meta = load_meta(data)
    schema = meta.get("attributes")
    if not schema:
        raise MetricError(f"--captions: --data {data} has no attribute schema to check the file against (toybirds has)")
    split = "test" if "test" in meta["splits"] else "train"
    word_limit = eval_word_limit(meta)  # as `t2i eval` cuts the test captions
    ds = PreparedDataset(data, split, train=False, seed=seed, word_limit=word_limit)
    lines = read_captions_file(captions, schema, ds.image_files(), ds.attributes)
    model = load_model(model_run, device)
    if list(ds.vocab) != list(model.vocab):
        raise MetricError(f"--model was trained on a different vocabulary ({len(model.vocab)} words) than --data "
                          f"{os.fspath(data)} ({len(ds.vocab)} words)")
    tokens, lengths, words = encode_captions(lines["texts"], Vocab(model.vocab), word_limit, seed)
    if log:
        log(f"generating {len(tokens)} images from {captions} ({words['out_of_vocabulary']} of {words['total']} "
            "words out of the vocabulary, dropped)")
    out = []
    for s in range(0, len(tokens), batch_size):
        idx = np.arange(s, min(s + batch_size, len(tokens)))
        x = model.generate(tokens[idx], lengths[idx], idx, seed=seed, batch_size=batch_size)
        out.append([to_uint8(im, "truncate") for im in (x["images"] if stage == "all" else x["images"][-1:])])
        if progress:
            progress(int(idx[-1]) + 1, len(tokens))
    stages = [np.concatenate([b[i] for b in out]) for i in range(len(out[0]))]
    images = stages[-1]

    clf, info = load_or_train_classifier(data, device, log=log, steps=attr_steps)
    truth = np.maximum(lines["values"], 0)  # unstated entries are masked out by `mentions`
    pred = predict_attributes(clf, images, info["size"], device=device)  # [n, A]
    gen = mentioned_accuracy(pred, truth, lines["mentions"], info["names"])
    result = {"metric": "attr", "captions": os.path.abspath(os.fspath(captions)), "accuracy": gen["overall"],
              "n": int(len(images)), "n_mentions": gen["n_mentions"],
              "per_attribute": {k: v["accuracy"] for k, v in gen["per_attribute"].items()},
              "per_attribute_n": {k: v["n"] for k, v in gen["per_attribute"].items()}, "words": words,
              "misplaced_colours": misplaced_colours(pred, lines["values"], schema)}
    if stage == "all":  # (the ceiling of each stage when every line names its image)
        real = ds.images_uint8[lines["images"]] if (lines["images"] >= 0).all() else None
        result["per_stage"] = stage_readings(clf, info, stages[:-1], pred, truth, lines["mentions"], device=device,
                                             real_images=real)
    if any(g is not None for g in lines["groups"]):
        label = np.array([g if g is not None else "(none)" for g in lines["groups"]])
        result["by_group"] = {}
        for g in sorted(set(label.tolist())):
            sel = label == g
            acc = mentioned_accuracy(pred[sel], truth[sel], lines["mentions"][sel], info["names"])
            bound = misplaced_colours(pred[sel], lines["values"][sel], schema)
            result["by_group"][g] = {"accuracy": acc["overall"], "lines": int(sel.sum()),
                                     "n_mentions": acc["n_mentions"], "misplaced": bound["misplaced"],
                                     "wrong_colours": bound["wrong"]}
    if (lines["images"] >= 0).all():
        uniq = np.unique(lines["images"])
        pred_real = predict_attributes(clf, ds.images_uint8[uniq], info["size"], device=device)
        real = mentioned_accuracy(pred_real[np.searchsorted(uniq, lines["images"])], truth, lines["mentions"],
                                  info["names"])
        result["real"] = {"accuracy": real["overall"],
                          "per_attribute": {k: v["accuracy"] for k, v in real["per_attribute"].items()},
                          "all_attributes": info["real_test"]["overall"]}
    result.update({
        "classifier": info["path"], "classifier_recipe": info["recipe"], "seed": int(seed), "split": split,
        "protocol": "accuracy over the attributes each line of the captions file states (micro average); line j "
                    "uses the noise of (seed, j); out-of-vocabulary words are dropped before encoding; "
                    "misplaced_colours: of the stated colours drawn wrong (where the line states another part's "
                    "different colour), the share drawn in such a colour"
                    + ("; real = the named images" if "real" in result else ""),
        "uint8": EVAL_UINT8, "model": os.path.abspath(os.fspath(model_run)), "kind": model.kind})
    return result
