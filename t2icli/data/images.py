"""Shared prep helpers: RGB loading, AttnGAN's bbox crop, square resize, caption files, and the decode-and-write loop.

Every source module (cub, flowers, coco, folder) turns its layout into a list of `Item`s
(image path, captions, class id, split, optional bounding box) after checking all captions,
then calls `write_items`, which decodes the images (in worker processes, results taken in
input order so the output does not depend on the number of workers), writes them with
`DatasetWriter`, and counts unreadable images.

Image conventions (the same for every source):
- Decoding: PIL. Greyscale, palette, CMYK and 16-bit images are converted to 8-bit RGB;
  images with transparency are composited onto white. ICC profiles are ignored.
  Truncated or corrupt files are bad images (skipped, counted, listed), never patched up.
- Cropping: with a bounding box, AttnGAN's square around the box (`bbox_crop_box`), clipped by
  the image border; without one, the whole image. Either box is then cut to its centred square
  (`centre_square_of`), so the aspect ratio is kept: AttnGAN does not stretch a clipped box, it
  resizes its shorter side with transforms.Scale(int) and random-crops the square it trains on
  (taoxugit/AttnGAN code/datasets.py:59-71, code/main.py:123-126). The prepared square is the
  centred one; the reference's random crop can also reach the ends of a clipped box's longer side.
- Resizing: PIL LANCZOS straight from the square box to P x P, P the stored size (stored_size_for:
  large enough that the training crops of the paper configurations are never upsampled). A JPEG
  whose crop is at least 2 P wide is first decoded at 1/2, 1/4 or 1/8 scale by libjpeg (never below
  P pixels across the crop): large photos prepare several times faster.
"""

import math
import os
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np

from t2icli.data.format import BadImages, DataError, DatasetWriter

#: Prep fails when more than this fraction of images cannot be decoded.
MAX_BAD_FRACTION = 0.01

#: Resampling filter used for every prepared image (named in dataset.json).
RESAMPLE = "LANCZOS (JPEGs whose crop is >= 2x the size: first decoded at 1/2, 1/4 or 1/8 scale by libjpeg)"

#: What the aspect-preserving crop does (named in dataset.json).
CROP_TO_SQUARE = ("the box's centred square (side = its shorter side): aspect ratio kept, nothing stretched, as "
                  "AttnGAN's Scale(int) + RandomCrop")

#: DAMSM's Inception encoder loads int(299 * 76 / 64) = 355 px and random-crops 299 (AttnGAN DAMSM/bird.yml:
#: TREE.BASE_SIZE 299; pretrain_DAMSM.py:235-240).
DAMSM_LOAD_SIZE = int(299 * 76 / 64)


#: How a training split varies its images. "scale-crop": AttnGAN's Scale(int(C * 76 / 64)) + RandomCrop(C) +
#: horizontal flip (main.py:124-127), so objects are seen 76/64 larger (and softer, where the stored side is below
#: the load size) than in the whole test images; "flip": the whole image, flipped half the time; "none": as stored.
AUGMENTS = ("scale-crop", "flip", "none")


def load_size(crop):
    """AttnGAN's load size for a random crop of side `crop`: transforms.Scale(int(crop * 76 / 64)) (main.py:124)."""
    return int(int(crop) * 76 / 64)


def stored_size_for(size):
    """The side to store images at for models of `size` px so that no paper configuration upsamples them:
    AttnGAN's load size int(size * 76 / 64) (304 for 256), and at least DAMSM's 355 from size 256 up (the paper
    sizes, where DAMSM's Inception encoder is trained on the same images). E.g. 64 -> 76, 256 -> 355."""
    size = int(size)
    return max(load_size(size), DAMSM_LOAD_SIZE) if size >= 256 else load_size(size)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Item:
    """One image to prepare: where it is, which split, its captions and class, and how to crop it."""

    split: str  # "train" or "test"
    path: str  # absolute path of the image file
    captions: tuple  # tuple[str, ...], at least one
    class_id: int
    filename: str  # the name stored in captions.jsonl (relative to the source root)
    bbox: Optional[tuple] = None  # (x, y, w, h) in pixels: AttnGAN crop; None: centre square


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


def bbox_crop_box(bbox, width, height):
    """AttnGAN's crop around a bounding box: (x1, y1, x2, y2), clipped to a W x H image.

    bbox = (x, y, w, h). r = int(0.75 * max(w, h)); centre (int((2x + w) / 2), int((2y + h) / 2));
    the box is the square of side 2r around the centre, clipped to the image.
    """
    x, y, w, h = (float(v) for v in bbox)
    r = int(max(w, h) * 0.75)
    cx = int((2 * x + w) / 2)
    cy = int((2 * y + h) / 2)
    y1, y2 = max(0, cy - r), min(height, cy + r)
    x1, x2 = max(0, cx - r), min(width, cx + r)
    return x1, y1, x2, y2


def center_square_box(width, height):
    """The centred square of side min(W, H): (x1, y1, x2, y2)."""
    side = min(width, height)
    x1 = (width - side) // 2
    y1 = (height - side) // 2
    return x1, y1, x1 + side, y1 + side


def centre_square_of(box):
    """The centred square inside box (x1, y1, x2, y2), of side its shorter side: (x1, y1, x2, y2).

    A bounding-box crop clipped by the image border is not square; keeping its centred square keeps the aspect
    ratio (what AttnGAN's Scale(int) + RandomCrop trains on) instead of stretching the box to a square."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    side = min(w, h)
    x1, y1 = x1 + (w - side) // 2, y1 + (h - side) // 2
    return x1, y1, x1 + side, y1 + side


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def to_rgb(im):
    """Convert a PIL image of any common mode to 8-bit RGB (alpha composited onto white)."""
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit-depth greyscale: scale 16-bit range to 8 bits; "I"/"F" are clipped to 0..255
        # unless their values clearly use the 16-bit range.
        a = np.asarray(im, dtype=np.float32)
        if im.mode.startswith("I;16") or (a.size and a.max() > 255):
            a = a / 257.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_rgb(path, exif_transpose=False):
    """Decode the image file at `path` fully and return it as an 8-bit RGB PIL image.

    exif_transpose: apply the EXIF orientation tag (for user photos; not for CUB, whose boxes
    are in stored-pixel coordinates). Raises OSError/ValueError/SyntaxError on a bad file.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()  # decode now, so a truncated file fails here and not later
        if exif_transpose:
            im = ImageOps.exif_transpose(im)
        return to_rgb(im)


def square_resize(im, box, size):
    """Crop `box` (x1, y1, x2, y2) out of the RGB image and resize it to uint8 [size, size, 3] (LANCZOS)."""
    from PIL import Image

    out = im.resize((size, size), Image.Resampling.LANCZOS, box=tuple(float(v) for v in box))
    return np.asarray(out, dtype=np.uint8)


def decode_image(path, size, bbox=None, exif_transpose=False, jpeg_draft=True):
    """Load, crop (bbox: AttnGAN crop; None: whole image), cut to the box's centred square (aspect ratio kept) and
    resize one image -> uint8 [size, size, 3].

    The crop box is computed on the full-resolution (EXIF-oriented if asked) image. jpeg_draft:
    when the crop is at least twice `size`, let libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale
    (DCT scaling; the crop still has >= `size` pixels) and map the box onto it: several times
    faster on large photos, with nearly the same pixels.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        w0, h0 = im.size  # stored pixels
        turned = exif_transpose and im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        w, h = (h0, w0) if turned else (w0, h0)  # pixels as viewed
        box = center_square_box(w, h) if bbox is None else bbox_crop_box(bbox, w, h)
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"empty crop {box} for a {w}x{h} image (bounding box {bbox})")
        box = centre_square_of(box)  # a box clipped by the border: keep its aspect ratio, never stretch it
        reduce = min(box[2] - box[0], box[3] - box[1]) / size  # largest reduction keeping the crop >= size
        if jpeg_draft and im.format == "JPEG" and reduce >= 2:
            im.draft(None, (math.ceil(w0 / reduce), math.ceil(h0 / reduce)))
        im.load()  # decode now, so a truncated file fails here and not later
        scale = round(w0 / im.size[0])  # 1, 2, 4 or 8: libjpeg's pixel i covers stored pixels [i*s, (i+1)*s)
        if exif_transpose:
            im = ImageOps.exif_transpose(im)
        im = to_rgb(im)
    if scale != 1:
        box = tuple(min(v / scale, lim) for v, lim in zip(box, (im.size[0], im.size[1]) * 2))
    return square_resize(im, box, size)


def _decode_batch(tasks, size, exif_transpose):
    """Worker: decode a list of (path, bbox); returns [(uint8 array or None, error text or None)]."""
    out = []
    for path, bbox in tasks:
        try:
            out.append((decode_image(path, size, bbox, exif_transpose), None))
        except Exception as exc:  # OSError, SyntaxError, DecompressionBombError...: PIL's ways of saying "bad file"
            out.append((None, f"{type(exc).__name__}: {exc}"))
    return out


def decode_items(items, size, workers=2, exif_transpose=False, batch=16):
    """Yield (item, uint8 [size, size, 3] or None, error or None) for each item, in input order.

    With workers > 1 the decoding runs in that many processes; at most 2 * workers batches are
    in flight, so memory stays bounded whatever the data set size.
    """
    if workers <= 1:
        for it in items:
            [(image, error)] = _decode_batch([(it.path, it.bbox)], size, exif_transpose)
            yield it, image, error
        return
    import multiprocessing
    import sys

    # fork on Linux: no re-import of the caller's __main__ (works from scripts without a main guard,
    # stdin, notebooks), and the workers only run PIL and numpy. Elsewhere fork is unsafe: spawn.
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    chunks = (items[i:i + batch] for i in range(0, len(items), batch))
    pending = deque()
    ex = ProcessPoolExecutor(workers, mp_context=ctx)
    try:
        for chunk in chunks:
            tasks = [(it.path, it.bbox) for it in chunk]
            pending.append((chunk, ex.submit(_decode_batch, tasks, size, exif_transpose)))
            while len(pending) >= 2 * workers:
                done_chunk, fut = pending.popleft()
                for it, (image, error) in zip(done_chunk, fut.result()):
                    yield it, image, error
        while pending:
            done_chunk, fut = pending.popleft()
            for it, (image, error) in zip(done_chunk, fut.result()):
                yield it, image, error
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------
# Caption files
# ---------------------------------------------------------------------------


def read_caption_file(path, warnings):
    """Captions of one text file: one per line, whitespace collapsed, blank lines dropped.

    UTF-8 (a BOM is allowed). A file that is not valid UTF-8 is read as latin-1 and a warning
    naming the file is appended to `warnings` (list[str]). U+FFFD replacement characters (found
    in Reed et al.'s CUB text) become spaces. A missing file raises DataError naming it.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: caption file missing (expected one caption per line)") from None
    except OSError as exc:
        raise DataError(f"{path}: caption file unreadable ({exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        text = raw.decode("latin-1")
        warnings.append(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start}); read as latin-1")
    text = text.replace("\ufffd", " ")
    lines = (" ".join(line.split()) for line in text.splitlines())
    return [line for line in lines if line]


def require_captions(path, captions):
    """Raise DataError naming `path` if `captions` is empty."""
    if not captions:
        raise DataError(f"{path}: no captions (expected at least one non-blank line)")
    return captions


# ---------------------------------------------------------------------------
# The write loop every source uses
# ---------------------------------------------------------------------------


def write_items(items, out, source, size, word_limit, extra, workers=2, max_bad_fraction=None,
                exif_transpose=False, warnings=(), splits=("train", "test"), stored_size=None, vocab_from="train"):
    """Decode `items` (list[Item]) into a prepared dataset at `out`; return the prep summary dict.

    size: the models' image size S; stored_size: the side the images are stored at (None: stored_size_for(S));
    vocab_from: "train" or "train+test" (which captions build the vocabulary). Unreadable images are skipped
    and listed; more than `max_bad_fraction` of them (default MAX_BAD_FRACTION) fails the prep with the list,
    leaving `out` untouched. The summary holds the split counts, the bad images, warnings, seconds and
    images/s; dataset.json holds `extra` plus the (relative) names of the skipped images.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if max_bad_fraction is None:
        max_bad_fraction = MAX_BAD_FRACTION
    warnings = list(warnings)
    console = Console(stderr=True)
    for w in warnings:
        console.print(f"warning: {w}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    start = time.perf_counter()
    bad = BadImages(limit=max_bad_fraction)
    bad_names = []
    extra = dict(extra)
    extra.setdefault("resize", f"PIL {RESAMPLE}")
    extra.setdefault("crop_to_square", CROP_TO_SQUARE)
    stored = stored_size_for(size) if stored_size is None else int(stored_size)
    with DatasetWriter(out, source=source, image_size=size, word_limit=word_limit, extra=extra, stored_size=stored,
                       vocab_from=vocab_from) as writer:
        split_writers = {name: writer.split(name) for name in splits}
        columns = (TextColumn(f"prep {source}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        # auto_refresh=False: no refresh thread is running when decode_items forks its workers.
        with Progress(*columns, console=console, transient=True, auto_refresh=False) as progress:
            task = progress.add_task("images", total=len(items))
            shown = 0.0
            for it, image, error in decode_items(items, stored, workers, exif_transpose):
                progress.advance(task)
                if time.perf_counter() - shown > 0.2:
                    progress.refresh()
                    shown = time.perf_counter()
                if error is not None:
                    bad.add(it.path, error)
                    # dataset.json names files relative to the root, never by absolute path.
                    bad_names.append([it.filename, error.replace(it.path, it.filename)])
                    continue
                bad.ok()
                split_writers[it.split].add(image, list(it.captions), it.class_id, it.filename)
        plain = dict(markup=False, highlight=False, soft_wrap=True)
        for path, reason in bad.bad[:20]:
            console.print(f"skipped unreadable image {path}: {reason}", **plain)
        if len(bad.bad) > 20:
            console.print(f"... and {len(bad.bad) - 20} more unreadable images", **plain)
        bad.check()
        console.print(f"prep {source}: {bad.seen - len(bad.bad)} images written; building the vocabulary", **plain)
        meta = writer.finish(extra={"bad_images": bad_names})
    seconds = time.perf_counter() - start
    n_ok = sum(s["images"] for s in meta["splits"].values())
    return {
        "out": os.path.abspath(os.fspath(out)),
        "source": source,
        "image_size": size,
        "stored_size": stored,
        "vocab_from": vocab_from,
        "splits": meta["splits"],
        "n_classes": meta["n_classes"],
        "vocab_size": meta["vocab_size"],
        "bad_images": [[p, r] for p, r in bad.bad],
        "warnings": warnings,
        "seconds": round(seconds, 3),
        "images_per_s": round(n_ok / seconds, 1) if seconds > 0 else None,
    }


def scan_images(root, skip=()):
    """Image files under `root` (recursive, sorted, hidden entries skipped) as paths relative to root, '/'-separated."""
    root = os.path.abspath(root)
    skip = {os.path.abspath(s) for s in skip}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.join(dirpath, d) not in skip)
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(found)
