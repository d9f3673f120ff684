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
(trained with caption edits): crown 0.67, belly 0.72, beak 0.57, beak length 0.48, size 0.83, background 0.67; the
one shipped before (no edits): 0.65, 0.66, 0.58, 0.48, 0.82, 0.76.

And does it know where each colour is? `part_pairwise`: each caption's own image scores "a red crown" against "a red
belly" when the belly is not red (per stated part; 0.5: the place is not seen). Text alone helps where the new
phrase is one the grammar never writes ("a long yellow crown": the beak). The shipped DAMSM: crown 0.68, belly 0.63,
beak 0.88, body 0.996; the one shipped before: 0.68, 0.52, 0.84, 0.97.
Prints one JSON object on stdout.
"""

import argparse
import json

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
    print(json.dumps({"damsm": args.damsm, "data": args.data, "split": args.split, "n": len(hits),
                      "within_class_top1": round(float(np.mean(hits)), 4), "chance": round(float(np.mean(chance)), 4),
                      "oracle": round(float(np.mean(oracle)), 4),
                      "all_top1": round(float((scores.argmax(1) == np.arange(len(items))).mean()), 4),
                      "swapped_pairwise": round(float(np.mean(swapped)), 4) if swapped else None,
                      "n_swapped": len(swapped),
                      "other_pairwise": round(float(np.mean(other)), 4) if other else None,
                      "attribute_pairwise": per_attribute, "part_pairwise": parts}))


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


if __name__ == "__main__":
    main()
