"""Prepare MS-COCO captions (2014, or 2017 when 2014 is absent): train -> train, val -> test, as AttnGAN.

Inputs: `root` with train2014/, val2014/ and annotations/captions_train2014.json,
annotations/captions_val2014.json (the same names with 2017 are accepted instead).

- Captions: the first 5 in annotation-id order are kept per image (images with fewer keep
  theirs); whitespace is collapsed. An image listed in the annotations with no caption
  stops the prep, naming it.
- Class id: the COCO image id. COCO has no classes for captions, so when DAMSM masks
  same-class negatives only the image itself is masked.
- Images: centred square of side min(W, H), resized to the stored size with LANCZOS; images are
  streamed to disk by the writer, so memory does not grow with the data set.
- `limit`: keep only the first N images (by image id) of each split, for a quick subset.
"""

import json
import os

from t2icli.data.format import DataError, check_out_dir
from t2icli.data.images import Item, write_items

WORD_LIMIT = 12
CAPTIONS_PER_IMAGE = 5


def find_year(root):
    """The COCO release under `root` ('2014' preferred, else '2017'); DataError naming root and the layout otherwise."""
    for year in ("2014", "2017"):
        need = [f"train{year}", f"val{year}", os.path.join("annotations", f"captions_train{year}.json"),
                os.path.join("annotations", f"captions_val{year}.json")]
        if all(os.path.exists(os.path.join(root, p)) for p in need):
            return year
    raise DataError(f"--root {root}: unknown COCO layout; expected train2014/, val2014/, "
                    "annotations/captions_train2014.json and annotations/captions_val2014.json (or the 2017 names)")


def read_captions_json(path, image_dir, split, limit=None):
    """Items of one COCO captions file: images by id, first 5 captions by annotation id."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        images = {int(im["id"]): im["file_name"] for im in data["images"]}
        anns = sorted((int(a["id"]), int(a["image_id"]), str(a["caption"])) for a in data["annotations"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a COCO captions file ({type(exc).__name__}: {exc}); "
                        "expected {'images': [{id, file_name}], 'annotations': [{id, image_id, caption}]}") from None
    del data
    per_image = {}
    for _, image_id, text in anns:
        caps = per_image.setdefault(image_id, [])
        text = " ".join(text.split())
        if text and len(caps) < CAPTIONS_PER_IMAGE:
            caps.append(text)
    ids = sorted(images)
    if limit is not None:
        ids = ids[:limit]
    items = []
    for image_id in ids:
        caps = per_image.get(image_id)
        if not caps:
            raise DataError(f"{path}: image {image_id} ({images[image_id]}) has no captions; expected at least one")
        rel = f"{os.path.basename(image_dir)}/{images[image_id]}"
        items.append(Item(split=split, path=os.path.join(image_dir, images[image_id]), captions=tuple(caps),
                          class_id=image_id, filename=rel))
    return items


def prepare_coco(root, out, size=256, limit=None, workers=2, max_bad_fraction=None, stored_size=None,
                 vocab_from="train+test"):
    """Prepare COCO captions into `out` (train2014 -> train, val2014 -> test; centre square, S x S).

    limit: keep the first N images of each split (None: all); stored_size: the stored side (None:
    images.stored_size_for(S)); vocab_from: "train+test" (AttnGAN's build_dictionary) or "train".
    Returns the prep summary dict.
    Raises DataError naming the path on an unknown layout, an image with no captions, or > 1% bad images.
    """
    root = os.path.abspath(os.fspath(root))
    check_out_dir(out)
    year = find_year(root)
    items = []
    for part, split in (("train", "train"), ("val", "test")):
        ann = os.path.join(root, "annotations", f"captions_{part}{year}.json")
        items += read_captions_json(ann, os.path.join(root, f"{part}{year}"), split, limit)
    extra = {
        "root": os.path.basename(root),
        "split": {"definition": f"COCO {year}: train{year} -> train, val{year} -> test (as AttnGAN)",
                  "class_disjoint": False, "limit_per_split": limit},
        "bbox_crop": False,
        "crop": "centre square of side min(W, H)",
        "class_ids": "COCO image id (no caption classes: only the image itself is a same-class negative)",
        "captions_per_image": f"first {CAPTIONS_PER_IMAGE} in annotation id order",
    }
    return write_items(items, out, "coco", size, WORD_LIMIT, extra, workers=workers,
                       max_bad_fraction=max_bad_fraction, stored_size=stored_size, vocab_from=vocab_from)
