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

# An independent reading of captions of both grammars: the caption is cut into phrases at punctuation and at
# "and/with/has/having/featuring/that"; a colour belongs to the one part noun of its phrase, or, in a phrase
# without one ("that are blue", "... short and red"), to the part of the phrase before it. "bird"/"it" stand
# for the body. A phrase with two parts or two colours, or a colour with no part, fails the test.
PART_NOUNS = {"wings": "wing", "wing": "wing", "crown": "crown", "head": "crown", "cap": "crown",
              "belly": "belly", "breast": "belly", "chest": "belly", "underside": "belly", "underbelly": "belly",
              "underparts": "belly", "beak": "beak", "bill": "beak", "body": "body", "plumage": "body",
              "feathers": "body"}
WEAK_NOUNS = {"bird": "body", "it": "body"}
COMPOUNDS = {"winged": "wing", "headed": "crown", "crowned": "crown", "bellied": "belly", "breasted": "belly",
             "billed": "beak", "beaked": "beak"}
SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "medium": "medium", "medium-sized": "medium",
              "mid-sized": "medium", "average-sized": "medium", "large": "large", "big": "large", "huge": "large"}
LENGTH_WORDS = {"short": "short", "stubby": "short", "long": "long"}
BACKGROUND_WORDS = {"sky": "sky", "grass": "grass", "grassy": "grass", "lawn": "grass", "meadow": "grass",
                    "sand": "sand", "sandy": "sand", "beach": "sand", "desert": "sand", "night": "night",
                    "nighttime": "night", "dark": "night"}
BOUNDARIES = {"and", "with", "has", "having", "featuring", "that", ".", ",", ":"}


def _colour(word):
    return "gray" if word == "grey" else (word if word in COLORS else None)


def parse_caption(text):
    """{attribute name: value name} for every attribute the caption states (AssertionError if unreadable)."""
    text = text.replace("wing feathers", "wings").replace("breast and belly", "belly").replace("bird's", "bird")
    found = {}

    def put(name, value):
        assert found.get(name, value) == value, f"contradiction on {name} in {text!r}"
        found[name] = value

    segments, cur = [], []
    for w in re.findall(r"[a-z]+(?:-[a-z]+)*|[.,:]", text):
        if w in BOUNDARIES:
            segments, cur = segments + [cur] * bool(cur), []
        else:
            cur.append(w)
    segments += [cur] * bool(cur)
    last_noun = None
    for seg in segments:
        colours = []
        for w in seg:
            head, _, tail = w.partition("-")
            if tail in COMPOUNDS:  # "blue-winged"
                assert _colour(head), text
                put(COMPOUNDS[tail], _colour(head))
            elif w in SIZE_WORDS:
                put("size", SIZE_WORDS[w])
            elif "-" in w:
                raise AssertionError(f"unknown compound {w!r} in {text!r}")
            elif _colour(w):
                colours.append(_colour(w))
            elif w in LENGTH_WORDS:
                assert re.search(r"\b(beak|bill)\b", text), text
                put("beak_length", LENGTH_WORDS[w])
            elif w in BACKGROUND_WORDS:
                put("background", BACKGROUND_WORDS[w])
        strong = {PART_NOUNS[w] for w in seg if w in PART_NOUNS}
        weak = {WEAK_NOUNS[w] for w in seg if w in WEAK_NOUNS}
        assert len(strong) <= 1 and len(colours) <= 1, f"ambiguous phrase {seg} in {text!r}"
        noun = next(iter(strong or weak), None)
        if colours:
            assert noun or last_noun, f"colour {colours[0]!r} of nothing in {text!r}"
            put(noun or last_noun, colours[0])
        last_noun = noun or last_noun
    return found


@pytest.fixture(scope="module", params=[1, 2], ids=["grammar1", "grammar2"])
def captioned(request):
    return generate_split(300, 16, seed=7, captions_per_image=10, split="train", workers=1, grammar=request.param)


def test_captions_state_true_attributes(captioned):
    n_checked = 0
    counts = []
    for attrs, caps, ments in zip(captioned["attributes"], captioned["captions"], captioned["mentions"]):
        truth = {a["name"]: a["values"][int(v)] for a, v in zip(ATTRIBUTES, attrs)}
        for text, mentioned in zip(caps, ments):
            parsed = parse_caption(text)
            assert set(parsed) == set(mentioned), (text, mentioned, parsed)  # stated iff mentioned
            for name, value in parsed.items():
                assert truth[name] == value, (text, name, value, truth)
            assert 2 <= len(mentioned) <= 5, (text, mentioned)
            # The class-defining colours are always named, so a caption tells its class apart from other classes.
            assert {"body", "wing"} <= set(mentioned), (text, mentioned)
            assert text == text.lower() and "  " not in text and not re.search(r"\ba [aeiou]", text)
            counts.append(len(mentioned))
            n_checked += 1
    assert n_checked == 3000
    assert set(counts) == {2, 3, 4, 5}


def test_parser_catches_wrong_binding():
    # The reading above would catch a grammar that binds a colour to the wrong part.
    assert parse_caption("a red bird with a bill that is long and yellow") == {
        "body": "red", "beak_length": "long", "beak": "yellow"}
    assert parse_caption("its wings are blue. it is mostly red") == {"wing": "blue", "body": "red"}
    with pytest.raises(AssertionError):
        parse_caption("red blue wings")
    with pytest.raises(AssertionError):
        parse_caption("red, a bird")


def test_caption_variety(captioned):
    caps = [t for c in captioned["captions"] for t in c]
    # Varied phrasing: many distinct openings and several ways to state the body colour.
    openings = {" ".join(t.split()[:2]) for t in caps}
    assert len(openings) >= 8
    assert any("mostly" in t for t in caps) and any(re.search(r"\b(" + "|".join(COLORS) + r") bird\b", t) for t in caps)
    assert any(", and " in t for t in caps) and any(re.search(r", .* and ", t) for t in caps)
    # Captions of one image are mostly distinct.
    assert np.mean([len(set(c)) for c in captioned["captions"]]) > 8
    # All attributes get mentioned at a reasonable rate.
    flat = [m for per_img in captioned["mentions"] for ms in per_img for m in ms]
    for name in NAMES:
        assert flat.count(name) > 0.05 * len(caps), name


def test_grammar1_unchanged():
    # Folders prepared before grammar 2 existed: grammar 1 must still write exactly their captions. The hash is
    # of generate_split(60, 16, seed=7, captions_per_image=4) under the grammar-1 code as committed in 8c843ec.
    import hashlib
    import json

    d = generate_split(60, 16, seed=7, captions_per_image=4, split="train", workers=1, grammar=1)
    blob = json.dumps([d["captions"], d["mentions"]], sort_keys=True).encode()
    assert hashlib.sha256(blob).hexdigest() == "2a927590940d8d8638228694a1a61d861a18d79f868a0375ab8d2e61bccb7811"


def test_grammar2_phrasings():
    d = generate_split(400, 16, seed=11, captions_per_image=10, split="train", workers=1, grammar=2)
    caps = [t for c in d["captions"] for t in c]
    words = [len(re.findall(r"\w+", t)) for t in caps]
    assert max(words) <= tb.WORD_LIMIT  # never cut at random by the trainers
    assert np.mean(words) > 9
    joined = "\n".join(caps)
    colour = r"(" + "|".join(COLORS + ["grey"]) + r")"
    for pattern in (
        rf"\b(its|the) wings are {colour}\b", rf"\bwings that are {colour}\b", rf"^{colour} wings\b",  # orders
        rf"\b(its|the) (body|plumage) is {colour}\b", rf"\ba {colour} body\b", rf"\bit is {colour} all over\b",
        rf"\b(the|its) (beak|bill) is (short|long|stubby) and {colour}\b", r"\bthis bird's \w+",
        rf"\b{colour}-(winged|headed|crowned|bellied|breasted|billed|beaked) ", r"\bfeaturing\b",
        r"\b(this|here) is a\b", r"\ba picture of\b", r"\. (its|the|it) ", rf"\bbright {colour}\b",
        r"\bbill\b", r"\bhead\b", r"\bcap\b", r"\b(breast|chest|underside|underbelly|underparts)\b",
        r"\bplumage\b", r"\bgrey\b", r"\btiny\b", r"\bhuge\b", r"\bmid-sized\b", r"\bstubby\b", r"\bbeach\b",
        r"\bon (this|a) (small|little|tiny|medium|large|big|huge) bird$",
    ):
        assert re.search(pattern, joined, re.M), pattern
    # Every part is said both colour-first and colour-last.
    for noun in ("wings", "crown", "belly", "beak", "body"):
        assert re.search(rf"\b{colour} {noun}\b", joined) and re.search(rf"\b{noun} (is|are|that is|that are) ",
                                                                         joined), noun
    # The same mention draw as grammar 1: each attribute is named about as often.
    d1 = generate_split(400, 16, seed=11, captions_per_image=10, split="train", workers=1, grammar=1)
    for name in NAMES:
        n1 = sum(name in m for per in d1["mentions"] for m in per)
        n2 = sum(name in m for per in d["mentions"] for m in per)
        assert abs(n1 - n2) < 0.1 * n1 + 30, (name, n1, n2)


def test_grammar_versions_in_prep(tmp_path):
    import json

    from t2icli.data import PreparedDataset, load_meta
    from t2icli.data.toybirds import caption_grammar, prepare_toybirds

    for g in (1, 2):
        prepare_toybirds(str(tmp_path / f"g{g}"), size=16, n_train=8, n_test=4, captions_per_image=2, workers=1,
                         grammar=g)
        assert caption_grammar(load_meta(tmp_path / f"g{g}")) == g
    # Same birds, different words.
    a, b = (PreparedDataset(str(tmp_path / f"g{g}"), "train", train=False) for g in (1, 2))
    assert np.array_equal(np.asarray(a.images_uint8), np.asarray(b.images_uint8))
    assert np.array_equal(a.attributes, b.attributes)
    assert [a.caption_texts(i) for i in range(8)] != [b.caption_texts(i) for i in range(8)]
    # A folder prepared before grammars were recorded (no "grammar" key) is grammar 1 and still loads.
    meta_path = tmp_path / "g1" / "dataset.json"
    meta = json.loads(meta_path.read_text())
    del meta["generator"]["grammar"]
    meta_path.write_text(json.dumps(meta))
    assert caption_grammar(load_meta(tmp_path / "g1")) == 1
    old = PreparedDataset(str(tmp_path / "g1"), "test", train=False)
    grammar1 = generate_split(4, 16, seed=0, captions_per_image=2, split="test", workers=1, grammar=1)
    assert [old.caption_texts(i) for i in range(4)] == grammar1["captions"]
    assert len(old[0]["images"]) == 1
    with pytest.raises(ValueError, match="grammar"):
        generate_split(2, 16, grammar=3)


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
