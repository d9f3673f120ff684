"""Prepare Oxford-102 flowers with Reed et al.'s captions: centre square crop, class-disjoint split.

Inputs:
- `root`: the folder of Oxford-102 images `image_00001.jpg` ... (the `jpg/` folder of 102flowers.tgz).
- `captions`: Reed et al.'s cvpr2016_flowers layout: text_c10/class_00001/image_00001.txt ...
  with trainvalclasses.txt and testclasses.txt (class folder names, one a line).

Split: trainvalclasses -> train, testclasses -> test (StackGAN/AttnGAN's class-disjoint split,
7034 / 1155 images when complete). Class id: the class folder number - 1 (`class_00001` -> 0).
There are no bounding boxes, so each image is cropped to its centred square of side
min(W, H) and resized to the stored size with LANCZOS. Every image in `root` must have a caption
file (a missing or empty one stops the prep, naming the file); a caption file whose image
is missing from `root` counts as a bad image.
"""

import os
import re

from t2icli.data.cub import read_list
from t2icli.data.format import DataError, check_out_dir
from t2icli.data.images import Item, read_caption_file, require_captions, write_items

WORD_LIMIT = 18

_IMAGE = re.compile(r"^image_\d+\.jpg$")
_CLASS = re.compile(r"^class_(\d+)$")


def prepare_flowers(root, captions, out, size=256, workers=2, max_bad_fraction=None, stored_size=None):
    """Prepare Oxford-102 flowers into `out` (centre square crop, Reed's class split; stored_size: the stored
    side, None: images.stored_size_for(S)).

    Returns the prep summary dict. Raises DataError naming the path on an unknown layout,
    a missing/empty caption file, a class in neither list, or > 1% bad images.
    """
    root = os.path.abspath(os.fspath(root))
    captions = os.path.abspath(os.fspath(captions))
    check_out_dir(out)
    jpgs = sorted(f for f in os.listdir(root) if _IMAGE.match(f))
    if not jpgs:
        nested = os.path.join(root, "jpg")
        hint = f" (did you mean --root {nested}?)" if os.path.isdir(nested) else ""
        raise DataError(f"--root {root}: expected Oxford-102 images named image_00001.jpg ...; none found{hint}")
    text_dir = os.path.join(captions, "text_c10")
    lists = {name: os.path.join(captions, name) for name in ("trainvalclasses.txt", "testclasses.txt")}
    if not os.path.isdir(text_dir) or not all(os.path.isfile(p) for p in lists.values()):
        raise DataError(f"--captions {captions}: unknown caption layout; expected Reed et al.'s "
                        "(text_c10/class_00001/image_00001.txt with trainvalclasses.txt and testclasses.txt)")
    train = set(read_list(lists["trainvalclasses.txt"]))
    test = set(read_list(lists["testclasses.txt"]))

    warnings, items = [], []
    captioned = set()
    class_folders = sorted(d for d in os.listdir(text_dir)
                           if _CLASS.match(d) and os.path.isdir(os.path.join(text_dir, d)))
    if not class_folders:
        raise DataError(f"{text_dir}: no class_NNNNN folders; expected text_c10/class_00001/image_00001.txt ...")
    classes = {"train": set(), "test": set()}
    for folder in class_folders:
        split = "train" if folder in train else "test" if folder in test else None
        if split is None:
            raise DataError(f"{os.path.join(text_dir, folder)}: class in neither trainvalclasses.txt "
                            "nor testclasses.txt")
        cls = int(_CLASS.match(folder).group(1)) - 1
        classes[split].add(cls)
        for name in sorted(os.listdir(os.path.join(text_dir, folder))):
            stem, ext = os.path.splitext(name)
            if ext != ".txt" or not _IMAGE.match(stem + ".jpg"):
                continue
            text_path = os.path.join(text_dir, folder, name)
            caps = require_captions(text_path, read_caption_file(text_path, warnings))
            captioned.add(stem + ".jpg")
            items.append(Item(split=split, path=os.path.join(root, stem + ".jpg"), captions=tuple(caps),
                              class_id=cls, filename=stem + ".jpg"))
    uncaptioned = [f for f in jpgs if f not in captioned]
    if uncaptioned:
        stem = os.path.splitext(uncaptioned[0])[0]
        raise DataError(f"{os.path.join(root, uncaptioned[0])}: no caption file "
                        f"{os.path.join(text_dir, 'class_*', stem + '.txt')} ({len(uncaptioned)} images lack captions)")
    # Items in class order; sort by image name within each split for a stable, readable order.
    items.sort(key=lambda it: (it.split != "train", it.filename))
    extra = {
        "root": os.path.basename(root),
        "captions_root": os.path.basename(captions),
        "caption_layout": "reed",
        "split": {"definition": "Reed et al. class lists: trainvalclasses.txt -> train, testclasses.txt -> test "
                                "(class-disjoint)", "class_disjoint": True,
                  "train_classes": sorted(classes["train"]), "test_classes": sorted(classes["test"])},
        "bbox_crop": False,
        "crop": "centre square of side min(W, H)",
        "class_ids": "flower class number - 1 (from text_c10/class_NNNNN)",
    }
    return write_items(items, out, "flowers", size, WORD_LIMIT, extra, workers=workers,
                       max_bad_fraction=max_bad_fraction, warnings=warnings, stored_size=stored_size)
