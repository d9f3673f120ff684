"""Tests for the procedural toybirds generator (t2icli.data.toybirds)."""

import re

import numpy as np
import pytest

from t2icli.data import toybirds as tb
from t2icli.data.toybirds import ATTRIBUTES, COLORS, class_of, draw_bird, generate_split

NAMES = [a["name"] for a in ATTRIBUTES]
COL = {name: i for i, name in enumerate(NAMES)}


@pytest.fixture(scope="module")
def split():
    return generate_split(200, 64, seed=7, captions_per_image=10, split="train", workers=1)


def _row(**kw):
    """Attribute row from value names; unspecified colours red, short, large, sky."""
    vals = {"body": "red", "wing": "red", "crown": "red", "belly": "red", "beak": "red",
            "beak_length": "short", "size": "large", "background": "sky"}
    vals.update(kw)
    return np.array([a["values"].index(vals[a["name"]]) for a in ATTRIBUTES], dtype=np.int64)


# ---------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------


def test_schema():
    assert COLORS == ["red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white", "gray"]
    for part in ("body", "wing", "crown", "belly", "beak"):
        assert ATTRIBUTES[COL[part]]["values"] == COLORS
    assert ATTRIBUTES[COL["beak_length"]]["values"] == ["short", "long"]
    assert ATTRIBUTES[COL["size"]]["values"] == ["small", "medium", "large"]
    assert len(ATTRIBUTES[COL["background"]]["values"]) >= 2
    # Palette colours are well separated, and no background equals a palette colour.
    rgb = np.array([tb.PALETTE[c] for c in COLORS], dtype=float)
    d = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(COLORS)) * 1e9
    assert d.min() > 60


def test_class_of():
    assert class_of(_row(body="red", wing="red")) == 0
    assert class_of(_row(body="orange", wing="blue")) == 1 * 10 + 4
    assert class_of(_row(body="gray", wing="gray")) == 99
    # Only body and wing matter.
    assert class_of(_row(body="green", wing="white", crown="black")) == class_of(_row(body="green", wing="white"))


# ---------------------------------------------------------------------------
# Shapes and determinism
# ---------------------------------------------------------------------------


def test_shapes_dtypes_ranges(split):
    n = 200
    assert split["images"].shape == (n, 64, 64, 3) and split["images"].dtype == np.uint8
    assert split["attributes"].shape == (n, len(ATTRIBUTES)) and split["attributes"].dtype == np.int64
    assert split["classes"].shape == (n,) and split["classes"].dtype == np.int64
    for j, a in enumerate(ATTRIBUTES):
        col = split["attributes"][:, j]
        assert col.min() >= 0 and col.max() < len(a["values"])
    assert len(split["captions"]) == n and all(len(c) == 10 for c in split["captions"])
    assert all(isinstance(t, str) and t for c in split["captions"] for t in c)
    assert len(split["mentions"]) == n and all(len(m) == 10 for m in split["mentions"])
    assert split["filenames"][0] == "train/000000" and split["filenames"][123] == "train/000123"
    assert len(set(split["filenames"])) == n
    assert split["pose"].shape == (n, len(tb.POSE_FIELDS))
    # classes follow class_of, and are in range
    assert np.array_equal(split["classes"], [class_of(r) for r in split["attributes"]])
    assert split["classes"].min() >= 0 and split["classes"].max() < 100
    # every value is actually drawn at this n
    for j in (COL["body"], COL["size"], COL["beak_length"], COL["background"]):
        assert len(np.unique(split["attributes"][:, j])) == len(ATTRIBUTES[j]["values"])


@pytest.mark.parametrize("size", [32, 64, 128])
def test_sizes(size):
    d = generate_split(6, size, seed=1, captions_per_image=2, split="test", workers=1)
    assert d["images"].shape == (6, size, size, 3)
    assert d["images"].std() > 10  # not blank
    # The same birds (attributes/captions) at every size: image content only depends on the size.
    ref = generate_split(6, 64, seed=1, captions_per_image=2, split="test", workers=1)
    assert np.array_equal(d["attributes"], ref["attributes"])
    assert d["captions"] == ref["captions"]


def _same(a, b):
    return (np.array_equal(a["images"], b["images"]) and np.array_equal(a["attributes"], b["attributes"])
            and a["captions"] == b["captions"] and a["mentions"] == b["mentions"]
            and np.array_equal(a["pose"], b["pose"]) and a["filenames"] == b["filenames"])


def test_determinism_and_workers():
    a = generate_split(70, 32, seed=3, captions_per_image=3, split="train", workers=1)
    b = generate_split(70, 32, seed=3, captions_per_image=3, split="train", workers=1)
    c = generate_split(70, 32, seed=3, captions_per_image=3, split="train", workers=2)
    assert _same(a, b)
    assert _same(a, c)
    # Prefix property: image i depends only on (seed, split, i).
    p = generate_split(20, 32, seed=3, captions_per_image=3, split="train", workers=1)
    assert np.array_equal(p["images"], a["images"][:20]) and p["captions"] == a["captions"][:20]
    # More captions per image leave the images unchanged.
    q = generate_split(20, 32, seed=3, captions_per_image=5, split="train", workers=1)
    assert np.array_equal(q["images"], p["images"]) and np.array_equal(q["attributes"], p["attributes"])


def test_rerender_from_stored_truth(split):
    # attributes + pose fully determine the image.
    for i in (0, 17, 199):
        assert np.array_equal(draw_bird(split["attributes"][i], 64, split["pose"][i]), split["images"][i])


def test_empty_split():
    d = generate_split(0, 32, seed=0, captions_per_image=2, split="train", workers=2)
    assert d["images"].shape == (0, 32, 32, 3) and d["attributes"].shape == (0, len(ATTRIBUTES))
    assert d["captions"] == [] and d["filenames"] == [] and d["classes"].shape == (0,)


def test_seeds_and_splits_differ():
    a = generate_split(30, 32, seed=3, captions_per_image=2, split="train", workers=1)
    b = generate_split(30, 32, seed=4, captions_per_image=2, split="train", workers=1)
    c = generate_split(30, 32, seed=3, captions_per_image=2, split="test", workers=1)
    for other in (b, c):
        assert not np.array_equal(a["attributes"], other["attributes"])
        assert not np.array_equal(a["images"], other["images"])
        assert a["captions"] != other["captions"]
    assert c["filenames"][0] == "test/000000"


# ---------------------------------------------------------------------------
# Captions agree with the true attributes
# ---------------------------------------------------------------------------

NOUN = {"wings": "wing", "wing": "wing", "crown": "crown", "belly": "belly", "breast": "belly",
        "beak": "beak", "bird": "body", "body": "body"}
SIZE_WORDS = {"small": "small", "little": "small", "medium": "medium", "medium-sized": "medium",
              "large": "large", "big": "large"}
BACKGROUND_WORDS = {"sky", "grass", "sand", "night"}


def parse_caption(text):
    """Independent parser: {attribute name: value name} for every attribute the caption states."""
    toks = re.findall(r"[a-z\-]+", text)
    found = {}

    def put(name, value):
        assert found.get(name, value) == value, f"contradiction on {name} in {text!r}"
        found[name] = value

    for j, w in enumerate(toks):
        prev = toks[j - 1] if j > 0 else ""
        nxt = toks[j + 1] if j + 1 < len(toks) else ""
        if w in COLORS:
            if nxt in NOUN:  # "a red crown", "a red bird", "a red body"
                put(NOUN[nxt], w)
            elif prev in ("is", "are", "mostly"):  # "this bird is mostly red", "its wings are red"
                k = j - 2 if prev != "mostly" else j - 3
                assert toks[k] in NOUN, f"cannot attribute {w!r} in {text!r}"
                put(NOUN[toks[k]], w)
            elif prev == "and" and toks[j - 2] in ("short", "long") and toks[j - 4] == "beak":
                put("beak", w)  # "the beak is short and red"
            else:
                raise AssertionError(f"cannot attribute colour {w!r} in {text!r}")
        elif w in ("short", "long"):
            assert "beak" in toks[j + 1:j + 3] or toks[j - 2] == "beak", text
            put("beak_length", w)
        elif w in SIZE_WORDS:
            put("size", SIZE_WORDS[w])
        elif w in BACKGROUND_WORDS:
            put("background", w)
    return found


def test_captions_state_true_attributes(split):
    n_checked = 0
    counts = []
    for attrs, caps, ments in zip(split["attributes"], split["captions"], split["mentions"]):
        truth = {a["name"]: a["values"][int(v)] for a, v in zip(ATTRIBUTES, attrs)}
        for text, mentioned in zip(caps, ments):
            parsed = parse_caption(text)
            assert set(parsed) == set(mentioned), (text, mentioned, parsed)
            for name, value in parsed.items():
                assert truth[name] == value, (text, name, value, truth)
            assert 2 <= len(mentioned) <= 5, (text, mentioned)
            # The class-defining colours are always named, so a caption tells its class apart from other classes.
            assert {"body", "wing"} <= set(mentioned), (text, mentioned)
            assert text == text.lower() and "  " not in text and not re.search(r"\ba [aeiou]", text)
            counts.append(len(mentioned))
            n_checked += 1
    assert n_checked == 2000
    assert set(counts) == {2, 3, 4, 5}


def test_caption_variety(split):
    caps = [t for c in split["captions"] for t in c]
    # Varied phrasing: many distinct openings and several ways to state the body colour.
    openings = {" ".join(t.split()[:2]) for t in caps}
    assert len(openings) >= 8
    assert any("mostly" in t for t in caps) and any(re.search(r"\b(" + "|".join(COLORS) + r") bird\b", t) for t in caps)
    assert any(", and " in t for t in caps) and any(re.search(r", .* and ", t) for t in caps)
    # Captions of one image are mostly distinct.
    assert np.mean([len(set(c)) for c in split["captions"]]) > 8
    # All attributes get mentioned at a reasonable rate.
    flat = [m for per_img in split["mentions"] for ms in per_img for m in ms]
    for name in NAMES:
        assert flat.count(name) > 0.05 * len(caps), name


# ---------------------------------------------------------------------------
# Visual sanity
# ---------------------------------------------------------------------------


def test_body_colour_visible_at_centre():
    for colour in ("red", "blue", "yellow", "green"):
        img = draw_bird(_row(body=colour, wing=colour, crown=colour, belly=colour, beak=colour), 64)
        centre = img[28:36, 26:34].reshape(-1, 3).astype(float).mean(0)
        assert np.abs(centre - tb.PALETTE[colour]).max() < 30, (colour, centre)


def test_red_vs_blue_bodies_in_dataset(split):
    img = split["images"][:, 16:48, 16:48].astype(float).mean((1, 2))  # mean colour of central region
    body = split["attributes"][:, COL["body"]]
    red, blue = img[body == COLORS.index("red")], img[body == COLORS.index("blue")]
    assert len(red) and len(blue)
    assert (red[:, 0] - red[:, 2]).mean() > (blue[:, 0] - blue[:, 2]).mean() + 30


@pytest.mark.parametrize("part,min_pixels", [("body", 100), ("wing", 60), ("crown", 12), ("belly", 40), ("beak", 4)])
def test_each_part_visible_at_64px(part, min_pixels):
    # Change one part's colour on a medium bird; enough pixels must change clearly.
    base = _row(body="gray", wing="gray", crown="gray", belly="gray", beak="gray", size="medium")
    changed = base.copy()
    changed[COL[part]] = COLORS.index("red")
    diff = np.abs(draw_bird(base, 64).astype(int) - draw_bird(changed, 64).astype(int)).max(-1)
    assert (diff > 60).sum() >= min_pixels, (part, (diff > 60).sum())


def test_beak_length_and_size_visible():
    short = draw_bird(_row(beak="black", size="medium"), 64)
    long_ = draw_bird(_row(beak="black", size="medium", beak_length="long"), 64)
    assert (np.abs(short.astype(int) - long_.astype(int)).max(-1) > 60).sum() >= 4

    def bird_pixels(size_name):
        img = draw_bird(_row(size=size_name), 64).astype(int)
        bg = img[:, :1]  # the left column is background (a vertical gradient) at every size
        return (np.abs(img - bg).max(-1) > 40).sum()

    s, m, l = bird_pixels("small"), bird_pixels("medium"), bird_pixels("large")
    assert s * 1.4 < m and m * 1.3 < l, (s, m, l)
