"""What does a DAMSM see besides a bird's class? Within-class caption retrieval on a toybirds test split.

    python scripts/probe_damsm.py --damsm runs/damsm --data data/toybirds

For every test image (with the caption the evaluation order gives it), its caption competes with the captions of the
other test images of its class (same body x wing colour): top-1 rate of the DAMSM's sentence cosine, against chance
(1 / class size) and an oracle that reads the attribute truth (a caption is a hit if its stated facts fit the image;
ties share the hit; captions state only some facts, so the oracle is well below 1). A DAMSM trained with AttnGAN's
same-class mask never sees such pairs as negatives: this is how far it still tells crowns, bellies, beaks, sizes and
backgrounds apart.

And does it bind each colour to its part? "a red bird with blue wings" and "a blue bird with red wings" hold the same
words. For every test image whose body and wing colours differ, its own caption is scored against each caption of the
test images with the two colours swapped (`swapped_pairwise`: the share of those pairs the own caption wins; 0.5 is a
bag of words) and, for contrast, against the captions of images that share neither colour (`other_pairwise`).

And does it see the attributes the class does not fix? For every caption that states a crown, belly or beak colour,
a beak length, a size or a background, its own image is scored against the images of its class that fit every
other fact it states but differ in that one (`attribute_pairwise`: per attribute, the share of those pairs the own
image wins and how many captions had such images; 0.5: the DAMSM does not see it). The shipped 4000-step DAMSM
(caption edits, word shuffle): crown 0.71, belly 0.73, beak 0.59, beak length 0.45, size 0.84, background 0.70; the
one shipped before (caption edits only): 0.67, 0.72, 0.57, 0.48, 0.83, 0.67.

And does it know where each colour is? `part_pairwise`: each caption's own image scores "a red crown" against "a red
belly" when the belly is not red (per stated part; 0.5: the place is not seen). Text alone helps where the new
phrase is one the grammar never writes ("a long yellow crown": the beak). The shipped DAMSM: crown 0.70, belly 0.76,
beak 0.83, body 0.998; the one shipped before: 0.68, 0.63, 0.88, 0.996.
And in other words? With `--captions FILE` (a `t2i eval --captions` file whose lines name their image, e.g.
`python scripts/paraphrases.py`'s held-out paraphrases, or its `--own` file for the data set's phrasings),
`captions_swapped_pairwise`: for each line stating two colour attributes (body, wing, crown, belly, beak) of
different colours, its real image scores the line against the line with those two colour words exchanged ("its
wings are white but its body is purple" -> "its wings are purple but its body is white"): the share of lines the
image prefers as written (0.5: the colours are read, not their places). The shipped DAMSM (`--word-shuffle 0.5`):
0.990 on its own phrasings (n=1914), 0.950 on `paraphrases.py --n 1000`'s (n=952); the one shipped before: 0.994 and
0.902.
And what do its image features hold at all? With `--image-probe`, a linear probe (multinomial logistic regression,
fitted on the train split's real images, scored on --split's) reads each attribute from the image encoder's global
feature f_bar and from its local features pooled over the regions (mean and max): `image_probe`, per attribute, the
share of test images whose value it reads (chance 0.1 for a colour). A fact the features do not hold is one the DAMSM
term cannot ask the generator for. The shipped DAMSM, pooled local features: body 0.99, wing 1.00, crown 0.80, belly
0.97, beak 0.49, beak length 0.72, size 1.00, background 0.98 (global: crown 0.44, belly 0.56, beak 0.25); the
demo's (swapped negatives, no edits) beak 0.21; the attribute classifier of `t2i eval`, a CNN trained on the labels,
reads the beak colour of 0.93 of the same images.
Prints one JSON object on stdout.
"""

import argparse
import json
import re

import numpy as np
import torch

from t2icli.data import PreparedDataset
from t2icli.data.negatives import WORD_KINDS
from t2icli.losses import sentence_scores
from t2icli.metrics.rprecision import encode_dataset
from t2icli.models.export import load_damsm


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--damsm", required=True, help="DAMSM run folder (or its damsm.pt)")
    ap.add_argument("--data", required=True, help="prepared toybirds folder the DAMSM was trained on")
    ap.add_argument("--split", default="test")
    ap.add_argument("--captions", action="append", default=[], metavar="FILE",
                    help="also score colour binding on this captions file (lines naming their image); repeatable")
    ap.add_argument("--image-probe", action="store_true",
                    help="also read each attribute from the image encoder's features by a linear probe (a minute)")
    args = ap.parse_args()
    text_enc, image_enc, _, vocab = load_damsm(args.damsm)
    ds = PreparedDataset(args.data, args.split, train=False)
    if list(vocab) != list(ds.vocab):
        raise SystemExit(f"probe_damsm: {args.damsm} was trained on another vocabulary than {args.data}")
    if ds.attributes is None or ds.caption_mentions is None:
        raise SystemExit(f"probe_damsm: {args.data} has no attribute truth (toybirds has)")
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it["images"][-1] for it in items])  # [n, 3, S, S]
    tokens = torch.stack([it["tokens"] for it in items])  # [n, T]
    lengths = torch.tensor([it["length"] for it in items])  # [n]
    f_bar, e_bar = encode_dataset((text_enc, image_enc), images, tokens, lengths)  # [n, D] each
    scores = sentence_scores(f_bar, e_bar).numpy()  # [n images, n captions] cosines
    attrs, mentions = ds.attributes, ds.caption_mentions  # [n, K], [captions]
    K = attrs.shape[1]
    stated = np.array([[(mentions[ds.image_captions[i] + it["caption"]] >> k) & 1 for k in range(K)]
                       for i, it in enumerate(items)], bool)  # [n, K] facts each image's caption states
    classes = np.asarray(ds.class_ids)
    hits, chance, oracle = [], [], []
    for i in range(len(items)):
        same = np.nonzero(classes == classes[i])[0]
        if len(same) < 2:
            continue
        true = int(np.nonzero(same == i)[0][0])
        hits.append(float(scores[i, same].argmax() == true))
        chance.append(1.0 / len(same))
        fits = np.array([np.all(attrs[j][stated[j]] == attrs[i][stated[j]]) for j in same])  # caption j fits image i
        oracle.append(1.0 / fits.sum())  # the true caption always fits
    names = [a["name"] for a in ds.meta["attributes"]]
    body, wing = attrs[:, names.index("body")], attrs[:, names.index("wing")]  # [n] colour indices
    own = np.diag(scores)  # [n] each image's score with its own caption
    swapped, other = [], []
    for i in np.nonzero(body != wing)[0]:
        swap = (body == wing[i]) & (wing == body[i])
        unrelated = (body != body[i]) & (wing != wing[i]) & ~swap
        for hits_of, negatives in ((swapped, swap), (other, unrelated)):
            if negatives.any():
                hits_of.append(float((own[i] > scores[i, negatives]).mean()))
    # Per attribute beyond the class: for each caption that states attribute k, its own image against the images of
    # its class that fit every other fact it states but differ in k (0.5: the DAMSM does not see k)
    per_attribute = {}
    for k, name in enumerate(names):
        if name in ("body", "wing"):
            continue
        wins = []
        for i in np.nonzero(stated[:, k])[0]:
            others = stated[i].copy()
            others[k] = False
            fit = np.all(attrs[:, others] == attrs[i, others], axis=1) & (classes == classes[i])
            negatives = fit & (attrs[:, k] != attrs[i, k])
            if negatives.any():
                wins.append(float((own[i] > scores[negatives, i]).mean()))
        per_attribute[name] = {"pairwise": round(float(np.mean(wins)), 4) if wins else None, "n": len(wins)}
    parts = part_pairwise(text_enc, image_enc, images, tokens, lengths, f_bar, own, attrs, stated, names, vocab)
    files = {f: captions_swapped_pairwise(text_enc, ds, f_bar, f) for f in args.captions}
    print(json.dumps({"damsm": args.damsm, "data": args.data, "split": args.split, "n": len(hits),
                      "within_class_top1": round(float(np.mean(hits)), 4), "chance": round(float(np.mean(chance)), 4),
                      "oracle": round(float(np.mean(oracle)), 4),
                      "all_top1": round(float((scores.argmax(1) == np.arange(len(items))).mean()), 4),
                      "swapped_pairwise": round(float(np.mean(swapped)), 4) if swapped else None,
                      "n_swapped": len(swapped),
                      "other_pairwise": round(float(np.mean(other)), 4) if other else None,
                      "attribute_pairwise": per_attribute, "part_pairwise": parts,
                      **({"captions_swapped_pairwise": files} if files else {}),
                      **({"image_probe": image_probe(image_enc, args.data, ds, names)} if args.image_probe else {})}))


def image_features(image_enc, ds, batch_size=500):
    """Real images of split ds -> {"global": f_bar [n, D], "local_pooled": [mean ; max] of f over regions [n, 2D]}."""
    from t2icli.metrics.common import uint8_batches

    out = {"global": [], "local_pooled": []}
    with torch.no_grad():
        for _, batch in uint8_batches(ds.images_uint8, batch_size):  # uint8 [b, S, S, 3]
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [b, 3, S, S] in [-1, 1]
            f, f_bar = image_enc(x)  # [b, D, H, W], [b, D]
            out["global"].append(f_bar)
            out["local_pooled"].append(torch.cat([f.flatten(2).mean(2), f.flatten(2).amax(2)], 1))
    return {k: torch.cat(v) for k, v in out.items()}


def linear_probe(x_train, y_train, x_test, y_test, n_values, l2=1e-3, iters=200):
    """Multinomial logistic regression on standardised features x [n, F] -> labels y [n] (values < n_values), by
    L-BFGS with an L2 penalty; returns the share of test rows whose label it predicts."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    y = torch.as_tensor(y_train, dtype=torch.long)
    W = torch.zeros(x_train.shape[1], n_values, requires_grad=True)
    b = torch.zeros(n_values, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=iters)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x_train @ W + b, y) + l2 * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((x_test @ W + b).argmax(1) == torch.as_tensor(y_test, dtype=torch.long)).float().mean())


def image_probe(image_enc, data, test_ds, names):
    """--image-probe: per attribute, the share of test_ds's real images whose value a linear probe reads from the
    image encoder's features (fitted on the train split's real images)."""
    train_ds = PreparedDataset(data, "train", train=False)
    image_enc.eval()
    train, test = image_features(image_enc, train_ds), image_features(image_enc, test_ds)
    values = [len(a["values"]) for a in test_ds.meta["attributes"]]
    res = {"protocol": "multinomial logistic regression (L-BFGS, L2 1e-3) on standardised real-image features, fitted "
                       f"on the {len(train_ds)} train images, scored on the {len(test_ds)} {test_ds.split} images",
           "n_train": len(train_ds), "n_test": len(test_ds)}
    for kind in ("global", "local_pooled"):
        res[kind] = {name: round(linear_probe(train[kind], train_ds.attributes[:, k], test[kind],
                                              test_ds.attributes[:, k], values[k]), 4)
                     for k, name in enumerate(names)}
    return res


def part_pairwise(text_enc, image_enc, images, tokens, lengths, f_bar, own, attrs, stated, names, vocab):
    """Does it know where each colour is? For every caption that states a crown, belly, beak or body colour with
    that part's noun ("a red crown"), its own image scores the caption against the same caption with the noun of
    another part whose colour differs ("a red belly", false for this bird): per stated part, the share of those
    pairs the own caption wins (0.5: the colour's place is not seen). `--hard-negatives` trains on such edits
    (data/negatives.py WORD_KINDS["part"]); this scores them on test images."""
    index = {w: i for i, w in enumerate(vocab)}
    part_names = [syn[0] for syn in WORD_KINDS["part"]]  # crown, belly, beak, body: the attributes' names
    part_of = {index[w]: p for p, syn in zip(part_names, WORD_KINDS["part"]) for w in syn if w in index}
    noun = {p: next((index[w] for w in syn if w in index), None) for p, syn in zip(part_names, WORD_KINDS["part"])}
    rows, edited, source = [], [], []
    for i in range(len(tokens)):
        for t in range(int(lengths[i])):
            p = part_of.get(int(tokens[i, t]))
            if p is None or not stated[i, names.index(p)]:
                continue
            for q in part_names:
                if q == p or noun[q] is None or attrs[i, names.index(q)] == attrs[i, names.index(p)]:
                    continue
                row = tokens[i].clone()
                row[t] = noun[q]
                rows.append(i)
                edited.append(row)
                source.append(p)
    if not rows:
        return {}
    rows = np.array(rows)
    _, e_edit = encode_dataset((text_enc, image_enc), images[rows], torch.stack(edited), lengths[rows])  # [m, D]
    edit_scores = torch.nn.functional.cosine_similarity(f_bar[rows], e_edit, dim=1).numpy()  # [m]
    wins = own[rows] > edit_scores
    source = np.array(source)
    return {p: {"pairwise": round(float(wins[source == p].mean()), 4), "n": int((source == p).sum())}
            for p in part_names if (source == p).any()}


def swap_words(text, a, b):
    """`text` (lower-cased) with every whole word `a` and `b` exchanged ("gray" also matches "grey")."""
    pattern = {w: r"gr[ae]y" if w == "gray" else re.escape(w) for w in (a, b)}
    return re.sub(rf"\b({pattern[a]}|{pattern[b]})\b",
                  lambda m: b if re.fullmatch(pattern[a], m.group(0)) else a, text.lower())


def captions_swapped_pairwise(text_enc, ds, f_bar, path, seed=0):
    """--captions FILE: for each line stating two colour attributes of different colours (one such pair drawn per
    line with `seed`), does its real image prefer the line to the line with the two colour words exchanged?
    Returns {"pairwise", "n"} (0.5: colours read without their places)."""
    from t2icli.data.text import Vocab
    from t2icli.metrics.captions_file import encode_captions, read_captions_file
    from t2icli.metrics.generate import eval_word_limit
    from t2icli.metrics.rprecision import encode_texts

    lines = read_captions_file(path, ds.meta["attributes"], ds.image_files(), ds.attributes)
    schema = {a["name"]: a["values"] for a in ds.meta["attributes"]}
    names = [a["name"] for a in ds.meta["attributes"]]
    colour_parts = [a["name"] for a in ds.meta["attributes"] if a.get("kind") == "color"]  # body, wing, crown, ...
    rng = np.random.default_rng(seed)
    texts, swapped, rows = [], [], []
    for text, values, image in zip(lines["texts"], lines["values"], lines["images"]):
        colours = {p: schema[p][values[names.index(p)]] for p in colour_parts
                   if image >= 0 and values[names.index(p)] >= 0}
        pairs = [(p, q) for p in colours for q in colours if p < q and colours[p] != colours[q]]
        if not pairs:
            continue
        p, q = pairs[rng.integers(len(pairs))]
        other = swap_words(text, colours[p], colours[q])
        if other != text.lower():
            texts.append(text.lower())
            swapped.append(other)
            rows.append(int(image))
    if not rows:
        return {"pairwise": None, "n": 0}
    vocab, feats = Vocab(ds.vocab), []
    for t in (texts, swapped):  # cut as `t2i eval --captions` cuts them
        tok, lengths, _ = encode_captions(t, vocab, eval_word_limit(ds.meta), seed)
        feats.append(encode_texts(text_enc, tok, lengths, batch_size=500))
    img = f_bar[torch.as_tensor(rows)]
    wins = torch.nn.functional.cosine_similarity(img, feats[0], dim=1) > torch.nn.functional.cosine_similarity(
        img, feats[1], dim=1)
    return {"pairwise": round(float(wins.float().mean()), 4), "n": len(rows)}


if __name__ == "__main__":
    main()
