"""`t2i prep cub|flowers|coco|folder` end to end on miniature trees built here, and their bad inputs."""

import filecmp
import json
import os
import pickle

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

import t2icli.data.images as images_mod
from t2icli.cli import main
from t2icli.data.format import load_meta
from t2icli.data.images import (bbox_crop_box, center_square_box, centre_square_of, decode_image, square_resize,
                                stored_size_for)

BLUE, RED = (0, 0, 255), (255, 0, 0)
CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
SIZES = [(200, 160), (150, 220), (240, 180)]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def summary_of(res):
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def assert_failed_cleanly(res, out, *words):
    """Non-zero exit, every word in the message, no output (nor temporary) folder left behind."""
    assert res.exit_code != 0, res.output
    for w in words:
        assert str(w) in res.output, (w, res.output)
    assert not os.path.exists(out)
    assert not [f for f in os.listdir(os.path.dirname(out)) if ".tmp-" in f]


def save_image(path, size, bbox=None, mode="RGB", fmt=None):
    """A blue image with a red rectangle at bbox (x, y, w, h)."""
    im = Image.new("RGB", size, BLUE)
    if bbox is not None:
        x, y, w, h = bbox
        ImageDraw.Draw(im).rectangle([x, y, x + w - 1, y + h - 1], fill=RED)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im.convert(mode).save(path, format=fmt, quality=95)


# ---------------------------------------------------------------------------
# CUB
# ---------------------------------------------------------------------------


def make_cub(tmp_path, layout="reed", corrupt=False, per_class=3):
    """CUB_200_2011/ (3 classes x per_class images) and a captions folder in `layout`; returns (root, captions)."""
    root = tmp_path / "CUB_200_2011"
    caps = tmp_path / ("birds" if layout == "attngan" else "cvpr2016_cub")
    text = caps / ("text" if layout == "attngan" else "text_c10")
    images_txt, boxes_txt, names = [], [], {"train": [], "test": []}
    k = 0
    for c, cls in enumerate(CUB_CLASSES):
        for i in range(per_class):
            k += 1
            W, H = SIZES[(c + i) % len(SIZES)]
            # Box in the middle (not clipped), except the last image of each class: box at a corner.
            bbox = (W * 0.4, H * 0.375, W * 0.2, H * 0.25) if i < per_class - 1 else (4, 6, W * 0.5, H * 0.3)
            stem = f"{cls.split('.')[1]}_{k:04d}_{1000 + k}"
            rel = f"{cls}/{stem}.jpg"
            save_image(root / "images" / rel, (W, H), tuple(int(round(v)) for v in bbox))
            images_txt.append(f"{k} {rel}")
            boxes_txt.append(f"{k} " + " ".join(f"{v:.1f}" for v in bbox))
            (text / cls).mkdir(parents=True, exist_ok=True)
            (text / cls / f"{stem}.txt").write_text(
                f"this bird {k} is of class {c}\n\nit has a red body number {k}\n", encoding="utf-8")
            names["test" if c == 2 else "train"].append(f"{cls}/{stem}")
    if corrupt:
        (root / "images" / images_txt[1].split()[1]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "images.txt").write_text("\n".join(images_txt) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(boxes_txt) + "\n")
    (root / "classes.txt").write_text("".join(f"{c + 1} {n}\n" for c, n in enumerate(CUB_CLASSES)))
    if layout == "attngan":
        for split in ("train", "test"):
            (caps / split).mkdir(parents=True)
            with open(caps / split / "filenames.pickle", "wb") as f:
                pickle.dump(names[split], f, protocol=2)
    else:
        (caps / "trainvalclasses.txt").write_text(f"{CUB_CLASSES[0]}\n{CUB_CLASSES[1]}\n")
        (caps / "testclasses.txt").write_text(f"{CUB_CLASSES[2]}\n")
    return root, caps


def check_cub_output(out, n_train=6, n_test=3, size=32):
    meta = load_meta(out)
    assert meta["source"] == "cub" and meta["image_size"] == size and meta["word_limit"] == 18
    assert meta["splits"]["train"]["images"] == n_train and meta["splits"]["test"]["images"] == n_test
    assert meta["bbox_crop"] is True and meta["root"] == "CUB_200_2011" and "definition" in meta["split"]
    assert meta["vocab_from"] == "train+test" and meta["format_version"] == 2  # AttnGAN's vocabulary
    size = meta["stored_size"]  # the pixels checked below are the stored ones
    assert size == stored_size_for(meta["image_size"])
    train = np.load(out / "train" / "images.npy", mmap_mode="r")
    test = np.load(out / "test" / "images.npy", mmap_mode="r")
    assert train.shape == (n_train, size, size, 3) and test.shape == (n_test, size, size, 3)
    assert train.dtype == np.uint8
    # Class ids kept (001 -> 0 ...) and the split is class-disjoint: classes 0, 1 train; 2 test.
    assert set(np.load(out / "train" / "classes.npy").tolist()) == {0, 1}
    assert set(np.load(out / "test" / "classes.npy").tolist()) == {2}
    assert meta["split"]["train_classes"] == [0, 1] and meta["split"]["test_classes"] == [2]
    # Unclipped crops (first 2 images of a class) are centred on the red box; clipped ones (the third,
    # box at the top-left corner; their clipped box's centred square) keep the box at the top-left and the
    # background at the bottom.
    def is_red(px):
        return np.abs(px.astype(int) - RED).max() < 40

    files = [json.loads(line)["file"] for s in ("train", "test")
             for line in (out / s / "captions.jsonl").read_text().splitlines()]
    for ims, first in ((train, 0), (test, n_train)):
        for k in range(len(ims)):
            clipped = int(files[first + k].rsplit("_", 2)[1]) % 3 == 0  # image number 3, 6, 9
            if clipped:
                assert is_red(ims[k, size // 4, size * 3 // 8]) and not is_red(ims[k, size - 2, size // 2])
            else:
                assert is_red(ims[k, size // 2, size // 2]) and not is_red(ims[k, 1, 1])
    rows = [json.loads(line) for line in (out / "train" / "captions.jsonl").read_text().splitlines()]
    assert rows[0]["file"].startswith(CUB_CLASSES[0] + "/") and len(rows[0]["captions"]) == 2
    return meta


@pytest.mark.parametrize("layout", ["reed", "attngan"])
def test_cub_end_to_end(tmp_path, layout):
    root, caps = make_cub(tmp_path, layout)
    out = tmp_path / "data"
    s = summary_of(run("prep", "cub", "--root", root, "--captions", caps, "--out", out, "--size", 32, "--workers", 1))
    assert s["splits"]["train"]["images"] == 6 and s["bad_images"] == [] and s["images_per_s"] > 0
    meta = check_cub_output(out)
    assert meta["caption_layout"] == layout and s["caption_layout"] == layout


def test_cub_stored_size_and_vocabulary_options(tmp_path):
    root, caps = make_cub(tmp_path, "attngan")
    out = tmp_path / "data"
    s = summary_of(run("prep", "cub", "--root", root, "--captions", caps, "--out", out, "--size", 32,
                       "--stored-size", 40, "--vocab", "train", "--workers", 1))
    meta = load_meta(out)
    assert (s["stored_size"], meta["stored_size"], meta["image_size"], meta["vocab_from"]) == (40, 40, 32, "train")
    assert meta["splits"]["test"]["oov_words"] > 0  # "class 2" and the test image numbers are not in train
    assert np.load(out / "test" / "images.npy", mmap_mode="r").shape == (3, 40, 40, 3)
    res = run("prep", "cub", "--root", root, "--captions", caps, "--out", tmp_path / "bad", "--size", 32,
              "--stored-size", 24)
    assert_failed_cleanly(res, tmp_path / "bad", "--stored-size 24", "smaller than the image size 32")


def test_cub_is_deterministic_whatever_the_workers(tmp_path):
    root, caps = make_cub(tmp_path, "attngan")
    for name, workers in (("a", 1), ("b", 2)):
        summary_of(run("prep", "cub", "--root", root, "--captions", caps, "--out", tmp_path / name,
                       "--size", 32, "--workers", workers))
    for sub in ("", "train", "test"):
        a, b = tmp_path / "a" / sub, tmp_path / "b" / sub
        assert sorted(os.listdir(a)) == sorted(os.listdir(b))
        for f in os.listdir(a):
            if os.path.isfile(a / f):
                assert filecmp.cmp(a / f, b / f, shallow=False), f
    # Re-running onto an existing prepared dataset replaces it with identical bytes.
    summary_of(run("prep", "cub", "--root", root, "--captions", caps, "--out", tmp_path / "a", "--size", 32,
                   "--workers", 1))
    assert filecmp.cmp(tmp_path / "a" / "train" / "images.npy", tmp_path / "b" / "train" / "images.npy", shallow=False)


def test_bbox_crop_geometry():
    # AttnGAN: r = int(0.75 * max(w, h)); centre (int((2x + w) / 2), int((2y + h) / 2)); clipped to the image.
    assert bbox_crop_box((80, 60, 40, 40), 200, 160) == (70, 50, 130, 110)
    assert bbox_crop_box((10, 5, 40, 20), 100, 80) == (0, 0, 60, 45)
    assert bbox_crop_box((60.5, 27.0, 325.0, 304.0), 500, 375) == (0, 0, 466, 375)
    assert center_square_box(200, 160) == (20, 0, 180, 160) and center_square_box(150, 220) == (0, 35, 150, 185)


def test_bbox_crop_maps_the_box_where_computed(tmp_path):
    # Box [80, 120) x [60, 100) in a 200x160 image -> crop (70, 50, 130, 110): the box spans 10..50 of 60 px,
    # i.e. 1/6 .. 5/6 of the output, in both directions.
    path = tmp_path / "a.png"
    save_image(path, (200, 160), (80, 60, 40, 40), fmt="PNG")
    im = decode_image(path, 60, bbox=(80, 60, 40, 40)).astype(int)
    red = (np.abs(im - RED).max(axis=2) < 60)
    assert red[12:48, 12:48].all() and not red[:8].any() and not red[52:].any()
    assert not red[:, :8].any() and not red[:, 52:].any()
    # Clipped at the top-left corner: crop (0, 0, 60, 45), whose centred square (7, 0, 52, 45) is resized to
    # 60 x 60 (x 4/3 both ways): box x 10..50 -> 4..57, y 5..25 -> 6.7..33.
    save_image(path, (100, 80), (10, 5, 40, 20), fmt="PNG")
    im = decode_image(path, 60, bbox=(10, 5, 40, 20)).astype(int)
    red = (np.abs(im - RED).max(axis=2) < 60)
    assert red[10:31, 8:54].all() and not red[37:].any() and not red[:, :2].any() and not red[:4].any()


def test_clipped_box_keeps_its_aspect_ratio(tmp_path):
    """AttnGAN resizes a clipped (non-square) box with transforms.Scale(int), which keeps its aspect ratio, then
    random-crops a square (datasets.py:59-71, main.py:123-126); t2i stores the box's centred square. A square
    drawn in the photo stays square: stretching the 150 x 100 box to a square would make it 1.5x wider."""
    assert centre_square_of((0, 0, 150, 100)) == (25, 0, 125, 100) and centre_square_of((5, 7, 45, 87)) == (5, 27, 45, 67)
    im = Image.new("RGB", (300, 200), BLUE)
    ImageDraw.Draw(im).rectangle([80, 40, 119, 79], fill=RED)  # a 40 x 40 red square
    im.save(tmp_path / "p.png")
    bbox = (50, 20, 100, 60)  # r = 75, centre (100, 50): box (25, 0, 175, 125), clipped at the top: 150 x 125
    assert bbox_crop_box(bbox, 300, 200) == (25, 0, 175, 125)
    out = decode_image(tmp_path / "p.png", 100, bbox=bbox)
    assert np.array_equal(out, square_resize(im, (37, 0, 162, 125), 100))  # the centred 125 x 125 square
    red = np.abs(out.astype(int) - RED).max(axis=2) < 60
    rows, cols = np.flatnonzero(red.any(1)), np.flatnonzero(red.any(0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert abs(width - height) <= 1 and abs(height - 40 * 100 / 125) <= 2


def test_cub_corrupt_image_over_the_limit_fails_listing_it(tmp_path):
    root, caps = make_cub(tmp_path, corrupt=True)
    out = tmp_path / "data"
    res = run("prep", "cub", "--root", root, "--captions", caps, "--out", out, "--size", 32, "--workers", 1)
    assert_failed_cleanly(res, out, "1 of 9 images are unreadable", "Black_footed_Albatross_0002_1002.jpg")


def test_cub_corrupt_image_under_the_limit_is_skipped_and_listed(tmp_path, monkeypatch):
    monkeypatch.setattr(images_mod, "MAX_BAD_FRACTION", 0.2)  # 1 of 9 is under 20%, as 1 of 200 is under 1%
    root, caps = make_cub(tmp_path, corrupt=True)
    out = tmp_path / "data"
    s = summary_of(run("prep", "cub", "--root", root, "--captions", caps, "--out", out, "--size", 32, "--workers", 1))
    assert len(s["bad_images"]) == 1 and s["bad_images"][0][0].endswith("Black_footed_Albatross_0002_1002.jpg")
    meta = check_cub_output(out, n_train=5)
    assert meta["bad_images"][0][0] == f"{CUB_CLASSES[0]}/Black_footed_Albatross_0002_1002.jpg"
    assert str(tmp_path) not in (out / "dataset.json").read_text()  # no absolute paths in the dataset


def test_cub_bad_inputs(tmp_path):
    root, caps = make_cub(tmp_path)
    out = tmp_path / "data"
    args = ["prep", "cub", "--root", root, "--out", out, "--size", 32, "--workers", 1]
    # Unknown caption layout: names the folder and both expected layouts.
    (tmp_path / "empty").mkdir()
    res = run(*args, "--captions", tmp_path / "empty")
    assert_failed_cleanly(res, out, tmp_path / "empty", "text_c10", "filenames.pickle")
    # --root that is not CUB.
    res = run("prep", "cub", "--root", caps, "--captions", caps, "--out", out)
    assert_failed_cleanly(res, out, caps, "images.txt")
    # Non-empty --out that is not a dataset: refused, untouched.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    res = run("prep", "cub", "--root", root, "--captions", caps, "--out", tmp_path / "mine")
    assert res.exit_code != 0 and "not empty" in res.output and "mine" in res.output
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]
    # Image with an empty caption file, then with none.
    victim = caps / "text_c10" / CUB_CLASSES[2] / "Sooty_Albatross_0007_1007.txt"
    victim.write_text("\n  \n")
    res = run(*args, "--captions", caps)
    assert_failed_cleanly(res, out, "Sooty_Albatross_0007_1007.txt", "no captions")
    victim.unlink()
    res = run(*args, "--captions", caps)
    assert_failed_cleanly(res, out, "Sooty_Albatross_0007_1007.txt", "missing")
    # A malicious filenames.pickle is refused (AttnGAN layout).
    root2, caps2 = make_cub(tmp_path / "t2", "attngan")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (caps2 / "train" / "filenames.pickle").write_bytes(pickle.dumps([Evil()]))
    res = run("prep", "cub", "--root", root2, "--captions", caps2, "--out", out)
    assert_failed_cleanly(res, out, "filenames.pickle", "refused")
    assert not (tmp_path / "pwned").exists()
    # Bad --size is a usage error naming the flag, before any work.
    res = run(*args, "--captions", caps, "--size", 8)
    assert res.exit_code == 2 and "--size" in res.output


def test_non_utf8_captions_are_read_as_latin1_with_a_warning(tmp_path):
    root, caps = make_cub(tmp_path)
    (caps / "text_c10" / CUB_CLASSES[0] / "Black_footed_Albatross_0001_1001.txt").write_bytes(b"a caf\xe9 bird\n")
    out = tmp_path / "data"
    s = summary_of(run("prep", "cub", "--root", root, "--captions", caps, "--out", out, "--size", 32, "--workers", 1))
    assert len(s["warnings"]) == 1 and "Black_footed_Albatross_0001_1001.txt" in s["warnings"][0]
    first = json.loads((out / "train" / "captions.jsonl").read_text().splitlines()[0])
    assert first["captions"] == ["a café bird"]


# ---------------------------------------------------------------------------
# Flowers
# ---------------------------------------------------------------------------


def make_flowers(tmp_path):
    jpg, caps = tmp_path / "jpg", tmp_path / "cvpr2016_flowers"
    k = 0
    for c in range(1, 4):
        for _ in range(2):
            k += 1
            save_image(jpg / f"image_{k:05d}.jpg", SIZES[k % 3], (0, 0, 5, 5))
            d = caps / "text_c10" / f"class_{c:05d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"image_{k:05d}.txt").write_text(f"this flower {k} has petals\nflower of class {c}\n")
    (caps / "trainvalclasses.txt").write_text("class_00001\nclass_00003\n")
    (caps / "testclasses.txt").write_text("class_00002\n")
    return jpg, caps


def test_flowers_end_to_end_and_bad_inputs(tmp_path):
    jpg, caps = make_flowers(tmp_path)
    out = tmp_path / "data"
    s = summary_of(run("prep", "flowers", "--root", jpg, "--captions", caps, "--out", out, "--size", 24,
                       "--workers", 1))
    assert s["splits"] == load_meta(out)["splits"]
    meta = load_meta(out)
    assert meta["source"] == "flowers" and meta["bbox_crop"] is False and meta["word_limit"] == 18
    assert (meta["splits"]["train"]["images"], meta["splits"]["test"]["images"]) == (4, 2)
    assert np.load(out / "train" / "classes.npy").tolist() == [0, 0, 2, 2]
    assert np.load(out / "test" / "classes.npy").tolist() == [1, 1]
    assert meta["stored_size"] == stored_size_for(24) == 28 and meta["vocab_from"] == "train"
    assert np.load(out / "train" / "images.npy", mmap_mode="r").shape == (4, 28, 28, 3)

    out2 = tmp_path / "data2"
    # An image with no caption file.
    save_image(jpg / "image_00007.jpg", (50, 40))
    res = run("prep", "flowers", "--root", jpg, "--captions", caps, "--out", out2)
    assert_failed_cleanly(res, out2, "image_00007.jpg", "image_00007.txt")
    (jpg / "image_00007.jpg").unlink()
    # Unknown layouts.
    res = run("prep", "flowers", "--root", jpg, "--captions", jpg, "--out", out2)
    assert_failed_cleanly(res, out2, jpg, "text_c10")
    res = run("prep", "flowers", "--root", caps, "--captions", caps, "--out", out2)
    assert_failed_cleanly(res, out2, caps, "image_00001.jpg")
    # A class in neither list.
    (caps / "testclasses.txt").write_text("\n")
    res = run("prep", "flowers", "--root", jpg, "--captions", caps, "--out", out2)
    assert_failed_cleanly(res, out2, "class_00002", "testclasses.txt")


# ---------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------


def make_coco(tmp_path):
    root = tmp_path / "coco"
    next_ann = iter([90, 3, 57, 12, 41, 8, 77, 66, 5, 31, 24, 18, 99, 2, 61, 44, 70])
    for part, ids in (("train", [9, 25, 4]), ("val", [42, 7])):
        images, anns = [], []
        for j, image_id in enumerate(ids):
            name = f"COCO_{part}2014_{image_id:012d}.jpg"
            save_image(root / f"{part}2014" / name, SIZES[j % 3], (10, 10, 20, 20))
            images.append({"id": image_id, "file_name": name, "width": 0, "height": 0})
            for c in range(7 if image_id == 9 else 2):
                caption = f"A photo {image_id}\n of  thing {c}"
                anns.append({"id": next(next_ann), "image_id": image_id, "caption": caption})
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        with open(root / "annotations" / f"captions_{part}2014.json", "w") as f:
            json.dump({"images": images, "annotations": anns}, f)
    return root


def test_coco_end_to_end_and_bad_inputs(tmp_path):
    root = make_coco(tmp_path)
    out = tmp_path / "data"
    summary_of(run("prep", "coco", "--root", root, "--out", out, "--size", 16, "--workers", 1))
    meta = load_meta(out)
    assert meta["source"] == "coco" and meta["word_limit"] == 12
    assert (meta["splits"]["train"]["images"], meta["splits"]["test"]["images"]) == (3, 2)
    assert np.load(out / "train" / "classes.npy").tolist() == [4, 9, 25]  # class id = image id, by id
    assert meta["vocab_from"] == "train+test" and meta["stored_size"] == 19  # int(16 * 76 / 64)
    assert np.load(out / "test" / "images.npy", mmap_mode="r").shape == (2, 19, 19, 3)
    rows = [json.loads(line) for line in (out / "train" / "captions.jsonl").read_text().splitlines()]
    # Image 9 has 7 captions with annotation ids 90, 3, 57, 12, 41, 8, 77: the 5 lowest ids are kept, in id order.
    assert rows[1]["file"] == "train2014/COCO_train2014_000000000009.jpg"
    assert rows[1]["captions"] == [f"A photo 9 of thing {c}" for c in (1, 5, 3, 4, 2)]
    assert len(rows[0]["captions"]) == 2

    out2 = tmp_path / "small"
    summary_of(run("prep", "coco", "--root", root, "--out", out2, "--size", 16, "--limit", 1, "--workers", 1))
    assert load_meta(out2)["splits"]["test"]["images"] == 1

    out3 = tmp_path / "data3"
    res = run("prep", "coco", "--root", tmp_path / "coco" / "train2014", "--out", out3)
    assert_failed_cleanly(res, out3, "train2014", "captions_train2014.json")
    ann = root / "annotations" / "captions_val2014.json"
    data = json.loads(ann.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 7]
    ann.write_text(json.dumps(data))
    res = run("prep", "coco", "--root", root, "--out", out3)
    assert_failed_cleanly(res, out3, "captions_val2014.json", "COCO_val2014_000000000007.jpg", "no captions")


# ---------------------------------------------------------------------------
# Folder
# ---------------------------------------------------------------------------


def make_folder(tmp_path):
    root = tmp_path / "mine"
    files = {"a.jpg": ("RGB", "JPEG"), "b.png": ("RGBA", "PNG"), "c.JPG": ("L", "JPEG"),
             "birds/d.bmp": ("P", "BMP"), "birds/e.webp": ("RGB", "WEBP"), "birds/deep/f.png": ("LA", "PNG"),
             "cats/g.jpeg": ("CMYK", "JPEG"), "cats/h.png": ("I;16", "PNG"), "cats/i.jpg": ("RGB", "JPEG"),
             "cats/j.jpg": ("RGB", "JPEG")}
    for k, (name, (mode, fmt)) in enumerate(files.items()):
        save_image(root / name, SIZES[k % 3], (30, 30, 40, 40), mode=mode, fmt=fmt)
        (root / name).with_suffix(".txt").write_text(f"picture number {k}\n\n  a {mode} image  \n")
    (root / "README.md").write_text("not an image")
    return root, files


def test_folder_end_to_end(tmp_path):
    root, files = make_folder(tmp_path)
    out = tmp_path / "data"
    s = summary_of(run("prep", "folder", "--root", root, "--out", out, "--size", 20, "--test-fraction", 0.2,
                       "--workers", 1))
    assert s["bad_images"] == []
    meta = load_meta(out)
    assert meta["classes"] == ["", "birds", "birds/deep", "cats"] and meta["word_limit"] == 18
    assert (meta["splits"]["train"]["images"], meta["splits"]["test"]["images"]) == (8, 2)
    rows = []
    for split in ("train", "test"):
        rows += [json.loads(line) for line in (out / split / "captions.jsonl").read_text().splitlines()]
        assert np.load(out / split / "images.npy", mmap_mode="r").shape[1:] == (23, 23, 3)  # stored_size_for(20)
    assert sorted(r["file"] for r in rows) == sorted(files)
    cls = {r["file"]: c for r, c in zip(rows, np.concatenate(
        [np.load(out / "train" / "classes.npy"), np.load(out / "test" / "classes.npy")]))}
    assert cls["a.jpg"] == cls["b.png"] == 0 and cls["birds/d.bmp"] == 1 and cls["birds/deep/f.png"] == 2
    assert cls["cats/h.png"] == 3
    assert all(r["captions"][0].startswith("picture number") and len(r["captions"]) == 2 for r in rows)
    # Same seed: same split and bytes; another seed: another split.
    summary_of(run("prep", "folder", "--root", root, "--out", tmp_path / "again", "--size", 20,
                   "--test-fraction", 0.2, "--workers", 2))
    for f in ("dataset.json", "train/images.npy", "test/captions.jsonl", "vocab.json"):
        assert filecmp.cmp(out / f, tmp_path / "again" / f, shallow=False), f
    summary_of(run("prep", "folder", "--root", root, "--out", tmp_path / "other", "--size", 20,
                   "--test-fraction", 0.2, "--seed", 3, "--workers", 1))
    assert (tmp_path / "other" / "test" / "captions.jsonl").read_text() != (out / "test" / "captions.jsonl").read_text()


def test_folder_bad_inputs(tmp_path):
    root, _ = make_folder(tmp_path)
    out = tmp_path / "data"
    (root / "cats" / "i.txt").unlink()
    res = run("prep", "folder", "--root", root, "--out", out, "--workers", 1)
    assert_failed_cleanly(res, out, os.path.join("cats", "i.txt"), "missing")
    (root / "cats" / "i.txt").write_text("\n\n")
    res = run("prep", "folder", "--root", root, "--out", out, "--workers", 1)
    assert_failed_cleanly(res, out, os.path.join("cats", "i.txt"), "no captions")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.txt").write_text("hello")
    res = run("prep", "folder", "--root", tmp_path / "docs", "--out", out)
    assert_failed_cleanly(res, out, "docs", "no images found", ".jpg")
    res = run("prep", "folder", "--root", root, "--out", out, "--test-fraction", 1.5)
    assert res.exit_code == 2 and "--test-fraction" in res.output
    res = run("prep", "folder", "--root", tmp_path / "nowhere", "--out", out)
    assert res.exit_code == 2 and "--root" in res.output


def test_exif_orientation_is_applied_for_folders_only(tmp_path):
    # Stored 60x40, left half red, right half blue; EXIF orientation 6 = "rotate 90 degrees clockwise to view".
    a = np.zeros((40, 60, 3), dtype=np.uint8)
    a[:, :30], a[:, 30:] = RED, BLUE
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)

    def red(px):
        return np.abs(px.astype(int) - RED).max() < 60

    upright = decode_image(tmp_path / "r.jpg", 20, exif_transpose=True)  # viewed 40x60: red on top
    assert red(upright[2, 10]) and not red(upright[17, 10])
    stored = decode_image(tmp_path / "r.jpg", 20)  # stored pixels (CUB boxes refer to these): red on the left
    assert red(stored[10, 2]) and not red(stored[10, 17])


def test_image_modes_become_rgb(tmp_path):
    # Transparent pixels become white; greyscale/CMYK/16-bit/palette decode to 3 channels.
    path = tmp_path / "t.png"
    Image.new("RGBA", (40, 30), (255, 0, 0, 0)).save(path)
    assert (decode_image(path, 16) == 255).all()
    Image.fromarray(np.full((30, 40), 65535, dtype=np.uint16)).save(path)
    assert (decode_image(path, 16) == 255).all()
    Image.new("CMYK", (40, 30), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    assert decode_image(tmp_path / "c.jpg", 16).shape == (16, 16, 3)


@pytest.mark.parametrize("source", ["cub", "flowers", "coco", "folder"])
def test_non_empty_out_that_is_not_a_dataset_is_refused(tmp_path, source):
    if source == "cub":
        root, caps = make_cub(tmp_path, per_class=2)
        args = ["--root", root, "--captions", caps]
    elif source == "flowers":
        root, caps = make_flowers(tmp_path)
        args = ["--root", root, "--captions", caps]
    elif source == "coco":
        args = ["--root", make_coco(tmp_path)]
    else:
        args = ["--root", make_folder(tmp_path)[0]]
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    res = run("prep", source, *args, "--out", mine, "--size", 16, "--workers", 1)
    assert res.exit_code != 0 and str(mine) in res.output and "not empty" in res.output
    assert os.listdir(mine) == ["thesis.tex"]
    # An output that is a prepared dataset is replaced; stdout is one JSON line.
    out = tmp_path / "data"
    for _ in range(2):
        res = run("prep", source, *args, "--out", out, "--size", 16, "--workers", 1)
        assert res.exit_code == 0, res.output
        assert len(res.stdout.strip().splitlines()) == 1 and json.loads(res.stdout)["source"] == source
    assert load_meta(out)["source"] == source


def test_jpeg_draft_decoding_keeps_geometry_and_pixels(tmp_path):
    # A 900x700 photo-like JPEG with a red box: at size 32 the crop is > 8x the size, so libjpeg
    # decodes at 1/8 scale; the result must match a full decode closely, box in the same place.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:700, 0:900]
    a = np.stack([xx * 255 // 900, yy * 255 // 700, (xx + yy) % 256], -1).astype(np.float64)
    a = np.clip(a + rng.normal(0, 8, a.shape), 0, 255).astype(np.uint8)
    a[300:420, 400:560] = RED
    Image.fromarray(a).save(tmp_path / "big.jpg", quality=92)
    for bbox in (None, (400, 300, 160, 120), (0, 0, 500, 300)):
        fast = decode_image(tmp_path / "big.jpg", 32, bbox=bbox).astype(int)
        full = decode_image(tmp_path / "big.jpg", 32, bbox=bbox, jpeg_draft=False).astype(int)
        assert np.abs(fast - full).mean() < 3 and np.abs(fast - full).max() < 60, bbox
