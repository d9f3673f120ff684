"""Hard negative captions: a caption with one attribute word changed, so it no longer fits its image.

In-batch negatives of the DAMSM loss are other birds' captions; on toybirds (and mostly on CUB) they differ from
the true caption in the class colours, so the loss is satisfied once body and wing colours match and the
encoders never need the crown, belly or beak. A copy of the true caption with one colour (or size, beak length,
scene or part noun) changed to another value of the same kind is a negative that differs in exactly that fact:
scored against the image beside the true caption, it asks the encoders for every word the caption states and for
where each colour is (the "hard negative captions" of NegCLIP, Yuksekgonul et al. 2023, here on token ids).

Edits are made grammatical as far as tokens allow, so the text encoder cannot tell an edited caption from a real
one without looking at the image: the article before the word follows the new word ("an orange" -> "a red"),
synonyms of the old value are never used as its replacement ("gray" -> "grey" would still be true), and a size
word inside a compound ("medium sized") is not edited.

That is not enough where a word lives in its own phrase: toybirds says "at night" and "on the grass", so "at sky"
and "on the night" are captions no real image has, and a discriminator trained on them as wrong pairs learns to
reject them from the text alone. Measured on a toybirds-pretrained AttnGAN (6000 steps): its Ds scored a
scene-edited caption 0.00 even beside a real image that it describes truly, and the true caption 0.72-0.80 beside
an image with another scene; the scene word was never read from the image (attribute accuracy on background 0.24,
chance 0.25). With a corpus (the training captions), an edit is kept only if every bigram and trigram it creates
occurs in the corpus (or was already absent before the edit, where cutting a long caption made it), so edited
captions read like real ones.
"""

import numpy as np
import torch

from t2icli.errors import ConfigError

__all__ = ["WORD_KINDS", "CaptionEditor", "editor_for", "captions_of"]

#: Kinds of attribute words: kind -> values, each value a tuple of synonyms (the first is its name). An edit
#: replaces a word by a word of another value of the same kind. Words missing from a vocabulary are ignored.
WORD_KINDS = {
    "colour": [("red",), ("orange",), ("yellow",), ("green",), ("blue",), ("purple", "violet"), ("pink",),
               ("brown",), ("black",), ("white",), ("gray", "grey")],
    "size": [("small", "little", "tiny"), ("medium",), ("large", "big", "huge")],
    "length": [("short", "stubby"), ("long",)],
    # The setting: the bird's background. Only nouns (and their adjectives) that name nothing else; "dark" is left
    # out because CUB's captions use it for colours ("dark brown"). Toybirds states its background in 15% of its
    # captions; without these edits hardly any negative differs from the true caption in it alone, and the
    # encoders (then the generator) learn to ignore it.
    "scene": [("sky",), ("grass", "grassy", "lawn", "meadow"), ("sand", "sandy", "beach", "desert"),
              ("night", "nighttime"), ("water",)],
    # The part a colour belongs to: "a red crown" -> "a red belly" keeps every word's colour and moves one to
    # another part, so it is false only for a model that knows where the colour is. Colour edits alone are met by
    # "there is red somewhere": the model shipped before these edits drew a "red crown" on the belly (its attention
    # map for "red").
    # Singular nouns only, so the verb still agrees ("wings are" stays). The edit can be true by chance (the other
    # part has that colour too: 1 in 10 on toybirds), a noisy negative as a colour synonym would be.
    "part": [("crown", "head", "cap"), ("belly", "breast", "chest", "underside", "underbelly"), ("beak", "bill"),
             ("body",)],
    "part_adjective": [("crowned", "headed"), ("bellied", "breasted"), ("billed", "beaked")],
}
_VOWELS = set("aeiou")


class CaptionEditor:
    """Makes hard negative captions from token ids of one vocabulary.

    vocab: list of words (index = token id, 0 = padding). editable(): whether any kind has two values in it.
    corpus: None, or the captions (token id sequences) whose n-grams an edit may create (see the module docstring).
    """

    _START, _END = -1, -2  # sentinels around a caption for its n-grams

    def __init__(self, vocab, corpus=None):
        self.ngrams = None
        if corpus is not None:
            self.ngrams = set()
            for ids in corpus:
                row = [self._START, *(int(x) for x in ids), self._END]
                self.ngrams.update(zip(row, row[1:]))
                self.ngrams.update(zip(row, row[1:], row[2:]))
        index = {w: i for i, w in enumerate(vocab)}
        self.value_of = {}  # token id -> (kind, value index)
        self.choices = {}  # kind -> [[token ids of value v] for values with a word in the vocabulary]
        for kind, values in WORD_KINDS.items():
            present = [[index[w] for w in syn if w in index] for syn in values]
            present = [ids for ids in present if ids]
            if len(present) < 2:
                continue  # one value only: nothing to change it into
            self.choices[kind] = present
            for v, ids in enumerate(present):
                for t in ids:
                    self.value_of[t] = (kind, v)
        self.article = {k: index[k] for k in ("a", "an") if k in index}
        self.sized = index.get("sized")
        self.vowel = np.array([w[:1] in _VOWELS for w in vocab])

    def editable(self):
        return bool(self.choices)

    def edit(self, tokens, lengths, u):
        """k edited copies of every caption.

        tokens: int64 [B, T] (0-padded); lengths: [B]; u: uniform draws in [0, 1) [B, k, 3] (from the step's
        generator, so a resumed run edits alike): which word, which new value, which synonym. Each copy changes
        one attribute word, drawn uniformly among the caption's, into a word of another value of its kind (with a
        corpus, among the words and values whose edit creates no unseen n-gram). Returns (tokens [B, k, T],
        valid bool [B, k]): a caption with nothing to edit gives invalid copies (its tokens unchanged).
        """
        def chooser(row, n):
            padded = None if self.ngrams is None else [self._START, *(int(x) for x in row[:n]), self._END]
            sites = [(t, c) for t in range(n) if self._site(row, t, n) for c in [self._candidates(row, t, padded)]
                     if c]  # (position, [[new token ids of another value]])
            if not sites:
                return None

            def choose(d):  # d: one copy's draws [3]
                t, values = sites[int(d[0] * len(sites))]
                synonyms = values[int(d[1] * len(values))]
                return self._replace(row, t, synonyms[int(d[2] * len(synonyms))])
            return choose

        return self._copies(tokens, lengths, u, (3,), chooser)

    def swap(self, tokens, lengths, u):
        """k copies of every caption with two of its colour words exchanged ("a red bird with blue wings" -> "a blue
        bird with red wings"): the same words, so a bag of words scores the copy as the caption, and false for an
        encoder that binds each colour to its part (NegCLIP's swapped-attribute negatives, Yuksekgonul et al. 2023).

        tokens: int64 [B, T] (0-padded); lengths: [B]; u: uniform draws in [0, 1) [B, k] (from the step's generator):
        which pair of colour words of different values, drawn uniformly (with a corpus, among the pairs whose
        exchange creates no unseen n-gram). Returns (tokens [B, k, T], valid bool [B, k]): a caption with fewer than
        two colours of different values gives invalid copies (its tokens unchanged).
        """
        def chooser(row, n):
            colours = [t for t in range(n) if self.value_of.get(int(row[t]), ("",))[0] == "colour"]
            old = None if self.ngrams is None else [self._START, *row[:n].tolist(), self._END]
            pairs = []  # the swapped caption [T] of each pair of colour words of different values
            for i, ti in enumerate(colours):
                for tj in colours[i + 1:]:
                    if self.value_of[int(row[ti])] == self.value_of[int(row[tj])]:
                        continue
                    new = self._replace(self._replace(row, ti, int(row[tj])), tj, int(row[ti]))
                    if old is None or self._keeps_ngrams(old, [self._START, *new[:n].tolist(), self._END]):
                        pairs.append(new)
            return (lambda d: pairs[int(d * len(pairs))]) if pairs else None

        return self._copies(tokens, lengths, u, (), chooser)

    @staticmethod
    def _copies(tokens, lengths, u, tail, chooser):
        """k changed copies of every caption: chooser(row [T], length) gives None where the caption has nothing to
        change, else a function of one copy's draws u[b, j] (shape `tail`) that returns the changed row. u: [B, k,
        *tail]. Returns (tokens [B, k, T], valid bool [B, k]); a caption with nothing to change keeps its tokens."""
        tok = np.asarray(tokens).copy()
        B, T = tok.shape
        u = np.asarray(u, dtype=np.float64)
        if u.ndim != 2 + len(tail) or u.shape[0] != B or u.shape[2:] != tail:
            raise ValueError(f"u must be [B={B}, k{''.join(f', {d}' for d in tail)}], got {tuple(u.shape)}")
        k = u.shape[1]
        lengths = np.asarray(lengths).astype(np.int64)
        out = np.repeat(tok[:, None, :], k, axis=1)  # [B, k, T]
        valid = np.zeros((B, k), dtype=bool)
        for b in range(B):
            choose = chooser(tok[b], int(lengths[b]))
            if choose is None:
                continue
            for j in range(k):
                out[b, j] = choose(u[b, j])
                valid[b, j] = True
        return torch.from_numpy(out), torch.from_numpy(valid)

    def _keeps_ngrams(self, a, b):
        """Whether sequence b (a with some tokens replaced; the same length) has only bigrams and trigrams that are
        in the corpus or whose counterpart in a was missing from it as well (an unchanged n-gram always passes)."""
        for n in (2, 3):
            for s in range(len(b) - n + 1):
                if tuple(b[s : s + n]) not in self.ngrams and tuple(a[s : s + n]) in self.ngrams:
                    return False
        return True

    def _replace(self, seq, t, new):
        """A copy of seq (a caption's token ids: int64 [T], or a list) with token t replaced by `new` and an article
        before it made to agree."""
        seq = seq.copy()
        seq[t] = new
        if t > 0 and int(seq[t - 1]) in self.article.values() and len(self.article) == 2:
            seq[t - 1] = self.article["an" if self.vowel[new] else "a"]
        return seq

    def _candidates(self, row, t, padded=None):
        """The replacements of site t: per other value of its kind (in order), the synonyms whose edit creates no
        n-gram missing from the corpus that the caption had not already lacked; values left without one are dropped.
        padded: the caption's token ids between the sentinels (token t at t + 1); None without a corpus."""
        kind, v = self.value_of[int(row[t])]
        values = [self.choices[kind][w] for w in range(len(self.choices[kind])) if w != v]
        if self.ngrams is None:
            return values
        lo = max(t - 2, 0)  # the tokens a trigram through the article (token t - 1) or token t can reach
        window = padded[lo : t + 4]
        p = t + 1 - lo  # token t's index in window
        values = [[x for x in syn if self._keeps_ngrams(window, self._replace(window, p, x))] for syn in values]
        return [syn for syn in values if syn]

    def _site(self, row, t, length):
        """Whether token t of a caption can be edited: an attribute word, not a size inside 'X sized'."""
        hit = self.value_of.get(int(row[t]))
        if hit is None:
            return False
        return not (hit[0] == "size" and t + 1 < length and self.sized is not None and int(row[t + 1]) == self.sized)


def editor_for(vocab, flag, data, corpus=None):
    """The CaptionEditor that `flag` (the option asking for edits, e.g. "--hard-negatives 2") uses on --data `data`
    (vocabulary `vocab`; corpus: the training captions whose n-grams edits may create, or None). Raises
    ConfigError when the vocabulary holds no two values of any kind of attribute word (nothing could be edited)."""
    editor = CaptionEditor(vocab, corpus)
    if not editor.editable():
        raise ConfigError(f"{flag}: the vocabulary of --data {data} has no two values of any kind of "
                          f"attribute word ({', '.join(WORD_KINDS)}) to edit")
    return editor


def captions_of(ds):
    """The uncut token ids of every caption of a PreparedDataset split (an editor's corpus)."""
    return (ds.caption_ids(c) for c in range(len(ds.caption_starts) - 1))
