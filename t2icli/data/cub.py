"""Prepare CUB-200-2011 birds with Reed et al.'s or AttnGAN's captions, cropped around each bird as AttnGAN does.

Inputs:
- `root`: the CUB_200_2011 folder: images.txt (`<id> <class>/<file>.jpg`), bounding_boxes.txt
  (`<id> <x> <y> <w> <h>`), images/<class>/<file>.jpg.
- `captions`, one of two layouts (auto-detected; AttnGAN's wins when both are present):
  - Reed et al. (cvpr2016_cub): text_c10/<class>/<image stem>.txt with trainvalclasses.txt
    and testclasses.txt (class folder names, one a line) defining the split by class;
  - AttnGAN (data/birds): text/<class>/<image stem>.txt with train/filenames.pickle and
    test/filenames.pickle (lists of `<class>/<image stem>`), read with a restricted unpickler.

Both define the class-disjoint split of StackGAN/AttnGAN (150 classes, 8855 train images;
50 classes, 2933 test images). Images of images.txt in neither split are left out (counted).
Class ids come from the folder name prefix (`001.Black_footed_Albatross` -> 0), so DAMSM can
mask same-species negatives. Every image in the split needs a caption file with at least
one caption: a missing or empty one stops the prep, naming the file.
"""

import os
import re

from t2icli.data.format import DataError, check_out_dir
from t2icli.data.images import Item, read_caption_file, require_captions, write_items
from t2icli.data.safe_pickle import load_string_list

WORD_LIMIT = 18

_LAYOUTS = (
    "Reed et al.'s (text_c10/<class>/<image>.txt with trainvalclasses.txt and testclasses.txt) "
    "or AttnGAN's (text/<class>/<image>.txt with train/filenames.pickle and test/filenames.pickle)"
)


def class_index(folder, where):
    """CUB class id from a class folder name: `001.Black_footed_Albatross` -> 0. DataError otherwise."""
    m = re.match(r"^(\d+)\.", folder)
    if not m or int(m.group(1)) < 1:
        raise DataError(f"{where}: class folder {folder!r} does not start with a class number like '001.'")
    return int(m.group(1)) - 1


def detect_caption_layout(captions):
    """'attngan' or 'reed' for a captions folder; DataError naming it and both layouts otherwise."""
    j = os.path.join
    attngan = (os.path.isdir(j(captions, "text")) and os.path.isfile(j(captions, "train", "filenames.pickle"))
               and os.path.isfile(j(captions, "test", "filenames.pickle")))
    reed = (os.path.isdir(j(captions, "text_c10")) and os.path.isfile(j(captions, "trainvalclasses.txt"))
            and os.path.isfile(j(captions, "testclasses.txt")))
    if attngan:
        return "attngan"
    if reed:
        return "reed"
    raise DataError(f"--captions {captions}: unknown caption layout; expected {_LAYOUTS}")


def read_list(path):
    """Non-blank, stripped lines of a small text file (class lists). DataError if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def read_cub_index(root):
    """[(image id, relative path)] from images.txt and {id: (x, y, w, h)} from bounding_boxes.txt."""
    images_txt = os.path.join(root, "images.txt")
    boxes_txt = os.path.join(root, "bounding_boxes.txt")
    for path in (images_txt, boxes_txt):
        if not os.path.isfile(path):
            hint = ""
            if os.path.isfile(os.path.join(root, "CUB_200_2011", "images.txt")):
                hint = f" (did you mean --root {os.path.join(root, 'CUB_200_2011')}?)"
            raise DataError(f"--root {root}: expected CUB-200-2011 (images.txt, bounding_boxes.txt, images/); "
                            f"{os.path.basename(path)} is missing{hint}")
    images = []
    for k, line in enumerate(read_list(images_txt)):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or "/" not in parts[1]:
            raise DataError(f"{images_txt}, line {k + 1}: expected '<id> <class>/<file>.jpg', found {line!r}")
        images.append((int(parts[0]), parts[1]))
    boxes = {}
    for k, line in enumerate(read_list(boxes_txt)):
        parts = line.split()
        try:
            if len(parts) != 5:
                raise ValueError(line)
            boxes[int(parts[0])] = tuple(float(v) for v in parts[1:])
        except ValueError:
            raise DataError(f"{boxes_txt}, line {k + 1}: expected '<id> <x> <y> <w> <h>', found {line!r}") from None
    images.sort()
    return images, boxes


def _split_of_reed(captions):
    """Split function by class folder, from Reed's trainvalclasses.txt / testclasses.txt."""
    train = set(read_list(os.path.join(captions, "trainvalclasses.txt")))
    test = set(read_list(os.path.join(captions, "testclasses.txt")))
    both = sorted(train & test)
    if both:
        raise DataError(f"{captions}: classes in both trainvalclasses.txt and testclasses.txt: {both[:5]}")
    definition = "Reed et al. class lists: trainvalclasses.txt -> train, testclasses.txt -> test (class-disjoint)"

    def split_of(rel):
        folder = rel.split("/")[0]
        return "train" if folder in train else "test" if folder in test else None

    return split_of, definition, None


def _split_of_attngan(captions):
    """Split function by `<class>/<stem>` key, from AttnGAN's filenames pickles (untrusted: restricted load)."""
    lists = {}
    for split in ("train", "test"):
        path = os.path.join(captions, split, "filenames.pickle")
        lists[split] = [name.strip().replace("\\", "/") for name in load_string_list(path)]
    keys = {}
    for split, names in lists.items():
        for name in names:
            if keys.get(name, split) != split:
                raise DataError(f"{captions}: {name!r} is in both train/filenames.pickle and test/filenames.pickle")
            keys[name] = split
    definition = ("AttnGAN filenames pickles: train/filenames.pickle -> train, test/filenames.pickle -> test "
                  "(class-disjoint)")

    def split_of(rel):
        return keys.get(os.path.splitext(rel)[0])

    return split_of, definition, keys


def prepare_cub(root, captions, out, size=256, workers=2, max_bad_fraction=None, stored_size=None,
                vocab_from="train+test"):
    """Prepare CUB-200-2011 into `out`: AttnGAN bbox crop (aspect ratio kept), class-disjoint split.

    root: CUB_200_2011 folder; captions: a folder in Reed's or AttnGAN's layout (see module doc);
    size: the models' image size S; stored_size: the stored side (None: images.stored_size_for(S), 355 for 256);
    vocab_from: "train+test" (AttnGAN's build_dictionary, datasets.py:179-186) or "train". Returns the prep
    summary dict (split counts, bad images, seconds, images/s). Raises DataError (naming the path) on a bad
    layout, missing/empty captions, or > 1% bad images.
    """
    root = os.path.abspath(os.fspath(root))
    captions = os.path.abspath(os.fspath(captions))
    check_out_dir(out)
    images, boxes = read_cub_index(root)
    layout = detect_caption_layout(captions)
    if layout == "attngan":
        split_of, definition, keys = _split_of_attngan(captions)
        text_dir = os.path.join(captions, "text")
    else:
        split_of, definition, keys = _split_of_reed(captions)
        text_dir = os.path.join(captions, "text_c10")

    warnings, items, left_out = [], [], 0
    seen_keys = set()
    classes = {"train": set(), "test": set()}
    for image_id, rel in images:
        split = split_of(rel)
        if split is None:
            left_out += 1
            continue
        folder = rel.split("/")[0]
        stem = os.path.splitext(rel)[0]
        seen_keys.add(stem)
        if image_id not in boxes:
            raise DataError(f"{os.path.join(root, 'bounding_boxes.txt')}: no box for image {image_id} ({rel})")
        cls = class_index(folder, os.path.join(root, "images.txt"))
        text_path = os.path.join(text_dir, stem + ".txt")
        caps = require_captions(text_path, read_caption_file(text_path, warnings))
        classes[split].add(cls)
        items.append(Item(split=split, path=os.path.join(root, "images", rel), captions=tuple(caps),
                          class_id=cls, filename=rel, bbox=boxes[image_id]))
    if keys is not None:
        missing = sorted(set(keys) - seen_keys)
        if missing:
            raise DataError(f"--root {root}: {len(missing)} images named in {captions}/*/filenames.pickle are "
                            f"not in images.txt (e.g. {missing[:3]}); expected the complete CUB-200-2011 "
                            "for these captions")
    if not items:
        raise DataError(f"--root {root}: no image of images.txt is in the split of --captions {captions}")
    shared = sorted(classes["train"] & classes["test"])
    if shared:
        raise DataError(f"{captions}: the split is not class-disjoint (classes {shared[:5]} are in train and test)")

    extra = {
        "root": os.path.basename(root),
        "captions_root": os.path.basename(captions),
        "caption_layout": layout,
        "split": {"definition": definition, "class_disjoint": True,
                  "train_classes": sorted(classes["train"]), "test_classes": sorted(classes["test"])},
        "bbox_crop": True,
        "crop": "AttnGAN: square of side 2*int(0.75*max(w,h)) around the box centre, clipped to the image, then "
                "its centred square (aspect ratio kept)",
        "class_ids": "CUB class number - 1 (from the class folder prefix)",
        "left_out_not_in_split": left_out,
    }
    summary = write_items(items, out, "cub", size, WORD_LIMIT, extra, workers=workers,
                          max_bad_fraction=max_bad_fraction, warnings=warnings, stored_size=stored_size,
                          vocab_from=vocab_from)
    summary["caption_layout"] = layout
    summary["left_out_not_in_split"] = left_out
    return summary
