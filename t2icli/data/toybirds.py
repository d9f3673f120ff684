"""Procedural "toybirds" data set: anti-aliased drawings of birds with known part colours and CUB-style captions."""

from __future__ import annotations

import math
import re
import zlib
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, ImageDraw

# ---------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------

#: The fixed colour palette (name -> RGB). Values are well separated so that a
#: part's colour can be told apart at 64 px after anti-aliasing.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 30),
    "orange": (250, 135, 10),
    "yellow": (250, 225, 35),
    "green": (35, 155, 45),
    "blue": (30, 70, 215),
    "purple": (135, 45, 175),
    "brown": (115, 70, 30),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
}
COLORS: list[str] = list(PALETTE)

#: Background scenes: (top RGB, bottom RGB) of a vertical gradient. None of
#: these is a palette colour, so a bird never vanishes into its background.
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "sky": ((150, 200, 240), (205, 230, 250)),
    "grass": ((195, 230, 170), (150, 200, 120)),
    "sand": ((240, 225, 190), (215, 190, 140)),
    "night": ((25, 30, 70), (60, 60, 110)),
}

SIZES: list[str] = ["small", "medium", "large"]
BEAK_LENGTHS: list[str] = ["short", "long"]

#: Attribute schema. Each image stores, per attribute, the index of its value
#: in ``values``; the order of this list is the column order of ``attributes``.
ATTRIBUTES: list[dict] = [
    {"name": "body", "kind": "color", "values": list(COLORS)},
    {"name": "wing", "kind": "color", "values": list(COLORS)},
    {"name": "crown", "kind": "color", "values": list(COLORS)},
    {"name": "belly", "kind": "color", "values": list(COLORS)},
    {"name": "beak", "kind": "color", "values": list(COLORS)},
    {"name": "beak_length", "kind": "category", "values": BEAK_LENGTHS},
    {"name": "size", "kind": "category", "values": SIZES},
    {"name": "background", "kind": "category", "values": list(BACKGROUNDS)},
]
ATTRIBUTE_INDEX: dict[str, int] = {a["name"]: i for i, a in enumerate(ATTRIBUTES)}

#: Fraction of the frame width taken by the bird (beak tip to tail tip) per size.
SIZE_SCALE: dict[str, float] = {"small": 0.55, "medium": 0.75, "large": 0.95}

#: Number of classes produced by :func:`class_of`.
NUM_CLASSES: int = len(COLORS) * len(COLORS)

#: Pose columns stored in the ``pose`` array (nuisance variables, never captioned).
POSE_FIELDS: list[str] = ["facing_left", "tilt_degrees", "center_x", "center_y"]

#: Words a caption may have before AttnGAN's random cut to an ordered subset (dataset.json "word_limit").
WORD_LIMIT = 18

#: Caption grammar versions: 1 is `_make_caption` (folders without a "grammar" entry in dataset.json's
#: "generator" were made with it), 2 is t2icli.data.toybirds_grammar (varied word orders, clauses, synonyms).
GRAMMARS = (1, 2)
GRAMMAR = 2  # what `t2i prep toybirds` writes by default


_SPLIT_IDS = {"train": 0, "test": 1, "val": 2}
_SUPERSAMPLE = 4


def class_of(attributes_row) -> int:
    """Class of a bird: ``body_colour * 10 + wing_colour`` (100 classes, 0..99).

    ``attributes_row`` is one row of the ``attributes`` array (indices into each
    attribute's ``values``, in :data:`ATTRIBUTES` order). Two birds with the same
    body and wing colours are "the same class" (used to mask same-class negatives
    in DAMSM and R-precision).
    """
    body = int(attributes_row[ATTRIBUTE_INDEX["body"]])
    wing = int(attributes_row[ATTRIBUTE_INDEX["wing"]])
    return body * len(COLORS) + wing


def _split_id(split: str) -> int:
    if split in _SPLIT_IDS:
        return _SPLIT_IDS[split]
    return 1000 + zlib.crc32(split.encode("utf-8"))


# ---------------------------------------------------------------------------
# Sampling attributes and pose
# ---------------------------------------------------------------------------


def _sample_attributes(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.integers(len(a["values"])) for a in ATTRIBUTES], dtype=np.int64)


def _sample_pose(rng: np.random.Generator, scale: float) -> np.ndarray:
    """(facing_left, tilt in degrees, centre x, centre y), centre in frame fractions."""
    facing_left = float(rng.random() < 0.5)
    tilt = float(rng.uniform(-12.0, 12.0))
    # The bird spans about `scale` of the frame horizontally and ~0.65*scale
    # vertically; jitter its centre within the remaining margin.
    mx = max(0.0, (1.0 - scale) / 2 - 0.02)
    my = max(0.0, (1.0 - 0.7 * scale) / 2 - 0.03)
    cx = 0.5 + float(rng.uniform(-mx, mx))
    cy = 0.5 + float(rng.uniform(-my, my))
    return np.array([facing_left, tilt, cx, cy], dtype=np.float32)


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------

# Bird geometry in "bird units", facing right, y pointing down, origin at the
# body centre. Extent: x in [-0.52, 0.685] (long beak), y in [-0.31, 0.415].
_BIRD_LENGTH = 1.205
_BIRD_XMID = (-0.52 + 0.685) / 2


def _ellipse(cx, cy, rx, ry, rot=0.0, a0=0.0, a1=360.0, n=40) -> np.ndarray:
    """Points [n+1, 2] of an (optionally rotated, optionally partial) ellipse, angles in degrees."""
    t = np.radians(np.linspace(a0, a1, n + 1))
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _bird_shapes() -> dict[str, np.ndarray]:
    """Outline polygons of the bird parts in bird units (facing right, y down)."""
    hx, hy, hr = 0.3, -0.17, 0.14  # head centre and radius
    bx = hx + hr - 0.025  # beak base x
    shapes = {
        # Tail: a fan behind the body.
        "tail": np.array([(-0.22, 0.0), (-0.52, -0.02), (-0.52, 0.14), (-0.22, 0.1)]),
        "body": _ellipse(0.0, 0.03, 0.32, 0.2),
        # Belly: lower front part of the body.
        "belly": _ellipse(0.1, 0.11, 0.2, 0.1, rot=-8),
        # Wing: a rotated ellipse over the upper back, tip pointing backwards and down.
        "wing": _ellipse(-0.1, -0.01, 0.26, 0.1, rot=-10),
        "head": _ellipse(hx, hy, hr, hr),
        # Crown: the cap over the top half of the head.
        "crown": np.concatenate([_ellipse(hx, hy, hr, hr, a0=180, a1=360, n=20),
                                 [(hx + hr, hy - 0.01), (hx - hr, hy - 0.01)]]),
        "eye": _ellipse(hx + 0.055, hy + 0.02, 0.028, 0.028, n=12),
        "beak_short": np.array([(bx, hy - 0.05), (bx + 0.13, hy + 0.01), (bx, hy + 0.07)]),
        "beak_long": np.array([(bx, hy - 0.05), (bx + 0.27, hy + 0.01), (bx, hy + 0.07)]),
    }
    for k, lx in enumerate((-0.02, 0.1)):  # legs: a thin shank and a toe pointing forward
        shapes[f"shank{k}"] = np.array([(lx - 0.018, 0.2), (lx + 0.018, 0.2), (lx + 0.018, 0.4), (lx - 0.018, 0.4)])
        shapes[f"toe{k}"] = np.array([(lx - 0.018, 0.38), (lx + 0.09, 0.38), (lx + 0.09, 0.415), (lx - 0.018, 0.415)])
    return shapes


_SHAPES = _bird_shapes()


def _shade(rgb, f):
    return tuple(int(round(v * f)) for v in rgb)


def _outline_of(rgb):
    # A darker edge for light parts, a lighter edge for very dark parts.
    if sum(rgb) < 120:
        return (70, 70, 70)
    return _shade(rgb, 0.55)


def _background(name: str, side: int) -> Image.Image:
    top, bottom = BACKGROUNDS[name]
    t = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None]
    col = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    arr = np.broadcast_to(col[:, None, :], (side, side, 3))
    return Image.fromarray(np.ascontiguousarray(np.round(arr).astype(np.uint8)), "RGB")


_BG_CACHE: dict[tuple[str, int], Image.Image] = {}


def draw_bird(attributes_row, size: int = 64, pose=None) -> np.ndarray:
    """Render one bird as uint8 [size, size, 3] (drawn at 4x size, box-downsampled).

    ``attributes_row``: int [len(ATTRIBUTES)] value indices, as in ``attributes``.
    ``pose``: [4] as in ``POSE_FIELDS`` (facing_left 0/1, tilt in degrees, centre x
    and y as fractions of the frame); None means centred, facing right, upright.
    """
    attrs = np.asarray(attributes_row)
    if pose is None:
        pose = (0.0, 0.0, 0.5, 0.5)
    names = {a["name"]: a["values"][int(v)] for a, v in zip(ATTRIBUTES, attrs)}
    side = size * _SUPERSAMPLE
    key = (names["background"], side)
    if key not in _BG_CACHE:
        _BG_CACHE[key] = _background(*key)
    img = _BG_CACHE[key].copy()
    draw = ImageDraw.Draw(img)

    facing_left, tilt, cx, cy = (float(v) for v in pose)
    unit = SIZE_SCALE[names["size"]] * side / _BIRD_LENGTH  # pixels per bird unit
    flip = -1.0 if facing_left else 1.0
    ang = math.radians(tilt)
    ca, sa = math.cos(ang), math.sin(ang)
    ox, oy = cx * side, cy * side

    # Bird units -> canvas pixels: centre, flip, rotate by the tilt, scale, translate.
    m = unit * np.array([[ca * flip, -sa], [sa * flip, ca]])
    shift = np.array([ox - unit * ca * flip * _BIRD_XMID, oy - unit * sa * flip * _BIRD_XMID])
    lw = max(1, int(round(0.012 * unit)))  # outline width on the 4x canvas

    def poly(shape, rgb, outline=True):
        pts = (_SHAPES[shape] @ m.T + shift).ravel().tolist()
        if outline:
            draw.polygon(pts, fill=rgb, outline=_outline_of(rgb), width=lw)
        else:
            draw.polygon(pts, fill=rgb)

    body = PALETTE[names["body"]]
    wing = PALETTE[names["wing"]]
    leg_rgb = (90, 70, 50) if names["background"] != "night" else (170, 150, 120)

    # Back to front: legs, tail (darker wing colour), body, belly, wing, head, crown, eye, beak.
    for part in ("shank0", "toe0", "shank1", "toe1"):
        poly(part, leg_rgb, outline=False)
    poly("tail", _shade(wing, 0.85) if sum(wing) > 120 else wing)
    poly("body", body)
    poly("belly", PALETTE[names["belly"]], outline=False)
    poly("wing", wing)
    poly("head", body)
    poly("crown", PALETTE[names["crown"]])
    poly("eye", (10, 10, 10) if sum(body) > 150 else (235, 235, 235), outline=False)
    poly("beak_" + names["beak_length"], PALETTE[names["beak"]])

    small = img.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.uint8)


# ---------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------

_BACKGROUND_PHRASES = {
    "sky": ["against a clear sky", "in front of the sky", "flying across the sky"],
    "grass": ["on the grass", "standing in the grass", "sitting on the grass"],
    "sand": ["on the sand", "standing on the sand", "walking on the sand"],
    "night": ["at night", "in the dark of night", "out at night"],
}
_SIZE_WORD = {"small": ["small", "small", "little"], "medium": ["medium", "medium-sized"],
              "large": ["large", "large", "big"]}


_AN = re.compile(r"\ba ([aeiou])")


def _join(items: list[str], rng: np.random.Generator) -> str:
    """'a', 'a and b', 'a, b and c' (sometimes with a serial comma)."""
    if len(items) == 1:
        return items[0]
    last = ", and " if len(items) >= 3 and rng.random() < 0.25 else " and "
    return ", ".join(items[:-1]) + last + items[-1]


def _part_phrase(part: str, names: dict, mention_length: bool, rng) -> str:
    """Noun phrase for a part, e.g. 'a red crown', 'black wings', 'a long yellow beak'."""
    c = names.get(part)
    if part == "wing":
        return f"{c} wings" if rng.random() < 0.75 else f"{c} wing feathers"
    if part == "crown":
        return f"a {c} crown" if rng.random() < 0.8 else f"a {c} crown on its head"
    if part == "belly":
        return f"a {c} belly" if rng.random() < 0.8 else f"a {c} breast and belly"
    if part == "beak":
        length = names["beak_length"] + " " if mention_length else ""
        colour = f"{c} " if c is not None else ""
        return f"a {length}{colour}beak"
    raise ValueError(part)


def _predicate_phrase(part: str, names: dict, mention_length: bool, rng) -> str:
    """Clause for a part, e.g. 'its wings are black', 'the beak is short and red'."""
    c = names.get(part)
    if part == "wing":
        return f"its wings are {c}"
    if part == "crown":
        return f"the crown is {c}"
    if part == "belly":
        return f"the belly is {c}"
    if part == "beak":
        if mention_length and c is not None:
            return f"the beak is {names['beak_length']} and {c}"
        if mention_length:
            return f"the beak is {names['beak_length']}"
        return f"the beak is {c}"
    raise ValueError(part)


_MENTIONABLE = ["body", "wing", "crown", "belly", "beak", "beak_length", "size", "background"]
#: Every caption names the two class-defining colours (body and wing), as CUB's annotators almost always
#: describe a bird's main colours; 0-3 of the other attributes are added at random with these weights.
#: (With a purely random subset, a caption often says nothing that tells its class apart from other classes:
#: even a perfect matching model could not rank it first among other-class captions, see issue 5's note.)
_ALWAYS = ["body", "wing"]
_OPTIONAL = ["crown", "belly", "beak", "beak_length", "size", "background"]
_OPTIONAL_WEIGHTS = np.array([1.0, 1.0, 1.0, 0.8, 0.9, 0.5])
_INV_WEIGHTS = 1.0 / _OPTIONAL_WEIGHTS


def _pick(rng: np.random.Generator, options):
    """Uniform choice from a short list (much cheaper than rng.choice)."""
    return options[int(rng.integers(len(options)))]


def _make_caption(names: dict, rng: np.random.Generator) -> tuple[str, list[str]]:
    """One caption naming body and wing colour and 0-3 other true attributes; returns (caption, mentioned names)."""
    k = int(rng.integers(0, 4))
    # Weighted sample of k optional attributes without replacement (Efraimidis-Spirakis keys).
    keys = rng.random(len(_OPTIONAL)) ** _INV_WEIGHTS
    chosen = set(_ALWAYS) | {_OPTIONAL[i] for i in np.argsort(-keys)[:k].tolist()}
    mentioned = [a for a in _MENTIONABLE if a in chosen]
    m = set(mentioned)

    size_word = _pick(rng, _SIZE_WORD[names["size"]]) if "size" in m else None
    body = names["body"] if "body" in m else None

    # Part noun phrases (beak colour and beak length share one phrase).
    parts = []
    for part in ("wing", "crown", "belly", "beak"):
        if part == "beak":
            if "beak" in m or "beak_length" in m:
                parts.append("beak")
        elif part in m:
            parts.append(part)
    rng.shuffle(parts)
    pnames = dict(names)
    if "beak" not in m:
        pnames["beak"] = None
    with_len = "beak_length" in m

    # Subject: who the caption is about, possibly carrying size and body colour.
    style = int(rng.integers(4))
    article = _pick(rng, ["this", "the", "a"])
    sz = f"{size_word} " if size_word else ""
    if body is not None and style == 0:
        # Body colour as a predicate: "this bird is mostly red with ...".
        article = "this" if article == "a" else article
        subject = f"{article} {sz}bird is " + _pick(rng, ["", "mostly ", "mostly "]) + body
        connector = _pick(rng, [" with ", " and has "])
    elif body is not None and style == 1 and article == "a":
        subject = f"a {sz}bird with a {body} body"
        connector = " and " if len(parts) == 1 else ", "
    elif body is None and size_word and style == 2:
        # Size as a predicate: "the bird is small and has ...".
        word = "medium-sized" if names["size"] == "medium" else size_word
        subject = f"{'this' if article == 'a' else article} bird is {word}"
        connector = _pick(rng, [" with ", " and has "])
    else:
        colour = f"{body} " if body is not None else ""
        subject = f"{article} {sz}{colour}bird"
        connector = _pick(rng, [" with ", " that has "]) if article == "a" else " has "

    two_sentences = len(parts) >= 2 and rng.random() < 0.2
    if parts:
        if two_sentences:
            # Two sentences: the first part in the list, the rest as clauses.
            first = _part_phrase(parts[0], pnames, with_len, rng)
            rest = [_predicate_phrase(p, pnames, with_len, rng) for p in parts[1:]]
            text = subject + connector + first + ". " + _join(rest, rng)
        else:
            text = subject + connector + _join([_part_phrase(p, pnames, with_len, rng) for p in parts], rng)
    else:
        text = subject
        if " is " not in subject and not subject.startswith("a ") and "background" not in m:
            text = subject + " " + _pick(rng, ["is shown", "is perched here"])

    if "background" in m:
        bg = _pick(rng, _BACKGROUND_PHRASES[names["background"]])
        if rng.random() < 0.5 and not two_sentences:
            text = text + ", " + bg if parts else text + " " + bg
        else:
            text = bg + ", " + text
    text = _AN.sub(r"an \1", text)  # "a orange beak" -> "an orange beak"
    return text, mentioned


def caption_grammar(meta: dict) -> int:
    """Caption grammar version of a prepared toybirds folder from its dataset.json dict (1 when not recorded:
    folders prepared before version 2 existed)."""
    generator = meta.get("generator") if isinstance(meta.get("generator"), dict) else {}
    return int(generator.get("grammar", 1))


def _make_captions(attrs: np.ndarray, count: int, rng: np.random.Generator, grammar: int = GRAMMAR):
    from t2icli.data import toybirds_grammar

    make = _make_caption if grammar == 1 else toybirds_grammar.make_caption
    names = {a["name"]: a["values"][int(v)] for a, v in zip(ATTRIBUTES, attrs)}
    caps, mentions = [], []
    for _ in range(count):
        for _attempt in range(6):  # prefer distinct captions per image
            text, ment = make(names, rng)
            if text not in caps:
                break
        caps.append(text)
        mentions.append(ment)
    return caps, mentions


# ---------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------


def _generate_range(args):
    """Worker: images/captions for indices [start, stop) of one split."""
    start, stop, size, seed, captions_per_image, split_id, grammar = args
    m = stop - start
    images = np.empty((m, size, size, 3), dtype=np.uint8)
    attributes = np.empty((m, len(ATTRIBUTES)), dtype=np.int64)
    poses = np.empty((m, len(POSE_FIELDS)), dtype=np.float32)
    captions, mentions = [], []
    for j, i in enumerate(range(start, stop)):
        # Separate streams for the picture and for the text, so changing the
        # number of captions leaves the images untouched.
        rng_img = np.random.default_rng([seed, split_id, i, 0])
        rng_txt = np.random.default_rng([seed, split_id, i, 1])
        attrs = _sample_attributes(rng_img)
        pose = _sample_pose(rng_img, SIZE_SCALE[SIZES[attrs[ATTRIBUTE_INDEX["size"]]]])
        images[j] = draw_bird(attrs, size, pose)
        attributes[j] = attrs
        poses[j] = pose
        caps, ments = _make_captions(attrs, captions_per_image, rng_txt, grammar)
        captions.append(caps)
        mentions.append(ments)
    return images, attributes, poses, captions, mentions


def generate_split(n: int, size: int = 64, seed: int = 0, captions_per_image: int = 10,
                   split: str = "train", workers: int = 2, grammar: int = GRAMMAR) -> dict:
    """Draw ``n`` birds of one split, deterministically from ``(seed, split)``.

    Image ``i`` depends only on ``(seed, split, i)``, so the output is identical
    for any ``workers`` and the first ``k`` images of a larger split equal a
    split of size ``k``. ``workers=1`` runs in this process; more uses a process
    pool over contiguous index chunks. ``grammar`` (see GRAMMARS) chooses how the
    captions are phrased; the images, attributes and poses do not depend on it.

    Returns a dict with
      - ``images``: uint8 [n, size, size, 3] RGB,
      - ``captions``: list of n lists of ``captions_per_image`` lowercase strings,
      - ``classes``: int64 [n], ``class_of`` of each attribute row (0..99),
      - ``attributes``: int64 [n, len(ATTRIBUTES)], index into each attribute's values,
      - ``mentions``: per image, per caption, the attribute names the caption mentions,
      - ``filenames``: list of n strings ``f"{split}/{i:06d}"``,
      - ``pose``: float32 [n, 4] nuisance variables (see ``POSE_FIELDS``), never captioned.
    """
    if n < 0 or size < 8 or captions_per_image < 1:
        raise ValueError("need n >= 0, size >= 8 and captions_per_image >= 1")
    if grammar not in GRAMMARS:
        raise ValueError(f"caption grammar {grammar!r}: choose from {GRAMMARS}")
    sid = _split_id(split)
    workers = max(1, int(workers))
    if workers == 1 or n < 16:
        chunks = [(0, n)]
    else:
        # Several chunks per worker for load balance; contiguous for cheap merging.
        nchunks = min(n, workers * 4)
        bounds = np.linspace(0, n, nchunks + 1).round().astype(int)
        chunks = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    jobs = [(a, b, size, int(seed), int(captions_per_image), sid, int(grammar)) for a, b in chunks]
    if len(jobs) == 1:
        parts = [_generate_range(jobs[0])]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_generate_range, jobs))

    images = np.concatenate([p[0] for p in parts])  # parts is never empty (n=0 gives one empty chunk)
    attributes = np.concatenate([p[1] for p in parts])
    poses = np.concatenate([p[2] for p in parts])
    captions = [c for p in parts for c in p[3]]
    mentions = [m for p in parts for m in p[4]]
    classes = np.array([class_of(row) for row in attributes], dtype=np.int64)
    return {
        "images": images,
        "captions": captions,
        "classes": classes,
        "attributes": attributes,
        "mentions": mentions,
        "filenames": [f"{split}/{i:06d}" for i in range(n)],
        "pose": poses,
    }


def make_grid(images: np.ndarray, cols: int = 8, pad: int = 2) -> np.ndarray:
    """Tile uint8 images [k, H, W, 3] into one uint8 [rows*(H+pad)+pad, cols*(W+pad)+pad, 3] grid."""
    k, h, w, _ = images.shape
    rows = max(1, -(-k // cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for idx in range(k):
        r, c = divmod(idx, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = images[idx]
    return grid


def prepare_toybirds(out, size: int = 64, n_train: int = 8000, n_test: int = 1000,
                     captions_per_image: int = 10, seed: int = 0, workers: int = 2, grammar: int = GRAMMAR) -> dict:
    """Draw the toybirds data set and write it as a prepared dataset folder at ``out``.

    Besides the common format (t2icli.data.format) each split gets ``attributes.npy``
    (int64 [n, 8], see ATTRIBUTES), ``pose.npy`` (float32 [n, 4], nuisance variables)
    and ``caption_mentions.npy`` (int64 [n_captions], bit k set when the caption names
    attribute k). ``grammar`` is the caption grammar version (GRAMMARS), recorded in
    dataset.json's "generator" entry. Returns the prep summary (dataset.json plus timing).
    """
    import time

    from t2icli.data.format import DatasetWriter

    t0 = time.perf_counter()
    bits = {a["name"]: 1 << k for k, a in enumerate(ATTRIBUTES)}
    extra = {
        "attributes": ATTRIBUTES,
        "class_definition": "body colour index * 10 + wing colour index (100 classes)",
        "generator": {"seed": int(seed), "captions_per_image": int(captions_per_image), "grammar": int(grammar)},
    }
    with DatasetWriter(out, source="toybirds", image_size=size, word_limit=WORD_LIMIT, extra=extra) as w:
        for split, n in (("train", n_train), ("test", n_test)):
            d = generate_split(n, size=size, seed=seed, captions_per_image=captions_per_image,
                               split=split, workers=workers, grammar=grammar)
            sw = w.split(split)
            sw.add_many(d["images"], d["captions"], d["classes"], d["filenames"], d["attributes"])
            sw.save_array("pose", d["pose"].astype(np.float32))
            sw.save_array("caption_mentions", np.array(
                [sum(bits[a] for a in names) for per_image in d["mentions"] for names in per_image], dtype=np.int64))
        meta = w.finish()
    dt = time.perf_counter() - t0
    n = n_train + n_test
    return {"out": str(out), "seconds": round(dt, 2), "images_per_s": round(n / dt, 1), **meta}


if __name__ == "__main__":  # quick look: python -m t2icli.data.toybirds [out.png]
    import sys

    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/toybirds_grid.png"
    d = generate_split(64, size=64, seed=0, captions_per_image=10, split="train", workers=1)
    Image.fromarray(make_grid(d["images"])).save(out)
    for fn, caps in zip(d["filenames"], d["captions"]):
        print(fn, "|", caps[0])
