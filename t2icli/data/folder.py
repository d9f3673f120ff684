"""Prepare any folder of images with same-stem caption files: the source for users' own data.

Layout: images (.jpg .jpeg .png .bmp .webp, any case, found recursively; hidden files and
folders are skipped, links to folders are not followed) each with a `.txt` of the same stem
beside it, one caption per line (blank lines ignored): `photos/cat.jpg` + `photos/cat.txt`.
An image without its caption file, or with an empty one, stops the prep naming the file.

- Class id: the image's sub-folder relative to root. Folders are numbered in sorted order
  with the top level ("") first, so files directly under root share class 0. The class
  names are stored in dataset.json ("classes"). DAMSM masks same-class negatives, so put
  unrelated images in the same folder (or all at the top level) unless they are truly alike.
- Split: a `test_fraction` of the images (at least one, at most all but one), chosen by a
  permutation from `seed` over the sorted file list, so the split depends only on the file
  names and the seed.
- Images: EXIF orientation applied, centred square of side min(W, H), resized to S x S
  with LANCZOS.
"""

import os

import numpy as np

from t2icli.data.format import DataError, check_out_dir
from t2icli.data.images import IMAGE_EXTENSIONS, Item, read_caption_file, require_captions, scan_images, write_items

WORD_LIMIT = 18


def choose_test(n, test_fraction, seed):
    """Boolean mask [n]: True for the test images (a deterministic function of n, fraction and seed)."""
    n_test = min(max(1, int(round(n * test_fraction))), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    mask = np.zeros(n, dtype=bool)
    mask[order[:n_test]] = True
    return mask


def prepare_folder(root, out, size=256, test_fraction=0.1, seed=0, word_limit=WORD_LIMIT, workers=2,
                   max_bad_fraction=None, stored_size=None):
    """Prepare a folder of images with same-stem .txt captions into `out` (see module doc; stored_size: the
    stored side, None: images.stored_size_for(size)).

    Returns the prep summary dict. Raises DataError naming the path when no image is found,
    a caption file is missing or empty, fewer than 2 images exist, or > 1% images are bad.
    """
    root = os.path.abspath(os.fspath(root))
    check_out_dir(out)
    rels = scan_images(root, skip=[os.path.abspath(os.fspath(out))])
    if not rels:
        raise DataError(f"--root {root}: no images found; expected image files ({' '.join(IMAGE_EXTENSIONS)}) "
                        "each with a same-stem .txt of captions beside it, e.g. photos/cat.jpg + photos/cat.txt")
    if len(rels) < 2:
        raise DataError(f"--root {root}: only one image found; a train and a test split need at least 2")
    warnings, captions = [], []
    for rel in rels:
        text_path = os.path.join(root, os.path.splitext(rel)[0] + ".txt")
        if not os.path.isfile(text_path):
            raise DataError(f"{text_path}: caption file missing for image {os.path.join(root, rel)} "
                            "(expected a same-stem .txt with one caption per line)")
        captions.append(require_captions(text_path, read_caption_file(text_path, warnings)))
    folders = sorted({os.path.dirname(rel) for rel in rels})  # "" (top level) sorts first
    class_of = {f: k for k, f in enumerate(folders)}
    is_test = choose_test(len(rels), test_fraction, seed)
    items = [Item(split="test" if t else "train", path=os.path.join(root, rel), captions=tuple(caps),
                  class_id=class_of[os.path.dirname(rel)], filename=rel)
             for rel, caps, t in zip(rels, captions, is_test)]
    extra = {
        "root": os.path.basename(root),
        "split": {"definition": f"random {test_fraction} of the sorted file list -> test (seed {seed})",
                  "test_fraction": test_fraction, "seed": seed, "class_disjoint": False},
        "bbox_crop": False,
        "crop": "EXIF orientation applied, then centre square of side min(W, H)",
        "class_ids": "index of the image's sub-folder in 'classes' (top-level files: class 0)",
        "classes": folders,
    }
    return write_items(items, out, "folder", size, word_limit, extra, workers=workers,
                       max_bad_fraction=max_bad_fraction, exif_transpose=True, warnings=warnings,
                       stored_size=stored_size)
