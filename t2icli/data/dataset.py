"""The dataset and loader every trainer uses: images at each stage's resolution plus a caption.

Augmentation follows AttnGAN (taoxugit/AttnGAN code/main.py:122-126, datasets.py:59-88): for a crop of side C
(the largest requested resolution) the stored image is resized to int(C * 76 / 64) and a random C x C square
is cut from it, randomly flipped, then downsampled once per smaller resolution (the lower stages' Scale).
Prep stores images large enough (dataset.json stored_size) that this resize never upsamples at the paper
sizes: 355 px serve both AttnGAN's 256 crops of 304 and DAMSM's 299 crops of 355. All randomness (crop,
flip, which caption, which words of an over-long caption) is a pure function of (seed, epoch, index), so a
resumed or distributed run sees exactly the same samples as an uninterrupted single-process one.
"""

import json
import os
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from t2icli.data.format import DataError, load_meta
from t2icli.data.images import AUGMENTS, load_size
from t2icli.data.text import Vocab, cut_caption


class Draws(NamedTuple):
    """The random choices of one sample (PreparedDataset._draws)."""

    caption: int  # which of the image's captions
    tokens: np.ndarray  # int64 [word_limit], 0-padded
    length: int
    corner: tuple  # (y, x) of the crop ("scale-crop" training), else None
    flip: bool


class PreparedDataset(torch.utils.data.Dataset):
    """One split of a prepared dataset folder.

    ds[i] -> {"images": [float [3, r, r] in [-1, 1] for r in resolutions],
              "tokens": int64 [word_limit] (0-padded), "length": int, "class_id": int, "index": int,
              "caption": int (which of the image's captions)}

    size: the data set's image size S (dataset.json image_size); stored_size: the side of the stored pixels
    (>= S); crop: the largest resolution (S by default; 299 for DAMSM's Inception encoder); load: AttnGAN's
    int(crop * 76 / 64) with augment "scale-crop" (images.AUGMENTS; else crop). `upsamples` is True when training
    resizes the stored images up (load > stored_size:
    a folder prepared at a smaller --stored-size, or before format version 2). images_uint8 [n, S, S, 3] gives
    the images at S (resized from the stored ones when they are larger) for evaluation; stored_uint8 the
    stored array.
    """

    def __init__(self, path, split="train", resolutions=None, train=True, seed=0, word_limit=None,
                 augment="scale-crop"):
        self.path = os.fspath(path)
        self.meta = load_meta(self.path)
        if split not in self.meta["splits"]:
            raise DataError(f"{self.path}: no split {split!r} (has {sorted(self.meta['splits'])})")
        self.split = split
        self.size = int(self.meta["image_size"])
        self.stored_size = int(self.meta["stored_size"])
        self.resolutions = tuple(int(r) for r in (resolutions or (self.size,)))
        if not self.resolutions or min(self.resolutions) < 1:
            raise DataError(f"{self.path}: resolutions {self.resolutions} must be >= 1 px")
        if augment not in AUGMENTS:
            raise DataError(f"augment {augment!r}: choose from {', '.join(AUGMENTS)}")
        self.augment = augment
        self.crop = max(self.resolutions)
        self.load = load_size(self.crop) if augment == "scale-crop" else self.crop
        self.upsamples = self.load > self.stored_size if train else self.crop > self.stored_size
        self.train = bool(train)
        self.seed = int(seed)
        self.word_limit = int(word_limit or self.meta["word_limit"])
        self.epoch = 0
        folder = os.path.join(self.path, split)
        with open(os.path.join(self.path, "vocab.json"), encoding="utf-8") as f:
            self.vocab = json.load(f)
        self._vocab = Vocab(self.vocab)
        self.stored_uint8 = np.load(os.path.join(folder, "images.npy"), mmap_mode="r")  # [n, P, P, 3]
        self.images_uint8 = (self.stored_uint8 if self.stored_size == self.size
                             else ResizedImages(self.stored_uint8, self.size))  # [n, S, S, 3]
        self.class_ids = np.load(os.path.join(folder, "classes.npy"))  # [n]
        self.tokens = np.load(os.path.join(folder, "tokens.npy"))  # [total words]
        self.caption_starts = np.load(os.path.join(folder, "caption_starts.npy"))  # [n_captions + 1]
        self.image_captions = np.load(os.path.join(folder, "image_captions.npy"))  # [n + 1]
        attr_path = os.path.join(folder, "attributes.npy")
        self.attributes = np.load(attr_path) if os.path.exists(attr_path) else None  # [n, A]
        mentions_path = os.path.join(folder, "caption_mentions.npy")
        self.caption_mentions = np.load(mentions_path) if os.path.exists(mentions_path) else None  # [n_captions]
        n = len(self.stored_uint8)
        if not (len(self.class_ids) == n and len(self.image_captions) == n + 1):
            raise DataError(f"{folder}: array lengths disagree; prepare the dataset again")
        self._records = None  # captions.jsonl's lines, read on first use

    def __len__(self):
        return len(self.stored_uint8)

    def set_epoch(self, epoch):
        """Select the epoch whose augmentation and caption choice __getitem__ reproduces."""
        self.epoch = int(epoch)

    # -- captions -----------------------------------------------------------------
    def n_captions(self, i):
        """Number of captions of image i."""
        return int(self.image_captions[i + 1] - self.image_captions[i])

    def caption_ids(self, c):
        """Token ids (int64 [L], uncut) of caption row c of this split."""
        return self.tokens[self.caption_starts[c] : self.caption_starts[c + 1]].astype(np.int64)

    def caption_tokens(self, i):
        """All captions of image i as 1-D LongTensors (full length, not cut)."""
        first, last = self.image_captions[i], self.image_captions[i + 1]
        return [torch.from_numpy(self.caption_ids(c)) for c in range(first, last)]

    def _lines(self):
        if self._records is None:
            with open(os.path.join(self.path, self.split, "captions.jsonl"), encoding="utf-8") as f:
                self._records = [json.loads(line) for line in f]
        return self._records

    def caption_texts(self, i):
        """All captions of image i as text, verbatim."""
        return list(self._lines()[i]["captions"])

    def image_files(self):
        """The source file name of every image of this split, in order (what a captions file's "image" names)."""
        return [r["file"] for r in self._lines()]

    def encode(self, text):
        """(LongTensor token ids of `text`, list of out-of-vocabulary words dropped from it)."""
        ids, oov = self._vocab.encode(text)
        return torch.tensor(ids, dtype=torch.int64), oov

    def decode(self, ids):
        """Words of token ids (stops at 0)."""
        return self._vocab.decode(ids)

    def cut(self, ids, rng):
        """Pad or cut token ids to word_limit (random ordered subset when too long)."""
        return cut_caption(ids, self.word_limit, rng)

    def cut_caption_of(self, i, k, rng):
        """(tokens int64 [word_limit], length) of caption k of image i, cut to the word limit with rng."""
        return self.cut(self.caption_ids(self.image_captions[i] + k), rng)

    # -- samples --------------------------------------------------------------------
    def _rng(self, index):
        epoch = self.epoch if self.train else 0
        return np.random.default_rng([self.seed, epoch, int(index), 0x7721])

    def _draws(self, index):
        """The random choices of sample `index` (Draws), drawn in a fixed order from its own stream."""
        rng = self._rng(index)
        k = int(rng.integers(self.n_captions(index)))
        tokens, length = self.cut_caption_of(index, k, rng)
        corner, flip = None, False
        if self.train and self.augment == "scale-crop":
            corner = tuple(int(v) for v in rng.integers(0, self.load - self.crop + 1, size=2))
            flip = bool(rng.random() < 0.5)
        elif self.train and self.augment == "flip":
            flip = bool(rng.random() < 0.5)
        return Draws(k, tokens, int(length), corner, flip)

    def _augment(self, stored, draws):
        """stored: uint8 [B, P, P, 3] -> one float tensor [B, 3, r, r] in [-1, 1] per resolution. Every op works
        on each image alone (a batch computes what B single images would, to the bit: tests/test_data.py)."""
        img = torch.from_numpy(stored).permute(0, 3, 1, 2).contiguous().float()  # [B, 3, P, P] (contiguous: the
        # resize runs 2x faster than on the channels-last view, to the same bits)
        if self.train and self.augment == "scale-crop":
            big, c = self.load, self.crop  # Scale(int(C * 76 / 64)), RandomCrop(C)
            if big != self.stored_size:
                img = F.interpolate(img, size=(big, big), mode="bilinear", align_corners=False, antialias=True)
            crops = []
            for b, d in enumerate(draws):
                y, x = d.corner
                crop = img[b, :, y : y + c, x : x + c]  # [3, C, C]
                crops.append(crop.flip(2) if d.flip else crop)
            img = torch.stack(crops)  # [B, 3, C, C]
        elif self.train and self.augment == "flip":
            flips = [b for b, d in enumerate(draws) if d.flip]
            if flips:
                img[flips] = img[flips].flip(3)  # whole images, scaled below to each resolution as the test images
        images = []
        for r in self.resolutions:
            im = img if r == img.shape[-1] else F.interpolate(
                img, size=(r, r), mode="bilinear", align_corners=False, antialias=True
            )
            images.append((im / 127.5 - 1.0).clamp_(-1.0, 1.0))  # [B, 3, r, r]
        return images

    def __getitem__(self, index):
        return self.__getitems__([index])[0]

    def __getitems__(self, indices):
        """The samples of a batch (DataLoader calls this instead of __getitem__ per index): the same samples,
        with each image op run once on the batch, not once per image (2.2x faster for DAMSM's 48 toybirds images,
        2.5x for the GAN's 16 at three sizes)."""
        indices = [int(i) for i in indices]
        draws = [self._draws(i) for i in indices]
        images = self._augment(self.stored_uint8[np.asarray(indices)], draws)  # a copy [B, P, P, 3]
        return [{"images": [im[b] for im in images], "tokens": torch.from_numpy(d.tokens), "length": d.length,
                 "class_id": int(self.class_ids[i]), "index": i, "caption": d.caption}
                for b, (i, d) in enumerate(zip(indices, draws))]


class ResizedImages:
    """A read-only view of stored uint8 images [n, P, P, 3] at side S: view[idx] -> uint8 numpy [..., S, S, 3].

    idx is an int, a slice or an index array; each image is resized on access with PIL LANCZOS, the filter prep
    used, so a folder stored at P > S gives evaluation the images a folder prepared at S would hold (up to the
    second resampling)."""

    def __init__(self, stored, size):
        self.stored, self.size = stored, int(size)
        self.shape = (len(stored), self.size, self.size, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 4

    def __len__(self):
        return len(self.stored)

    def _resize(self, im):
        from PIL import Image

        return np.asarray(Image.fromarray(np.asarray(im)).resize((self.size, self.size), Image.Resampling.LANCZOS))

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self._resize(self.stored[int(idx)])  # [S, S, 3]
        batch = self.stored[idx]  # [k, P, P, 3]
        out = np.empty((len(batch), self.size, self.size, 3), np.uint8)
        for k in range(len(batch)):
            out[k] = self._resize(batch[k])
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)


def collate(samples):
    """Batch a list of samples: {"images": [[B,3,r,r] per resolution], "tokens": [B,T], "lengths": [B],
    "class_ids": [B], "indices": [B], "captions": [B]}."""
    n_res = len(samples[0]["images"])
    return {
        "images": [torch.stack([s["images"][k] for s in samples]) for k in range(n_res)],
        "tokens": torch.stack([s["tokens"] for s in samples]),
        "lengths": torch.tensor([s["length"] for s in samples], dtype=torch.int64),
        "class_ids": torch.tensor([s["class_id"] for s in samples], dtype=torch.int64),
        "indices": torch.tensor([s["index"] for s in samples], dtype=torch.int64),
        "captions": torch.tensor([s["caption"] for s in samples], dtype=torch.int64),
    }


def class_pair_order(class_ids, rng):
    """A permutation of range(n) made of same-class pairs: positions 2m and 2m+1 hold two images of one class
    (`--class-pairs`); the images a class has left over once its pairs are made (one when its count is odd) are
    paired with each other across classes. Pairs come in random order, images within a class in random order.
    class_ids [n] -> int64 [n]."""
    class_ids = np.asarray(class_ids)
    perm = rng.permutation(len(class_ids))
    grouped = perm[np.argsort(class_ids[perm], kind="stable")]  # by class, random within each
    bounds = np.flatnonzero(np.diff(class_ids[grouped])) + 1
    pairs, rest = [], []
    for members in np.split(grouped, bounds):
        k = len(members) // 2 * 2
        pairs.append(members[:k].reshape(-1, 2))
        rest.extend(members[k:].tolist())
    rest = np.asarray(rest, dtype=np.int64)
    k = len(rest) // 2 * 2
    pairs.append(rest[:k].reshape(-1, 2))
    pairs = np.concatenate(pairs)  # [n // 2, 2]
    return np.concatenate([pairs[rng.permutation(len(pairs))].reshape(-1), rest[k:]]).astype(np.int64)


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of one epoch: a permutation that is a pure function of (seed, epoch).

    batch_size is the GLOBAL batch; with world > 1 each rank yields its slice
    [rank::world] of every global batch, so N processes see exactly the samples one
    process would. start_batch skips the batches of the epoch already consumed (resume).
    classes [n] given: the permutation is class_pair_order's (an even batch then holds whole same-class pairs,
    so AttnGAN's wrong caption of every other row, the next row's, is of the same class).
    """

    def __init__(self, n, batch_size, shuffle=True, drop_last=True, seed=0, epoch=0, start_batch=0, rank=0, world=1,
                 classes=None):
        if batch_size < world or batch_size % world:
            raise ValueError(f"batch size {batch_size} must be a multiple of the number of processes {world}")
        if classes is not None and len(classes) != n:
            raise ValueError(f"classes: {len(classes)} class ids for {n} samples")
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.epoch, self.start_batch, self.rank, self.world = seed, epoch, start_batch, rank, world
        self.classes = classes

    def batches_per_epoch(self):
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __len__(self):
        return max(0, self.batches_per_epoch() - self.start_batch)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch, 0x5A3])
        if self.classes is not None:
            order = class_pair_order(self.classes, rng)
        elif self.shuffle:
            order = rng.permutation(self.n)
        else:
            order = np.arange(self.n)
        for b in range(self.start_batch, self.batches_per_epoch()):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield batch[self.rank :: self.world].tolist()


def make_loader(ds, batch_size, shuffle=True, drop_last=True, num_workers=0, seed=0, epoch=0, start_batch=0,
                rank=0, world=1, class_pairs=False):
    """A DataLoader over `ds` for one epoch (see EpochBatchSampler; class_pairs: batches of same-class pairs, by
    ds.class_ids); sets ds's epoch first."""
    ds.set_epoch(epoch)
    sampler = EpochBatchSampler(len(ds), batch_size, shuffle, drop_last, seed, epoch, start_batch, rank, world,
                                classes=ds.class_ids if class_pairs else None)
    return torch.utils.data.DataLoader(
        ds, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
        persistent_workers=False, pin_memory=torch.cuda.is_available(),
    )
