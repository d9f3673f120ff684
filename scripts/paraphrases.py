"""Write a held-out paraphrase test set for a prepared toybirds folder: its test captions' facts in other words.

    python scripts/paraphrases.py --data data/toybirds --out para.jsonl [--n 2000] [--seed 0]
    t2i eval --metric attr --model runs/attngan --data data/toybirds --captions para.jsonl --json
    t2i eval --metric attr --model runs/attngan --data data/toybirds --n-samples 2000 --json   # own phrasings

Line j paraphrases test caption j (cycling, in the order `t2i eval` takes them): the same image, exactly the
attributes that caption names, with their true values, so that with `--n-samples` equal to the number of lines
the two evaluations differ only in the wording (and each line's image uses the noise of (seed, j) in both).
Each line is {"text": ..., "attributes": {name: value}, "image": "test/000123", "group": "telegraphic"} (the
`t2i eval --captions` format; "group" names the wording's frame, so the evaluation also reports each frame's
accuracy, "by_group"). `--own` writes the data set's own captions in that format instead (group "own"; a
like-for-like check: evaluating that file gives exactly the numbers of the plain evaluation).

The phrasings here are kept OUT of the caption grammar (t2icli/data/toybirds_grammar.py) on purpose, so that no
model trains on them: "whose", "X of this bird", "colored", "both", "except", "but/while", telegraphic
"wings blue", "some blue on the wings", "plus/as well as/along with", sizes "in size"/"quite small", settings
"the background is ...", openers "there is/show me/draw", capitals and full stops. Every line holds at least
one of HELD_OUT (tests check that the grammar never produces any of them). Content words are mostly the
grammar's (colours, part nouns); words outside a model's vocabulary are dropped when it reads them, and
`t2i eval --captions` reports how many there were.
"""

import argparse
import json
import os
import re
import sys

import numpy as np

from t2icli.fileio import atomic_write_bytes

#: One of these is in every paraphrase and in no caption of the grammar (regular expressions on the lower-cased
#: text).
HELD_OUT = [
    r"\bwhose\b", r"\bof (this|the) bird\b", r"\bcolou?red\b", r"\bboth\b", r"\bexcept\b", r"\bbut\b",
    r"\bwhile\b", r"\bplus\b", r"\bas well as\b", r"\balong with\b", r"\bin size\b", r"\bsize\b",
    r"\bbackground\b", r"\bscene\b", r"\bsome \w+ on\b", r"\bbit of\b", r"\bthere is\b", r"\bshow me\b",
    r"\bdraw\b", r"^(mostly |bright |entirely )?\w+( all over| overall)?, (this|the) ",
    r"\b(wings|body|plumage|head|crown|belly|breast|chest|bill|beak): ",
    r"\b(wings|body|plumage|head|crown|belly|breast|chest|bill|beak) (red|orange|yellow|green|blue|purple|brown|"
    r"black|white|gr[ae]y)\b",
]

# (noun, verb) per part; every noun here is also a grammar noun, so the wording, not the vocabulary, is new.
NOUNS = {"body": [("body", "is"), ("plumage", "is")], "wing": [("wings", "are")],
         "crown": [("head", "is"), ("crown", "is"), ("cap", "is")],
         "belly": [("belly", "is"), ("breast", "is"), ("chest", "is"), ("underside", "is")],
         "beak": [("bill", "is"), ("beak", "is")]}
SIZE = {"small": ["small", "tiny", "little"], "medium": ["medium"], "large": ["large", "big"]}
SIZE_PHRASE = {"small": ["small in size", "of small size", "quite small", "fairly tiny", "rather little"],
               "medium": ["medium in size", "of medium size", "average in size"],
               "large": ["large in size", "of large size", "quite big", "fairly large", "rather huge"]}
LENGTH = {"short": ["short", "stubby"], "long": ["long"]}
BACKGROUND = {"sky": ["the sky", "a clear sky"], "grass": ["grass", "a grassy field", "a lawn"],
              "sand": ["sand", "a sandy beach", "the desert"], "night": ["night", "the dark of night"]}
OPENERS_NP = ["", "", "", "there is ", "show me ", "draw ", "i see ", "please draw "]


class Facts:
    """What one line states: values by attribute name (only the stated ones), and the line's random draws."""

    def __init__(self, stated: dict, rng: np.random.Generator):
        self.s, self.rng = stated, rng

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p):
        return self.rng.random() < p

    def colour(self, part):
        c = self.s[part]
        return ("grey" if self.chance(0.4) else "gray") if c == "gray" else c

    def noun(self, part):
        return self.pick(NOUNS[part])

    def colour_parts(self):
        """Stated colour parts other than the body, shuffled (the beak also when only its length is stated)."""
        parts = [p for p in ("wing", "crown", "belly", "beak")
                 if p in self.s or (p == "beak" and "beak_length" in self.s)]
        return [parts[i] for i in self.rng.permutation(len(parts))]

    def beak_words(self):
        """(length word or None, colour word or None) of the beak."""
        length = self.pick(LENGTH[self.s["beak_length"]]) if "beak_length" in self.s else None
        return length, (self.colour("beak") if "beak" in self.s else None)

    def predicate(self, part):
        """'blue', 'long and black', 'short'."""
        if part != "beak":
            return self.colour(part)
        length, colour = self.beak_words()
        return " and ".join(w for w in (length, colour) if w)

    def np(self, part):
        """Plain noun phrase: 'blue wings', 'a yellow head', 'a long black bill'."""
        noun, verb = self.noun(part)
        if part == "beak":
            length, colour = self.beak_words()
            words = ", ".join(w for w in (length, colour) if w) if self.chance(0.3) else " ".join(
                w for w in (length, colour) if w)
            return f"a {words} {noun}"
        return ("" if verb == "are" else "a ") + f"{self.colour(part)} {noun}"

    def size_phrase(self):
        return self.pick(SIZE_PHRASE[self.s["size"]])

    def background_sentence(self):
        """A held-out statement of the setting."""
        b = self.pick(BACKGROUND[self.s["background"]])
        return self.pick([f"the background is {b}", f"the scene is {b}", f"with {b} in the background",
                          f"{b} in the background"])


def _and(items, f):
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f.pick([" and ", ", and "]) + items[-1]


def _shared_colour_clauses(parts, f):
    """Clauses for parts, two parts of the same colour said once: 'its head and belly are both yellow'."""
    out, done = [], set()
    for p in parts:
        if p in done:
            continue
        twin = next((q for q in parts if q != p and q not in done and q != "beak" and p != "beak"
                     and f.s.get(q) == f.s.get(p)), None)
        if twin and f.chance(0.8):
            n1, n2 = f.noun(p)[0], f.noun(twin)[0]
            out.append(f"its {n1} and {n2} are both {f.colour(p)}")
            done |= {p, twin}
        else:
            noun, verb = f.noun(p)
            out.append(f"{f.pick(['its', 'the'])} {noun} {verb} {f.predicate(p)}")
            done.add(p)
    return out


# ---------------------------------------------------------------------------
# Frames: each states every fact of the line, in a wording the grammar never uses
# ---------------------------------------------------------------------------


def frame_whose(f):
    """'there is a small bird whose wings are blue and whose body is red'."""
    size = f"{f.pick(SIZE[f.s['size']])} " if "size" in f.s and f.chance(0.5) else ""
    parts = f.colour_parts() + ["body"]
    parts = [parts[i] for i in f.rng.permutation(len(parts))]
    clauses = []
    for p in parts:
        noun, verb = f.noun(p)
        clauses.append(f"whose {noun} {verb} {f.predicate(p)}")
    if "size" in f.s and not size:
        return f"{f.pick(OPENERS_NP)}a bird, {f.size_phrase()}, " + _and(clauses, f)
    return f"{f.pick(OPENERS_NP)}a {size}bird " + _and(clauses, f)


def frame_of(f):
    """'the wings of this bird are blue, its head and belly are both yellow and the body is red'."""
    parts = f.colour_parts() + ["body"]
    parts = [parts[i] for i in f.rng.permutation(len(parts))]
    noun, verb = f.noun(parts[0])
    first = f"the {noun} of {f.pick(['this', 'the'])} bird {verb} {f.predicate(parts[0])}"
    rest = _shared_colour_clauses(parts[1:], f)
    text = _and([first] + rest, f)
    if "size" in f.s:
        text += f". the bird is {f.size_phrase()}"
    return text


def frame_telegraphic(f):
    """'body red, wings blue, bill long and black, small size' or 'wings: blue; body: red'."""
    parts = f.colour_parts() + ["body"]
    parts = [parts[i] for i in f.rng.permutation(len(parts))]
    sep = f.pick([" ", ": "])
    items = [f"{f.noun(p)[0]}{sep}{f.predicate(p)}" for p in parts]
    if "size" in f.s:
        items.append(f.pick([f"size{sep}{f.s['size']}", f"{f.pick(SIZE[f.s['size']])} size"]))
    if "background" in f.s:
        items.append(f"background{sep}{f.s['background']}")
    return f.pick([", ", "; "]).join(items)


def frame_colored(f):
    """'a small bird colored red with wings colored blue and a head colored yellow'."""
    col = f.pick(["colored", "coloured"])
    size = f"{f.pick(SIZE[f.s['size']])} " if "size" in f.s else ""
    items = []
    for p in f.colour_parts():
        noun, verb = f.noun(p)
        if p == "beak" and "beak" not in f.s:
            items.append(f.np(p))  # length only: nothing to colour
        elif p == "beak" and "beak_length" in f.s:
            length, colour = f.beak_words()
            items.append(f"a {length} {noun} {col} {colour}")
        else:
            items.append(("" if verb == "are" else "a ") + f"{noun} {col} {f.colour(p)}")
    body = f.colour("body")
    subject = f.pick([f"a {size}bird {col} {body}", f"a {size}{body} {col} bird"])
    return f"{f.pick(OPENERS_NP)}{subject} with " + _and(items, f)


def frame_except(f):
    """'a red bird except for its blue wings and yellow head'."""
    size = f"{f.pick(SIZE[f.s['size']])} " if "size" in f.s else ""
    items = []
    for p in f.colour_parts():
        noun, verb = f.noun(p)
        if p == "beak":
            length, colour = f.beak_words()
            items.append(" ".join(w for w in (length, colour, noun) if w))
        else:
            items.append(f"{f.colour(p)} {noun}")
    body = f.colour("body")
    lead = f.pick([f"a {size}{body} bird", f"a {size}bird that is all {body}", f"a {size}all {body} bird"])
    return f"{f.pick(OPENERS_NP)}{lead} except for its " + _and(items, f)


def frame_some_on(f):
    """'a mostly red bird with some blue on the wings and a bit of yellow on its head'."""
    size = f"{f.pick(SIZE[f.s['size']])} " if "size" in f.s else ""
    items = []
    for p in f.colour_parts():
        noun, _ = f.noun(p)
        if p == "beak":
            items.append(f.np(p))
        else:
            items.append(f"{f.pick(['some', 'some', 'a bit of'])} {f.colour(p)} on {f.pick(['the', 'its'])} {noun}")
    return f"{f.pick(OPENERS_NP)}a {size}{f.pick(['mostly ', ''])}{f.colour('body')} bird with " + _and(items, f)


def frame_contrast(f):
    """'its body is red but its wings are blue, and it has a long black bill'."""
    others = f.colour_parts()
    wing = others.pop(others.index("wing"))
    b_noun, b_verb = f.noun("body")
    w_noun, w_verb = f.noun("wing")
    one, two = (f"its {b_noun} {b_verb} {f.colour('body')}", f"its {w_noun} {w_verb} {f.colour(wing)}")
    if f.chance(0.5):
        one, two = two, one
    text = f"{one} {f.pick(['but', 'while'])} {two}"
    if others:
        text += f.pick([", and it has ", ". it has "]) + _and([f.np(p) for p in others], f)
    if "size" in f.s:
        return f"this bird is {f.size_phrase()}. {text}" if f.chance(0.5) else f"{text}. it is {f.size_phrase()}"
    return text


def frame_adjective_first(f):
    """'red all over, this bird has blue wings plus a yellow head'."""
    c = f.colour("body")
    lead = f.pick([f"{c} all over", f"mostly {c}", f"{c} overall", f"entirely {c}"])
    size = f"{f.pick(SIZE[f.s['size']])} " if "size" in f.s else ""
    items = [f.np(p) for p in f.colour_parts()]
    joined = items[0] if len(items) == 1 else ", ".join(items[:-1]) + f.pick([" plus ", " as well as ",
                                                                                " along with "]) + items[-1]
    return f"{lead}, {f.pick(['this', 'the'])} {size}bird has {joined}"


def frame_plus(f):
    """'a small bird with blue wings as well as a red body and a stubby bill'."""
    size = f"{f.pick(SIZE[f.s['size']])} " if "size" in f.s else ""
    items = [f.np(p) for p in f.colour_parts()] + [f.pick([f"a {f.colour('body')} body",
                                                           f"{f.colour('body')} plumage"])]
    items = [items[i] for i in f.rng.permutation(len(items))]
    glue = f.pick([" plus ", " as well as ", " along with "])  # items has the wing and the body at least
    return f"{f.pick(OPENERS_NP)}a {size}bird with {items[0]}{glue}" + _and(items[1:], f)


FRAMES = [frame_whose, frame_of, frame_telegraphic, frame_colored, frame_except, frame_some_on, frame_contrast,
          frame_adjective_first, frame_plus]


def frame_name(frame) -> str:
    """A frame's group label in the file: frame_telegraphic -> "telegraphic"."""
    return frame.__name__.removeprefix("frame_")


def paraphrase(stated: dict, rng: np.random.Generator) -> tuple[str, str]:
    """(one held-out caption stating exactly `stated` ({attribute name: value name}; always body and wing), the
    name of the frame it took).

    The setting, when stated, is added in a held-out form unless the frame says it already; capitals and a
    full stop are added sometimes, as people type them (the tokenizer lower-cases and drops punctuation).
    """
    f = Facts(stated, rng)
    frame = FRAMES[int(rng.integers(len(FRAMES)))]
    text = frame(f)
    if "background" in stated and frame is not frame_telegraphic:  # the telegraphic frame lists the setting
        bg = f.background_sentence()
        text += (". " if bg.startswith("the ") else f.pick([", ", " "])) + bg
    text = re.sub(r"\ba ([aeiou])", r"an \1", text)
    if f.chance(0.3):
        text = ". ".join(s[:1].upper() + s[1:] for s in text.split(". ")) + "."
    return text, frame_name(frame)


def held_out(text: str) -> list[str]:
    """The HELD_OUT patterns found in `text` (lower-cased)."""
    t = text.lower()
    return [p for p in HELD_OUT if re.search(p, t)]


# ---------------------------------------------------------------------------
# The file
# ---------------------------------------------------------------------------


def _test_rows(data, n):
    """(split name, dataset.json dict, rows [n], image index [n], mention bits [n], attributes [N, A], filenames [N],
    texts [n_captions]) of the split `t2i eval` draws test captions from, cycled to n rows."""
    meta_path = os.path.join(data, "dataset.json")
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        sys.exit(f"--data {data}: not a prepared dataset ({exc})")
    if meta.get("source") != "toybirds" or not meta.get("attributes"):
        sys.exit(f"--data {data}: not a toybirds folder (paraphrases need its attribute truth)")
    split = "test" if "test" in meta["splits"] else "train"
    folder = os.path.join(data, split)
    try:
        per_image = np.load(os.path.join(folder, "image_captions.npy"))
        mentions = np.load(os.path.join(folder, "caption_mentions.npy"))
        attributes = np.load(os.path.join(folder, "attributes.npy"))
        with open(os.path.join(folder, "captions.jsonl"), encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh]
    except (OSError, ValueError) as exc:
        sys.exit(f"--data {data}: unreadable {split} split ({exc}); prepare it again")
    n_caps = int(per_image[-1])
    rows = np.arange(n) % n_caps
    image_of_row = np.repeat(np.arange(len(per_image) - 1), np.diff(per_image))
    texts = [t for r in records for t in r["captions"]]
    return meta, rows, image_of_row[rows], mentions[rows], attributes, [r["file"] for r in records], texts


def write_paraphrases(data, out, n=2000, seed=0, own=False):
    """Write n lines (see the module docstring) to `out` (a temporary file renamed into place); returns counts."""
    meta, rows, images, bits, attributes, files, texts = _test_rows(data, n)
    schema = meta["attributes"]
    lines, n_held = [], 0
    for j, (row, i, b) in enumerate(zip(rows.tolist(), images.tolist(), bits.tolist())):
        stated = {a["name"]: a["values"][int(attributes[i, k])] for k, a in enumerate(schema) if (b >> k) & 1}
        if own:
            text, group = texts[row], "own"
        else:
            text, group = paraphrase(stated, np.random.default_rng([int(seed), j, 0x9A7A]))
            n_held += bool(held_out(text))
        lines.append(json.dumps({"text": text, "attributes": stated, "image": files[i], "group": group}) + "\n")
    try:
        atomic_write_bytes(out, "".join(lines).encode("utf-8"))
    except OSError as exc:
        sys.exit(f"--out {out}: cannot write ({exc.strerror})")
    return {"out": out, "lines": len(lines), "own": bool(own), "with_held_out_wording": n_held, "seed": int(seed)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, metavar="DIR", help="prepared toybirds folder (its test split)")
    ap.add_argument("--out", required=True, metavar="FILE.jsonl", help="captions file to write")
    ap.add_argument("--n", type=int, default=2000, metavar="N", help="lines, cycling over the test captions")
    ap.add_argument("--seed", type=int, default=0, metavar="INT", help="seed of the wording draws")
    ap.add_argument("--own", action="store_true", help="write the data set's own test captions instead")
    args = ap.parse_args()
    if args.n < 1:
        ap.error("--n must be at least 1")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        ap.error(f"--out {args.out}: its folder does not exist")
    print(json.dumps(write_paraphrases(args.data, args.out, args.n, args.seed, args.own)))


if __name__ == "__main__":
    main()
