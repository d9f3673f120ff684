"""Caption text: tokenisation, the vocabulary, AttnGAN's cut of over-long captions, word-order noise.

Tokens are nltk's `RegexpTokenizer(r'\\w+')` on lower-cased text (the same regular expression,
applied without importing nltk), so no nltk data download is needed. The vocabulary is built
on the train split only; index 0 is `<end>` (padding and end of caption). Out-of-vocabulary words (seen only in test captions, or typed by a
user) are dropped from the token ids, as the original AttnGAN code does; the caption
text is kept verbatim beside the ids, and `encode` returns the dropped words so that
callers (e.g. `t2i sample`) can warn about them.
"""

import re
from collections import Counter

import numpy as np
import torch

END = "<end>"  # index 0: padding and end of caption


_WORD = re.compile(r"\w+")


def tokenize(text):
    r"""Lower-case `text` and split it into word tokens ([A-Za-z0-9_]+ runs, unicode aware).

    Exactly nltk's `RegexpTokenizer(r'\w+').tokenize(text.lower())` (a test checks the two agree),
    without importing nltk, which costs seconds at every process start (`t2i sample`).
    """
    return _WORD.findall(text.lower())


def build_vocab(captions):
    """Vocabulary from an iterable of caption strings: [`<end>`] + words by falling count, then alphabetically."""
    counts = Counter()
    for text in captions:
        counts.update(tokenize(text))
    words = sorted(counts, key=lambda w: (-counts[w], w))
    return [END] + words


class Vocab:
    """Word <-> id mapping. `ids(text)` drops out-of-vocabulary words (AttnGAN's behaviour)."""

    def __init__(self, words):
        if not words or words[0] != END:
            raise ValueError(f"a vocabulary must start with {END!r}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self):
        return len(self.words)

    def encode(self, text):
        """Token ids of `text` (list[int], OOV words dropped) and the list of OOV words."""
        ids, oov = [], []
        for w in tokenize(text):
            i = self.index.get(w)
            if i is None:
                oov.append(w)
            else:
                ids.append(i)
        return ids, oov

    def decode(self, ids):
        """Words of a sequence of ids, stopping at the first 0 (`<end>`)."""
        out = []
        for i in ids:
            i = int(i)
            if i == 0:
                break
            out.append(self.words[i])
        return out


def cut_caption(ids, word_limit, rng):
    """Fit token ids to `word_limit` words as AttnGAN does: a random ordered subset if too long.

    ids: 1-D int array [L]; rng: np.random.Generator. Returns (padded [word_limit] int64, length).
    """
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    out = np.zeros(word_limit, dtype=np.int64)
    if n <= word_limit:
        out[:n] = ids
        return out, n
    keep = np.sort(rng.permutation(n)[:word_limit])
    out[:] = ids[keep]
    return out, word_limit


def shuffle_locally(tokens, lengths, u, k):
    """Lample et al. (2018)'s word-order noise: each caption's words permuted so that none moves more than k places.

    tokens: int64 [B, T] (0-padded); lengths: [B]; u: uniform draws in [0, 1) [B, T] (from the step's generator, so
    a resumed run draws alike); k > 0, real (their alpha is k + 1). Word i of a caption gets the key i + (k + 1) u_i
    and the words are sorted by key, so a word can only pass one within ceil(k) places of it. Two neighbours swap
    with probability P(u_i - u_j > 1 / (k + 1)) = (k / (k + 1))^2 / 2 when k <= 1: 1/8 for k = 1, 1/18 for k = 1/2.
    Returns the permuted tokens [B, T] (padding and lengths unchanged).
    """
    tokens = torch.as_tensor(tokens)
    B, T = tokens.shape
    pos = torch.arange(T, dtype=torch.float64).expand(B, T)
    valid = pos < torch.as_tensor(lengths).view(B, 1)
    keys = torch.where(valid, pos + (k + 1) * torch.as_tensor(u, dtype=torch.float64), pos + 2.0 * (k + 1) * T)
    return torch.gather(tokens, 1, keys.argsort(dim=1, stable=True))
