"""The prepared-dataset folder: writing it atomically, and reading its metadata.

A prepared dataset is a folder:

    dataset.json            format version, source, image size, stored size, word limit, splits and counts
    vocab.json              the vocabulary (list of words, index 0 = "<end>"), built on train (or train+test)
    <split>/images.npy      uint8 [N, P, P, 3], memory-mappable: no JPEG decoding per step
    <split>/classes.npy     int64 [N] class ids (species for CUB/flowers; see each source)
    <split>/captions.jsonl  one JSON object per image: {"file": ..., "captions": [...]}
    <split>/tokens.npy      int32 [total words] every caption's token ids, concatenated
    <split>/caption_starts.npy  int64 [n_captions + 1] offsets of each caption in tokens
    <split>/image_captions.npy  int64 [N + 1] offsets of each image's captions
    <split>/attributes.npy  int64 [N, A] (only for sources with attribute truth: toybirds)

Two sizes (format version 2): `image_size` S is the size the models work at (the generator's final image),
`stored_size` P >= S the side of the stored pixels, chosen so that nothing is upsampled at the paper sizes
(AttnGAN loads int(S * 76 / 64) px and random-crops S; DAMSM's Inception encoder loads 355 and crops 299).
`vocab_from` says which splits' captions built the vocabulary ("train", or "train+test" as AttnGAN's
build_dictionary). Version-1 folders still load: their stored size is their image size, their vocabulary
was built on train.

Prep writes everything into a temporary sibling folder and renames it into place at the
end, so an interrupted prep never leaves a folder that looks complete. Writing the same
input twice gives byte-identical files (no timestamps, sorted JSON keys).
"""

import json
import os
import re
import shutil

import numpy as np

from t2icli.data.text import Vocab, build_vocab
from t2icli.errors import T2IError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: no stored_size (= image_size), no vocab_from (= "train")
META_FILE = "dataset.json"
VOCAB_SOURCES = ("train", "train+test")


class DataError(T2IError):
    """A data set that is missing, malformed, or not what a command expects. The message names the path."""


def dumps(obj):
    """Deterministic JSON text (sorted keys, fixed separators, trailing newline)."""
    return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def load_meta(path):
    """Read and check `path/dataset.json`. Raises DataError naming what is wrong."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"{path}: no such data folder (prepare one with `t2i prep ...`)")
    meta_path = os.path.join(path, META_FILE)
    if not os.path.isfile(meta_path):
        raise DataError(f"{path}: not a prepared dataset (no {META_FILE}; prepare it with `t2i prep ...`)")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta_path}: unreadable ({exc})") from exc
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version not in READABLE_VERSIONS:
        raise DataError(
            f"{path}: dataset format version {version!r}, this t2i reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; prepare it again with this version's `t2i prep`"
        )
    splits = meta.get("splits")
    if not isinstance(splits, dict) or "train" not in splits:
        raise DataError(f"{meta_path}: no 'splits' with a train split; prepare the dataset again")
    meta.setdefault("stored_size", meta.get("image_size"))  # version 1 stored the images at image_size
    meta.setdefault("vocab_from", "train")
    for split, counts in splits.items():
        for name in ("images.npy", "classes.npy", "tokens.npy", "caption_starts.npy", "image_captions.npy"):
            file = os.path.join(path, split, name)
            if not os.path.isfile(file):
                raise DataError(f"{path}: incomplete dataset, {split}/{name} is missing; prepare it again")
            shape = _check_npy(file)
            if name == "images.npy" and isinstance(counts, dict) and shape[:1] != (counts.get("images"),):
                raise DataError(f"{file}: holds {shape[0] if shape else 0} images, {META_FILE} says "
                                f"{counts.get('images')}; the dataset is damaged, prepare it again")
            if name == "images.npy" and len(shape) == 4 and shape[1:3] != (meta["stored_size"],) * 2:
                raise DataError(f"{file}: images of {shape[1]}x{shape[2]} px, {META_FILE} says "
                                f"{meta['stored_size']}; the dataset is damaged, prepare it again")
    return meta


def _check_npy(file):
    """Shape of the .npy array in `file` after checking its header and that its size is complete (no data read).

    Raises DataError naming the file if it is not a .npy file or is truncated (an interrupted copy, a full disk).
    """
    try:
        with open(file, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            start = f.tell()
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: not a readable .npy array ({exc}); prepare the dataset again") from None
    expected = start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = os.path.getsize(file)
    if size != expected:
        raise DataError(f"{file}: {'truncated' if size < expected else 'corrupt'} ({size} bytes, its header "
                        f"promises {expected}); prepare the dataset again")
    return tuple(shape)


def is_prepared(path):
    """True if `path` holds a dataset.json of any version (so it may be replaced by a new prep)."""
    return os.path.isfile(os.path.join(os.fspath(path), META_FILE))


def check_out_dir(out):
    """Refuse an `--out` that exists, is not empty, and is not a prepared dataset. Raises DataError."""
    out = os.fspath(out)
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise DataError(f"--out {out}: exists and is not a folder")
        if os.listdir(out) and not is_prepared(out):
            raise DataError(
                f"--out {out}: folder is not empty and is not a prepared dataset; "
                "choose a new or empty folder (a prepared dataset there would be replaced)"
            )


class BadImages:
    """Counts images that could not be read; fails the prep when more than `limit` of them are bad."""

    def __init__(self, limit=0.01):
        self.limit = limit
        self.bad = []  # (path, reason)
        self.seen = 0

    def ok(self):
        self.seen += 1

    def add(self, path, reason):
        self.seen += 1
        self.bad.append((os.fspath(path), str(reason)))

    def check(self):
        """Raise DataError listing the bad images if they are more than `limit` of those seen."""
        if self.seen and len(self.bad) > self.limit * self.seen:
            listing = "\n".join(f"  {p}: {r}" for p, r in self.bad[:50])
            more = f"\n  ... and {len(self.bad) - 50} more" if len(self.bad) > 50 else ""
            raise DataError(
                f"{len(self.bad)} of {self.seen} images are unreadable (more than {self.limit:.0%}):\n{listing}{more}"
            )


class DatasetWriter:
    """Writes a prepared dataset into a temporary folder, then renames it onto `out`.

    Use as a context manager: on an exception the temporary folder is removed and `out`
    is left as it was.

        with DatasetWriter(out, source="cub", image_size=256, word_limit=18, stored_size=355) as w:
            split = w.split("train")
            split.add(image, captions, class_id, filename)
            ...
            w.finish(extra={...})
    """

    def __init__(self, out, source, image_size, word_limit, extra=None, stored_size=None, vocab_from="train"):
        self.out = os.path.abspath(os.fspath(out))
        check_out_dir(self.out)
        self.source = source
        self.image_size = int(image_size)
        self.stored_size = self.image_size if stored_size is None else int(stored_size)
        if self.stored_size < self.image_size:
            raise DataError(f"--stored-size {self.stored_size}: smaller than the image size {self.image_size}")
        if vocab_from not in VOCAB_SOURCES:
            raise DataError(f"--vocab {vocab_from}: choose from {', '.join(VOCAB_SOURCES)}")
        self.vocab_from = vocab_from
        self.word_limit = int(word_limit)
        self.extra = dict(extra or {})
        parent = os.path.dirname(self.out)
        os.makedirs(parent, exist_ok=True)
        _remove_stale_temp_folders(parent, os.path.basename(self.out))
        self.tmp = os.path.join(parent, f".{os.path.basename(self.out)}.tmp-{os.getpid()}")
        if os.path.exists(self.tmp):
            shutil.rmtree(self.tmp)
        os.makedirs(self.tmp)
        self.splits = {}
        self.done = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.done:
            self.abort()
        return False

    def abort(self):
        """Remove the temporary folder (`out` is untouched)."""
        for s in self.splits.values():
            s.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def split(self, name):
        """A writer for split `name` ('train' or 'test')."""
        if name in self.splits:
            raise ValueError(f"split {name!r} already written")
        s = _SplitWriter(os.path.join(self.tmp, name), self.stored_size)
        self.splits[name] = s
        return s

    def finish(self, extra=None):
        """Build the vocabulary (on train, or on every split with vocab_from="train+test"), write token ids and
        dataset.json, rename into place."""
        if "train" not in self.splits:
            raise ValueError("a dataset needs a train split")
        for s in self.splits.values():
            s.close()
        for name, s in self.splits.items():
            if s.n == 0:
                raise DataError(f"split {name!r} has no images")
        sources = [self.splits["train"]] if self.vocab_from == "train" else list(self.splits.values())
        vocab = Vocab(build_vocab(c for split in sources for caps in split.captions for c in caps))
        with open(os.path.join(self.tmp, "vocab.json"), "w", encoding="utf-8") as f:
            f.write(dumps(vocab.words))
        splits = {}
        for name, s in self.splits.items():
            splits[name] = s.write_tokens(vocab)
        classes = np.concatenate([np.load(os.path.join(self.tmp, n, "classes.npy")) for n in self.splits])
        meta = {
            "format_version": FORMAT_VERSION,
            "source": self.source,
            "image_size": self.image_size,
            "stored_size": self.stored_size,
            "word_limit": self.word_limit,
            "vocab_size": len(vocab),
            "vocab_from": self.vocab_from,
            "n_classes": int(len(np.unique(classes))),
            "splits": splits,
            "oov_policy": f"words not in the vocabulary (built on {self.vocab_from}) are dropped from token ids; "
                          "text is kept verbatim",
        }
        meta.update(self.extra)
        meta.update(extra or {})
        with open(os.path.join(self.tmp, META_FILE), "w", encoding="utf-8") as f:
            f.write(dumps(meta))
        _fsync_tree(self.tmp)
        # Swap into place: old dataset (if any) is moved aside first, removed last.
        old = None
        if os.path.exists(self.out):
            old = self.tmp + ".old"
            os.rename(self.out, old)
        os.rename(self.tmp, self.out)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        self.done = True
        return meta


def _remove_stale_temp_folders(parent, name):
    """Clean up after a prep of `parent/name` that was killed (its process is gone).

    Its `.NAME.tmp-<pid>` folder is deleted. A `.NAME.tmp-<pid>.old` folder is the previous dataset,
    moved aside just before the swap: if the kill came between the two renames (`NAME` is missing), it
    is renamed back to `NAME`, otherwise deleted. So a killed prep never costs the old dataset.
    """
    from t2icli.fileio import pid_alive

    pattern = re.compile(r"^\." + re.escape(name) + r"\.tmp-(\d+)(\.old)?$")
    out = os.path.join(parent, name)
    for entry in sorted(os.listdir(parent), key=lambda e: not e.endswith(".old")):  # .old ones first
        m = pattern.match(entry)
        if m is None or pid_alive(int(m.group(1))):
            continue
        path = os.path.join(parent, entry)
        if m.group(2) and not os.path.exists(out) and os.path.isfile(os.path.join(path, META_FILE)):
            os.rename(path, out)
        else:
            shutil.rmtree(path, ignore_errors=True)


class _SplitWriter:
    """Streams one split's images to disk; keeps captions in memory until the vocabulary exists."""

    def __init__(self, folder, image_size):
        os.makedirs(folder)
        self.folder = folder
        self.size = image_size
        self.raw_path = os.path.join(folder, "images.raw")
        self.raw = open(self.raw_path, "wb")
        self.n = 0
        self.captions, self.classes, self.files, self.attributes = [], [], [], []

    def add(self, image, captions, class_id, filename, attributes=None):
        """Append one image (uint8 [P, P, 3], P the stored size) with its captions (list[str], at least one)."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if image.shape != (self.size, self.size, 3):
            raise ValueError(f"{filename}: image shape {image.shape}, expected {(self.size, self.size, 3)}")
        if not captions:
            raise DataError(f"{filename}: no captions")
        self.raw.write(image.tobytes())
        self.captions.append([str(c) for c in captions])
        self.classes.append(int(class_id))
        self.files.append(str(filename))
        if attributes is not None:
            self.attributes.append(np.asarray(attributes, dtype=np.int64))
        self.n += 1

    def add_many(self, images, captions, classes, filenames, attributes=None):
        """Append a batch: images uint8 [n, P, P, 3] and per-image lists."""
        for k in range(len(images)):
            self.add(images[k], captions[k], classes[k], filenames[k], None if attributes is None else attributes[k])

    def save_array(self, name, array):
        """Write an extra per-split array `<split>/<name>.npy` (e.g. caption_mentions)."""
        np.save(os.path.join(self.folder, f"{name}.npy"), np.asarray(array))

    def close(self):
        if self.raw is None:
            return
        self.raw.close()
        self.raw = None
        if not os.path.exists(self.raw_path):
            return
        # images.raw -> images.npy: a standard .npy header followed by the raw bytes.
        shape = (self.n, self.size, self.size, 3)
        with open(os.path.join(self.folder, "images.npy"), "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            with open(self.raw_path, "rb") as src:
                shutil.copyfileobj(src, f, 16 << 20)
        os.remove(self.raw_path)
        np.save(os.path.join(self.folder, "classes.npy"), np.asarray(self.classes, dtype=np.int64))
        if self.attributes:
            if len(self.attributes) != self.n:
                raise ValueError("attributes given for some images but not all")
            np.save(os.path.join(self.folder, "attributes.npy"), np.stack(self.attributes))
        with open(os.path.join(self.folder, "captions.jsonl"), "w", encoding="utf-8") as f:
            for fn, caps in zip(self.files, self.captions):
                f.write(json.dumps({"file": fn, "captions": caps}, ensure_ascii=False, sort_keys=True) + "\n")

    def write_tokens(self, vocab):
        """Encode every caption with `vocab`; write tokens/caption_starts/image_captions. Returns counts."""
        tokens, starts, per_image = [], [0], [0]
        n_oov = 0
        for caps in self.captions:
            for c in caps:
                ids, oov = vocab.encode(c)
                n_oov += len(oov)
                tokens.extend(ids)
                starts.append(len(tokens))
            per_image.append(len(starts) - 1)
        np.save(os.path.join(self.folder, "tokens.npy"), np.asarray(tokens, dtype=np.int32))
        np.save(os.path.join(self.folder, "caption_starts.npy"), np.asarray(starts, dtype=np.int64))
        np.save(os.path.join(self.folder, "image_captions.npy"), np.asarray(per_image, dtype=np.int64))
        lengths = np.diff(np.asarray(starts))
        return {
            "images": self.n,
            "captions": len(starts) - 1,
            "oov_words": n_oov,
            "max_caption_words": int(lengths.max()) if len(lengths) else 0,
            "empty_captions": int((lengths == 0).sum()),
        }


def _fsync_tree(folder):
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
