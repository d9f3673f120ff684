"""Caption grammar version 2 of toybirds: the many ways people phrase a bird's colours, size and setting.

Version 1 (``toybirds._make_caption``) says nearly everything one way: colour before noun ("a red crown"), the
body colour on "bird", a fixed lexicon. A user types "the wings are blue", "red body, blue wings", "a bird with a
yellow bill and a grey head": word orders, clauses and synonyms version 1 never produced, and words it never
put in the vocabulary (dropped at encoding time, so they carry no information). Version 2 draws, for the same
facts (which attributes a caption names is drawn exactly as in version 1), one of several sentence plans:

  subject    [opener] det [size] [compound] [body colour] bird + with/has/featuring + part phrases
  predicate  "this bird is mostly red" + with/and has + part phrases
  list       part phrases with the body among them ("blue wings and a red body") [+ "on this small bird"]
  clauses    [intro sentence] + clauses ("its wings are blue", "the bill is long and yellow", "it is tiny")

with colour-first and colour-last phrases for every part ("blue wings", "wings that are blue", "its wings are
blue", "a blue-winged bird"), CUB annotators' synonyms (bill, head/cap, breast/chest/underside, plumage,
tiny/little, big/huge, mid-sized, grey) and the setting at the start, the end or in a sentence of its own.
Every caption still names the body and wing colours, states exactly the attributes in its mention list and
nothing else, and fits the word limit (a plan that comes out longer is redrawn; after a few tries a compact
plan is used). Phrasings kept out of this grammar on purpose live in scripts/paraphrases.py (the held-out test
set): do not add them here.
"""

from __future__ import annotations

import re

import numpy as np

from t2icli.data import toybirds as _v1
from t2icli.data.toybirds import WORD_LIMIT

_WORD = re.compile(r"\w+")  # the tokenizer's word pattern (t2icli.data.text)
_AN = re.compile(r"\ba ([aeiou])")

# The mention draw is version 1's (same attributes, same weights): the same share of captions names each
# attribute under both grammars, so accuracies measured on the two are comparable.
_MENTIONABLE, _OPTIONAL, _INV_WEIGHTS = _v1._MENTIONABLE, _v1._OPTIONAL, _v1._INV_WEIGHTS

# ---------------------------------------------------------------------------
# Lexicon
# ---------------------------------------------------------------------------

#: Nouns per part: (noun phrase, verb agreeing with it, takes the article "a"). Repeats weight the choice.
_NOUNS = {
    "body": [("body", "is", True), ("body", "is", True), ("plumage", "is", False), ("feathers", "are", False)],
    "wing": [("wings", "are", False), ("wings", "are", False), ("wings", "are", False),
             ("wing feathers", "are", False)],
    "crown": [("crown", "is", True), ("crown", "is", True), ("head", "is", True), ("cap", "is", True)],
    "belly": [("belly", "is", True), ("belly", "is", True), ("breast", "is", True), ("chest", "is", True),
              ("underside", "is", True), ("underbelly", "is", True), ("breast and belly", "are", True),
              ("underparts", "are", False)],
    "beak": [("beak", "is", True), ("beak", "is", True), ("bill", "is", True)],
}
#: "a blue-winged bird": compound adjectives, at most one per caption, only in the subject plan.
_COMPOUND = {"wing": ["winged"], "crown": ["headed", "crowned"], "belly": ["bellied", "breasted"],
             "beak": ["billed", "beaked"]}
_SIZE_WORDS = {"small": ["small", "small", "little", "tiny"],
               "medium": ["medium", "medium-sized", "mid-sized", "average-sized"],
               "large": ["large", "large", "big", "huge"]}
_LENGTH_WORDS = {"short": ["short", "short", "stubby"], "long": ["long"]}
_BRIGHT = {"red", "orange", "yellow", "green", "blue", "purple"}  # "bright red"; not "bright black"
#: The setting; none of these holds a palette colour word or a size, part or beak-length word.
_BACKGROUND_PHRASES = {
    "sky": ["against a clear sky", "in front of the sky", "flying across the sky", "in the sky", "up in the sky",
            "against the sky"],
    "grass": ["on the grass", "standing in the grass", "sitting on the grass", "in a grassy field", "on the lawn",
              "in a meadow"],
    "sand": ["on the sand", "standing on the sand", "walking on the sand", "on a sandy beach", "on the beach",
             "in the desert"],
    "night": ["at night", "in the dark of night", "out at night", "at nighttime", "in the dark", "late at night"],
}
_SENTENCE_BG = ("on ", "in ", "standing", "sitting", "walking", "flying", "out ", "up ")  # read well after "it is"
_OPENERS = ["this is a", "here is a", "a picture of a", "an image of a", "a photo of a"]


class _Draws:
    """Uniform numbers taken in blocks of 64 from one numpy Generator.

    One ``rng.random(64)`` call costs about as much as one ``rng.integers(n)``; a caption takes 20-40 draws,
    so this keeps version 2 about as cheap as version 1 (prep time is dominated by drawing the birds).
    """

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.u = rng.random(64).tolist()
        self.k = 0

    def uniform(self) -> float:
        if self.k == len(self.u):
            self.u, self.k = self.rng.random(64).tolist(), 0
        self.k += 1
        return self.u[self.k - 1]

    def pick(self, options):
        return options[int(self.uniform() * len(options))]

    def chance(self, p: float) -> bool:
        return self.uniform() < p

    def shuffle(self, items: list) -> list:
        for i in range(len(items) - 1, 0, -1):
            j = int(self.uniform() * (i + 1))
            items[i], items[j] = items[j], items[i]
        return items


def _n_words(text: str) -> int:
    return len(_WORD.findall(text))


# ---------------------------------------------------------------------------
# Phrases
# ---------------------------------------------------------------------------


class _Facts:
    """The attribute values one caption states (None = not stated) and the draws that phrase them."""

    def __init__(self, names: dict, mentioned: set, d: _Draws):
        self.d = d
        self.body = names["body"] if "body" in mentioned else None
        self.size = d.pick(_SIZE_WORDS[names["size"]]) if "size" in mentioned else None
        self.length = d.pick(_LENGTH_WORDS[names["beak_length"]]) if "beak_length" in mentioned else None
        self.colour = {p: names[p] for p in ("wing", "crown", "belly", "beak") if p in mentioned}
        self.background = names["background"] if "background" in mentioned else None
        # The parts said after the subject (the beak when its colour or its length is stated).
        self.parts = [p for p in ("wing", "crown", "belly", "beak")
                      if p in self.colour or (p == "beak" and self.length)]

    def colour_word(self, c: str) -> str:
        """'red', sometimes 'bright red'; gray is 'grey' a third of the time."""
        if c == "gray":
            return "grey" if self.d.chance(0.3) else "gray"
        return f"bright {c}" if c in _BRIGHT and self.d.chance(0.06) else c

    def noun(self, part: str):
        return self.d.pick(_NOUNS[part])

    def part_np(self, part: str) -> str:
        """Colour-first noun phrase: 'blue wings', 'a red head', 'a long yellow bill', 'a red body'."""
        noun, _, article = self.noun(part)
        words = []
        if part == "beak" and self.length:
            words.append(self.length)
        c = self.body if part == "body" else self.colour.get(part)
        if c is not None:
            words.append(self.colour_word(c))
        words.append(noun)
        return ("a " if article else "") + " ".join(words)

    def part_relative(self, part: str) -> str:
        """Colour-last noun phrase: 'wings that are blue', 'a bill that is long and yellow'."""
        noun, verb, article = self.noun(part)
        return ("a " if article else "") + f"{noun} that {verb} " + self.predicate(part)

    def predicate(self, part: str) -> str:
        """What follows 'is/are': 'blue', 'long and yellow', 'short'."""
        c = self.body if part == "body" else self.colour.get(part)
        words = [self.colour_word(c)] if c is not None else []
        if part == "beak" and self.length:
            words.insert(self.d.pick([0, len(words)]), self.length)
        return " and ".join(words)

    def part_phrase(self, part: str) -> str:
        """A part in a list: colour-first most of the time, colour-last otherwise."""
        return self.part_relative(part) if self.d.chance(0.2) else self.part_np(part)

    def clause(self, part: str, first: bool) -> str:
        """A clause about one part: 'its wings are blue', "this bird's bill is long", 'it has a red crown'."""
        d = self.d
        if part == "body" and d.chance(0.4):
            c = self.colour_word(self.body)
            return d.pick([f"it is mostly {c}", f"it is {c} all over"])
        if d.chance(0.25):
            return "it has " + self.part_np(part)
        noun, verb, _ = self.noun(part)
        owner = d.pick(["this bird's", "the bird's"]) if first and d.chance(0.4) else d.pick(["its", "the", "its"])
        return f"{owner} {noun} {verb} " + self.predicate(part)

    def background_phrase(self) -> str:
        return self.d.pick(_BACKGROUND_PHRASES[self.background])


def _join(items: list[str], d: _Draws) -> str:
    """'a', 'a and b', 'a, b and c', sometimes 'a, b, and c' or 'a, b, c'."""
    if len(items) == 1:
        return items[0]
    u = d.uniform()
    if len(items) >= 3 and u < 0.15:
        return ", ".join(items[:-1]) + ", and " + items[-1]
    if len(items) >= 2 and u > 0.9:
        return ", ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# ---------------------------------------------------------------------------
# Sentence plans
# ---------------------------------------------------------------------------


def _subject(f: _Facts, body_in_subject: bool, compound_part: str | None) -> tuple[str, str]:
    """(subject noun phrase, its determiner): '[this is] a small blue-winged mostly red bird'."""
    d = f.d
    det = d.pick(["this", "the", "a", "a"])
    words = []
    if f.size:
        words.append(f.size)
    if compound_part:
        c = f.colour[compound_part]
        words.append(f"{f.colour_word(c)}-{d.pick(_COMPOUND[compound_part])}")
    if body_in_subject:
        words.append(("mostly " if d.chance(0.15) else "") + f.colour_word(f.body))
    words.append("bird")
    if det == "a" and d.chance(0.5):
        return d.pick(_OPENERS) + " " + " ".join(words), "a"
    return det + " " + " ".join(words), det


def _plan_subject(f: _Facts) -> str:
    """'a small red bird with blue wings and a bill that is long', 'this blue-winged bird has a red body'."""
    d = f.d
    body_in_subject = d.chance(0.7)
    compound = None
    if d.chance(0.15):
        eligible = [p for p in f.parts if p in f.colour and not (p == "beak" and f.length)]
        compound = d.pick(eligible) if eligible else None
    subject, det = _subject(f, body_in_subject, compound)
    parts = [p for p in f.parts if p != compound]
    if not body_in_subject:
        parts.append("body")
    d.shuffle(parts)
    if not parts:
        return subject
    if det == "a":
        connector = d.pick([" with ", " with ", " that has ", " featuring ", " having "])
    else:
        connector = d.pick([" has ", " has ", " with ", " featuring "])
    return subject + connector + _join([f.part_phrase(p) for p in parts], d)


def _plan_predicate(f: _Facts) -> str:
    """'this bird is mostly red with blue wings', 'the tiny bird is red all over and has a grey cap'."""
    d = f.d
    det = d.pick(["this", "the"])
    sz = f"{f.size} " if f.size and d.chance(0.6) else ""
    c = f.colour_word(f.body)
    body = d.pick([c, f"mostly {c}", f"mostly {c}", f"{c} all over", f"entirely {c}"])
    # "the bird is medium and red" reads badly: a predicate medium size is "medium-sized".
    size_pred = f"{'medium-sized' if f.size == 'medium' else f.size} and " if f.size and not sz else ""
    text = f"{det} {sz}bird is {size_pred}{body}"
    parts = d.shuffle(list(f.parts))
    return text + d.pick([" with ", " and has ", ", with "]) + _join([f.part_phrase(p) for p in parts], d)


def _plan_list(f: _Facts) -> str:
    """'blue wings and a red body', 'red plumage, blue wings and a stubby bill on this small bird'."""
    d = f.d
    parts = d.shuffle(list(f.parts) + ["body"])
    tail = d.uniform() < 0.5 if f.size else d.uniform() < 0.25  # "... on this small bird"
    # Colour-last phrases only without a tail: "wings that are purple on this bird" would bind purple to the bird.
    text = _join([f.part_np(p) if tail or d.chance(0.85) else f.part_relative(p) for p in parts], d)
    if tail:
        return text + d.pick([" on this ", " on a "]) + (f"{f.size} " if f.size else "") + "bird"
    return d.pick([f"{f.size} bird, {text}", f"a {f.size} bird: {text}"]) if f.size else text


def _plan_clauses(f: _Facts) -> str:
    """'this is a small bird. its wings are blue and its body is red', "the bird's bill is long. it has ..."."""
    d = f.d
    intro = ""
    parts = list(f.parts) + ["body"]
    if f.size or d.chance(0.3):
        sz = f"{f.size} " if f.size else ""
        if d.chance(0.35):  # the body colour in the intro: "this is a small red bird."
            parts.remove("body")
            sz += f.colour_word(f.body) + " "
        intro = d.pick([f"this is a {sz}bird", f"here is a {sz}bird", f"a {sz}bird", f"it is a {sz}bird"])
    d.shuffle(parts)
    clauses = [f.clause(p, first=(k == 0 and not intro)) for k, p in enumerate(parts)]
    body = clauses[0]
    for c in clauses[1:]:
        body += d.pick([" and ", ", ", ". ", ". "]) + c
    return f"{intro}. {body}" if intro else body


_PLANS = [(_plan_subject, 0.4), (_plan_predicate, 0.15), (_plan_list, 0.15), (_plan_clauses, 0.3)]
_PLAN_CDF = np.cumsum([w for _, w in _PLANS]).tolist()


def _compose(f: _Facts) -> str:
    u = f.d.uniform() * _PLAN_CDF[-1]
    plan = next(p for (p, _), c in zip(_PLANS, _PLAN_CDF) if u < c)
    text = plan(f)
    if f.background:
        bg = f.background_phrase()
        u = f.d.uniform()
        if u < 0.35:
            text = f"{bg}, {text}"
        elif u < 0.8 or not bg.startswith(_SENTENCE_BG):
            text = f"{text}{f.d.pick([', ', ' '])}{bg}"
        else:
            text = f"{text}. it is {bg}"
    return text


def _compact(f: _Facts) -> str:
    """The shortest plan, plain colours and the first noun of each part (at most 17 words for any mention set):
    'a medium-sized red bird with blue wings, a long red beak in the dark of night'."""
    items = []
    for p in f.parts:
        noun, _, article = _NOUNS[p][0]
        length = f"{f.length} " if p == "beak" and f.length else ""
        colour = f"{f.colour[p]} " if p in f.colour else ""
        items.append(("a " if article else "") + length + colour + noun)
    sz = f"{f.size} " if f.size else ""
    text = f"a {sz}{f.body} bird with " + ", ".join(items)
    return f"{text} {f.background_phrase()}" if f.background else text


def make_caption(names: dict, rng: np.random.Generator) -> tuple[str, list[str]]:
    """One grammar-2 caption of a bird and the attributes it states.

    names: {attribute name: value name} of the bird (all 8 of toybirds.ATTRIBUTES). The caption names body and
    wing colour and 0-3 other attributes drawn as in version 1. Returns (lower-case text of at most
    WORD_LIMIT words, mentioned attribute names in toybirds.ATTRIBUTES order).
    """
    d = _Draws(rng)
    k = int(d.uniform() * 4)
    # Weighted draw of k optional attributes without replacement (Efraimidis-Spirakis keys u^(1/w)).
    keys = np.array([d.uniform() for _ in _OPTIONAL]) ** _INV_WEIGHTS
    chosen = {"body", "wing"} | {_OPTIONAL[i] for i in np.argsort(-keys, kind="stable")[:k].tolist()}
    mentioned = [a for a in _MENTIONABLE if a in chosen]
    f = _Facts(names, chosen, d)
    for _ in range(4):  # long plans are redrawn: AttnGAN cuts over-long captions at random
        text = _compose(f)
        if _n_words(text) <= WORD_LIMIT:
            break
    else:
        text = _compact(f)
    return _AN.sub(r"an \1", text), mentioned
