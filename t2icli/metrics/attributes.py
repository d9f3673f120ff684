"""Attribute accuracy: a small multi-head CNN trained on real images predicts each attribute a caption names.

For data sets with attribute truth (toybirds): one softmax head per attribute of meta["attributes"]
(body/wing/crown/belly/beak colour, beak length, size, background), trained once on the real train
images for a fixed budget and cached in DATA/cache/attr_classifier.pt (keyed by a hash of the training
arrays and the recipe), with its accuracy on the real test split. A generated image is scored on the
attributes its caption mentions (caption_mentions bit k): per attribute and overall (micro average).
"""

import io
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from t2icli.fileio import atomic_torch_save, atomic_write_bytes
from t2icli.metrics.common import MetricError, file_sha256, sha256_of

__all__ = ["AttributeClassifier", "train_attribute_classifier", "load_or_train_classifier", "predict_attributes",
           "mentioned_accuracy", "attribute_marginals", "misplaced_colours", "stage_readings", "shrink_uint8",
           "CACHE_NAME", "RECIPE"]

CACHE_NAME = "attr_classifier.pt"
_FORMAT = "t2i-attr-classifier"
#: The fixed training recipe (part of the cache key).
#: blur_max: per-image Gaussian blur sigma ~ U(0, blur_max) px (at 64 px; scaled with the image side) and noise_max:
#: pixel noise std ~ U(0, noise_max) (in [-1, 1] units), each on a random half of the batch, so that an image is
#: judged by its colours and layout, not by how sharp its edges are (without them a 1.5 px blur of a REAL test
#: image cut body-colour accuracy from 1.00 to 0.69).
RECIPE = {"steps": 1500, "batch_size": 64, "lr": 3e-3, "width": 32, "flip": True, "blur_max": 2.0,
          "noise_max": 0.15, "version": 4}


class AttributeClassifier(nn.Module):
    """x [B, 3, S, S] in [-1, 1] -> one logit vector per attribute: list of [B, V_k].

    conv3x3 (stride first_stride, 2, 2, 1; BN, ReLU; first_stride = S / 32 keeps the cost of 32 px at 64 px) -> global average and max pooling -> FC 256 -> one linear head per
    attribute. Global pooling makes it indifferent to where the bird stands; the convolutions' receptive
    field tells a crown from a belly.
    """

    def __init__(self, num_values, width=32, first_stride=1, n_regress=0):
        super().__init__()
        w = int(width)
        layers, cin = [], 3
        for cout, stride in ((w, int(first_stride)), (2 * w, 2), (4 * w, 2), (4 * w, 1)):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(2 * cin, 256), nn.ReLU(inplace=True))
        self.heads = nn.ModuleList([nn.Linear(256, int(v)) for v in num_values])
        # Optional regression targets (e.g. a toybird's pose) learnt beside the classes (metrics/data_fid.py).
        self.regress = nn.Linear(256, int(n_regress)) if n_regress else None

    def features(self, x):
        """The 256-d penultimate features h [B, 256] (what data-FID compares)."""
        f = self.body(x)  # [B, C, S/4, S/4]
        return self.fc(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))  # [B, 256]

    def forward(self, x):
        h = self.features(x)
        return [head(h) for head in self.heads]


def _to_input(batch_uint8, size, device):
    """uint8 numpy [b, H, W, 3] -> float [b, 3, size, size] in [-1, 1] (antialiased bilinear if resized)."""
    x = torch.from_numpy(np.array(batch_uint8)).to(device).permute(0, 3, 1, 2).float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x / 127.5 - 1.0


def random_blur(x, sigma_max, generator):
    """x [b, C, H, W] -> each image blurred by a separable Gaussian of its own sigma ~ U(0, sigma_max) px
    (reflect padding); a random half of the batch is left sharp."""
    b, c, h, w = x.shape
    sigma = torch.rand(b, generator=generator) * float(sigma_max)  # [b]
    sigma = torch.where(torch.rand(b, generator=generator) < 0.5, torch.zeros_like(sigma), sigma)
    r = max(1, int(math.ceil(3 * float(sigma_max))))
    t = torch.arange(-r, r + 1, dtype=torch.float32)  # [k]
    k = torch.exp(-0.5 * (t[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)  # [b, k]; sigma ~ 0 -> a delta
    k = (k / k.sum(1, keepdim=True)).to(x)
    k = k.repeat_interleave(c, 0)  # [b*C, k]: one kernel per image channel
    y = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)  # horizontal: [1, b*C, H + 2r, W]
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)  # vertical: [1, b*C, H, W]
    return y.reshape(b, c, h, w)


def random_noise(x, std_max, generator):
    """x [b, C, H, W] -> plus Gaussian noise of std ~ U(0, std_max) per image on a random half of the batch."""
    b = x.shape[0]
    std = torch.rand(b, generator=generator) * float(std_max) * (torch.rand(b, generator=generator) < 0.5)  # [b]
    return x + std.to(x)[:, None, None, None] * torch.randn(x.shape, generator=generator).to(x)


def predict_attributes(model, images, size, batch_size=256, device="cpu"):
    """Predicted value index per attribute of uint8 images [n, H, W, 3] -> int64 numpy [n, A]."""
    model.eval()
    preds = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            logits = model(_to_input(np.asarray(images[s : s + batch_size]), size, device))
            preds.append(torch.stack([lg.argmax(1) for lg in logits], 1).cpu().numpy())
    return np.concatenate(preds) if preds else np.zeros((0, len(model.heads)), np.int64)


def mentioned_accuracy(pred, truth, mentions, names):
    """Accuracy over mentioned attributes.

    pred, truth: int [n, A]; mentions: int [n] bitmask (bit k: attribute k is named); names: A names.
    Returns {"overall": float or None, "n_mentions": int, "per_attribute": {name: {"accuracy", "n"}}}.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    A = truth.shape[1]
    bits = (np.asarray(mentions, np.int64)[:, None] >> np.arange(A)) & 1  # [n, A]
    m = bits.astype(bool)
    correct = (pred == truth) & m
    per = {}
    for k, name in enumerate(names):
        nk = int(m[:, k].sum())
        per[name] = {"accuracy": float(correct[:, k].sum() / nk) if nk else None, "n": nk}
    total = int(m.sum())
    return {"overall": float(correct.sum() / total) if total else None, "n_mentions": total, "per_attribute": per}


def attribute_marginals(pred_gen, pred_real, schema):
    """What a generator draws, attribute by attribute, against what the real images show: the share of each value
    among the classifier's predictions on the generated images and on the real images of the same rows, and their
    total variation distance (0: the same mix, 1: disjoint). Unlike accuracy this counts every image, mentioned or
    not, so it shows a value the generator seldom draws (mode dropping) or a shifted one (every bird drawn large).

    pred_gen, pred_real: int [n, A] value indices (row k of both: the same caption's image); schema: A dicts with
    "name" and "values". Returns {name: {"values", "real", "generated", "tv"}}.
    """
    pred_gen, pred_real = np.asarray(pred_gen), np.asarray(pred_real)
    out = {}
    for k, a in enumerate(schema):
        V = len(a["values"])
        g = np.bincount(pred_gen[:, k], minlength=V)[:V] / max(1, len(pred_gen))  # [V]
        r = np.bincount(pred_real[:, k], minlength=V)[:V] / max(1, len(pred_real))  # [V]
        out[a["name"]] = {"values": list(a["values"]), "real": [round(float(x), 4) for x in r],
                          "generated": [round(float(x), 4) for x in g], "tv": float(0.5 * np.abs(g - r).sum())}
    return out


def _colour_names(schema):
    """{attribute index: its value names} of the schema's "color" attributes (they share their value names)."""
    return {k: [str(v) for v in a["values"]] for k, a in enumerate(schema) if a.get("kind") == "color"}


def misplaced_colours(pred, stated, schema):
    """Where the wrong colours come from: of the stated colours a generator got wrong, the share it drew in a colour
    the same caption gives another part ("a red bird with blue wings" drawn with red wings: the colour is bound to
    the wrong part), against chance (a wrong colour drawn at random among the attribute's other values).

    pred: int [n, A] predicted value indices; stated: int [n, A] the value each caption states (-1 = not stated);
    schema: A dicts with "name", "values" and "kind" ("color" attributes share their value names). A wrong colour
    counts only where its caption states another part's colour that differs from it (else it cannot be misplaced).
    Returns {"wrong": wrong stated colours that could be misplaced, "misplaced": their share drawn in another
    stated part's colour (None when there are none), "chance": the mean over them of k / (V - 1), k the caption's
    other colours that differ from the true one, "per_attribute": {name: {"wrong", "misplaced"}}}.
    """
    pred, stated = np.asarray(pred), np.asarray(stated)
    names = _colour_names(schema)
    colour = list(names)
    wrong = {k: [0, 0] for k in colour}  # per attribute: [wrong that could be misplaced, misplaced]
    chance = []
    for i in range(len(pred)):
        said = {k: names[k][stated[i, k]] for k in colour if stated[i, k] >= 0}  # part -> colour name
        for k, true in said.items():
            if pred[i, k] == stated[i, k]:
                continue
            others = {c for part, c in said.items() if part != k and c != true}
            if not others:
                continue
            wrong[k][0] += 1
            wrong[k][1] += names[k][pred[i, k]] in others
            chance.append(len(others) / (len(names[k]) - 1))
    total, hit = sum(w for w, _ in wrong.values()), sum(m for _, m in wrong.values())
    return {"wrong": int(total), "misplaced": hit / total if total else None,
            "chance": float(np.mean(chance)) if chance else None,
            "per_attribute": {schema[k]["name"]: {"wrong": int(w), "misplaced": m / w if w else None}
                              for k, (w, m) in wrong.items()}}


def leaked_colours(pred, stated, schema):
    """Whether a stated colour spills onto a part the caption leaves free ("a blue bird with a yellow beak" drawn
    with yellow wings): of the colour parts a caption does not state, where it states another part's colour, the
    share drawn in one of those stated colours. On real images that share is the data's own coincidence (a free
    part takes any colour), so a generator's share above the same rows' real images' is colour leaking from words
    to parts they do not name.

    pred: int [n, A] predicted value indices; stated: int [n, A] the value each caption states (-1 = not stated);
    schema as misplaced_colours. Returns {"free": free colour parts counted, "leaked": their share drawn in a stated
    colour (None when there are none), "per_attribute": {name: {"free", "leaked"}}}.
    """
    pred, stated = np.asarray(pred), np.asarray(stated)
    names = _colour_names(schema)
    colour = list(names)
    count = {k: [0, 0] for k in colour}  # per attribute: [free parts with a stated colour elsewhere, drawn in one]
    for i in range(len(pred)):
        said = {names[k][stated[i, k]] for k in colour if stated[i, k] >= 0}
        if not said:
            continue
        for k in colour:
            if stated[i, k] < 0:
                count[k][0] += 1
                count[k][1] += names[k][pred[i, k]] in said
    total, hit = sum(c for c, _ in count.values()), sum(h for _, h in count.values())
    return {"free": int(total), "leaked": hit / total if total else None,
            "per_attribute": {schema[k]["name"]: {"free": int(c), "leaked": h / c if c else None}
                              for k, (c, h) in count.items()}}


def shrink_uint8(images, side, batch_size=500):
    """uint8 images [n, S, S, 3] -> uint8 [n, side, side, 3], antialiased bilinear (what a real image looks like at
    an earlier stage's resolution)."""
    out = []
    for s in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[s : s + batch_size])).permute(0, 3, 1, 2).float()  # [b, 3, S, S]
        x = F.interpolate(x, size=(int(side), int(side)), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, int(side), int(side), 3), np.uint8)


def stage_readings(model, info, stage_images, final_pred, truth, mentions, device="cpu", real_images=None):
    """What each earlier stage of a multi-stage generator already draws: the attribute classifier on every stage's
    images (resized to the classifier's side), scored on the attributes each caption mentions, and per attribute
    the share of images whose prediction agrees with the last stage's (over every image, mentioned or not: a
    stage that lost a word is one whose reading the next stage does not keep, or never had).

    stage_images: uint8 [n, s_i, s_i, 3] per earlier stage; final_pred: int [n, A] the
    last stage's predictions; truth: int [n, A]; mentions: int [n] bitmasks; real_images: uint8 [n, S, S, 3] the
    same rows' real images, which shrunk to each stage's side give that stage's ceiling ("real"). Returns a list of
    {"size", "accuracy", "per_attribute", "agreement_with_last"[, "real"]}.
    """
    out = []
    for images in stage_images:
        side = int(images.shape[1])
        pred = predict_attributes(model, images, info["size"], device=device)  # [n, A]
        acc = mentioned_accuracy(pred, truth, mentions, info["names"])
        out.append({"size": int(side), "accuracy": acc["overall"],
                    "per_attribute": {k: v["accuracy"] for k, v in acc["per_attribute"].items()},
                    "agreement_with_last": {name: float(np.mean(pred[:, k] == final_pred[:, k]))
                                            for k, name in enumerate(info["names"])}})
        if real_images is not None:
            real = predict_attributes(model, shrink_uint8(real_images, side), info["size"], device=device)
            out[-1]["real"] = mentioned_accuracy(real, truth, mentions, info["names"])["overall"]
    return out


def train_attribute_classifier(train_images, train_attrs, num_values, size, recipe=None, device="cpu", seed=0,
                               log=None, regress=None):
    """Train a classifier on uint8 images [n, S, S, 3] with truth int [n, A] for recipe["steps"] steps.

    Random horizontal flips (a bird's attributes do not depend on which way it faces), and on random halves of each
    batch a Gaussian blur and pixel noise of random strength (recipe blur_max, noise_max: the attributes do not
    depend on sharpness either). regress: float targets [n, P] learnt too (squared error, weight
    recipe["regress_weight"]). Returns the model (eval mode).
    """
    recipe = dict(RECIPE, **(recipe or {}))
    g = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = AttributeClassifier(num_values, recipe["width"], max(1, size // 32),
                                    0 if regress is None else np.shape(regress)[1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe["lr"], total_steps=recipe["steps"])
    truth = torch.as_tensor(np.asarray(train_attrs), dtype=torch.int64)
    targets = None if regress is None else torch.as_tensor(np.asarray(regress), dtype=torch.float32)
    n = len(train_images)
    images = np.asarray(train_images)
    model.train()
    t0 = time.perf_counter()
    for step in range(recipe["steps"]):
        idx = torch.randint(0, n, (min(recipe["batch_size"], n),), generator=g)
        x = _to_input(images[idx.numpy()], size, device)
        if recipe["flip"]:
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip.to(device)[:, None, None, None], x.flip(3), x)
        if recipe.get("blur_max"):
            x = random_blur(x, recipe["blur_max"] * size / 64, g)
        if recipe.get("noise_max"):
            x = random_noise(x, recipe["noise_max"], g)
        y = truth[idx].to(device)
        if targets is None:
            loss = sum(F.cross_entropy(lg, y[:, k]) for k, lg in enumerate(model(x)))
        else:
            h = model.features(x)
            loss = sum(F.cross_entropy(head(h), y[:, k]) for k, head in enumerate(model.heads))
            loss = loss + recipe.get("regress_weight", 1.0) * F.mse_loss(model.regress(h), targets[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (step + 1) % 200 == 0:
            log(f"attribute classifier: step {step + 1}/{recipe['steps']} loss {loss.item():.3f} "
                f"({time.perf_counter() - t0:.0f} s)")
    return model.eval()


def load_cached_network(path, fmt, key, build, device="cpu"):
    """(model in eval mode, info with path and cached=True) from a DATA/cache file written by save_cached_network,
    when its format and key match; else from the evaluator shipped in the package under the same file name
    (t2icli/pretrained/evaluators/, the default `t2i prep toybirds` folder's: its key holds the hashes of the
    training arrays, so it is used only for that exact data, and the runs of every machine are scored by the same
    network), which is then copied to `path` and info has shipped=True; None when neither matches (the caller
    trains and saves anew).
    build() makes the untrained network whose state the file holds."""
    from t2icli.pretrained import evaluator_path

    for candidate, shipped in ((path, False), (evaluator_path(os.path.basename(path)), True)):
        if not os.path.isfile(candidate):
            continue
        try:
            with open(candidate, "rb") as f:
                raw = f.read()
            blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt
            continue
        if not (isinstance(blob, dict) and blob.get("format") == fmt and blob.get("key") == key):
            continue
        model = build()
        model.load_state_dict(blob["state"])
        if shipped:  # DATA/cache gets its copy, as if trained here (scripts/train_pretrained.sh installs from there)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write_bytes(path, raw)  # the shipped file's very bytes
        return model.to(device).eval(), dict(blob["info"], path=path, cached=True, **({"shipped": True}
                                                                                      if shipped else {}))
    return None


def save_cached_network(path, fmt, key, model, info):
    """Write `model`'s weights and `info` to the cache file `path` (atomically), under format `fmt` and `key`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({"format": fmt, "key": key, "state": state, "info": info}, path)


def load_or_train_classifier(data, device="cpu", recipe=None, log=None, steps=None):
    """The attribute classifier of prepared dataset `data`: loaded from DATA/cache/attr_classifier.pt when its key
    matches, else trained on the real train split, scored on the real test split and cached.

    Returns (model, info {"path", "cached", "size", "names", "recipe", "real_test": accuracy on all attributes of
    the real test images {"overall", "per_attribute"}}). steps overrides RECIPE["steps"]. Raises MetricError if `data` has no attribute truth.
    """
    from t2icli.data import PreparedDataset, load_meta

    data = os.fspath(data)
    meta = load_meta(data)
    schema = meta.get("attributes")
    if not schema:
        raise MetricError(f"--data {data}: this data set has no attribute truth (attribute accuracy needs toybirds)")
    recipe = dict(RECIPE, **(recipe or {}))
    if steps is not None:
        recipe["steps"] = int(steps)
    names = [a["name"] for a in schema]
    num_values = [len(a["values"]) for a in schema]
    size = int(meta["image_size"])
    train_dir = os.path.join(data, "train")
    key = sha256_of(file_sha256(os.path.join(train_dir, "images.npy")),
                    file_sha256(os.path.join(train_dir, "attributes.npy")), sorted(recipe.items()), num_values)
    path = os.path.join(data, "cache", CACHE_NAME)
    cached = load_cached_network(path, _FORMAT, key, lambda: AttributeClassifier(num_values, recipe["width"],
                                                                                   max(1, size // 32)), device)
    if cached is not None:
        return cached
    train = PreparedDataset(data, "train", train=False)
    if log:
        log(f"attribute classifier: training on {len(train)} real train images ({recipe['steps']} steps, "
            f"cached in {path})")
    model = train_attribute_classifier(train.images_uint8, train.attributes, num_values, size, recipe, device,
                                       log=log)
    test_split = "test" if "test" in meta["splits"] else "train"
    test = PreparedDataset(data, test_split, train=False)
    pred = predict_attributes(model, test.images_uint8, size, device=device)
    all_bits = np.full(len(test), (1 << len(names)) - 1, dtype=np.int64)
    real = mentioned_accuracy(pred, test.attributes, all_bits, names)
    info = {"size": size, "names": names, "recipe": recipe,
            "real_test": {"split": test_split, "overall": real["overall"],
                          "per_attribute": {k: v["accuracy"] for k, v in real["per_attribute"].items()}}}
    if log:
        log(f"attribute classifier: real {test_split} accuracy {real['overall']:.3f} (all attributes)")
    save_cached_network(path, _FORMAT, key, model, info)
    return model, dict(info, path=path, cached=False)
