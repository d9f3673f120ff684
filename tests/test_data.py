"""Prepared-dataset format, text handling, the dataset/loader and its resumable sampler."""

import json
import math
import os

import numpy as np
import pytest
import torch

from t2icli.data.dataset import EpochBatchSampler, PreparedDataset, make_loader
from t2icli.data.format import DataError, DatasetWriter, load_meta
from t2icli.data.text import END, Vocab, build_vocab, cut_caption, shuffle_locally, tokenize

WORDS = "red blue green small large bird wing crown belly beak short long".split()


def write_tiny(out, n_train=12, n_test=4, size=32, seed=0, word_limit=6):
    """A small random dataset through the real writer; captions of 3..9 words."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(out, source="unit", image_size=size, word_limit=word_limit) as w:
        for split, n in (("train", n_train), ("test", n_test)):
            s = w.split(split)
            for i in range(n):
                img = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                caps = [" ".join(rng.choice(WORDS, size=rng.integers(3, 10))) for _ in range(1 + i % 3)]
                if split == "test" and i == 0:
                    caps.append("a zebra-striped RED bird!")  # OOV words + punctuation
                s.add(img, caps, class_id=i % 3, filename=f"{split}/{i:03d}")
        return w.finish()


def test_tokenize_and_vocab():
    assert tokenize("This Bird, has a RED crown!") == ["this", "bird", "has", "a", "red", "crown"]
    vocab = Vocab(build_vocab(["b a", "a c a"]))
    assert vocab.words == [END, "a", "b", "c"]
    ids, oov = vocab.encode("A zebra c")
    assert ids == [1, 3] and oov == ["zebra"]
    assert vocab.decode(ids + [0, 2]) == ["a", "c"]
    with pytest.raises(ValueError):
        Vocab(["a", "b"])


def test_cut_caption_keeps_ordered_subset():
    rng = np.random.default_rng(0)
    ids = np.arange(1, 31)
    out, n = cut_caption(ids, 18, rng)
    assert n == 18 and len(out) == 18
    assert np.all(np.diff(out) > 0) and set(out) <= set(ids)  # ordered subset
    out, n = cut_caption([5, 6], 18, rng)
    assert n == 2 and list(out[:3]) == [5, 6, 0]


@pytest.mark.parametrize("k", [0.5, 1, 2, 3])
def test_shuffle_locally_moves_no_word_more_than_k_places(k):
    """--word-shuffle K (Lample et al. 2018's noise): every caption keeps its words and its padding, no word moves
    more than ceil(K) places, and with K <= 1 the first two words swap (K / (K + 1))^2 / 2 of the time
    (P(u_i - u_j > 1 / (K + 1)), u uniform): 1/8 with K = 1, 1/18 with K = 0.5."""
    g = torch.Generator().manual_seed(int(4 * k))
    B, T = 4000, 9
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    ids = torch.arange(1, T + 1).expand(B, T) * (torch.arange(T) < lengths[:, None])  # word i is i + 1, 0 = padding
    out = shuffle_locally(ids, lengths, torch.rand(B, T, generator=g), k)
    assert torch.equal(out.sort(dim=1).values, ids.sort(dim=1).values)  # the same words per caption
    assert torch.equal(out == 0, ids == 0)  # padding stays at the end
    moved = (out - 1 - torch.arange(T)).abs() * (out > 0)  # displacement of every word
    assert int(moved.max()) == math.ceil(k)
    if k <= 1:
        pairs = lengths >= 2
        assert abs(float((out[pairs, 0] == 2).float().mean()) - (k / (k + 1)) ** 2 / 2) < 0.015


def test_writer_layout_and_meta(tmp_path):
    meta = write_tiny(tmp_path / "ds")
    assert load_meta(tmp_path / "ds") == meta
    assert meta["splits"]["train"]["images"] == 12 and meta["splits"]["test"]["images"] == 4
    assert meta["splits"]["test"]["oov_words"] >= 1  # "zebra", "striped", "a"
    imgs = np.load(tmp_path / "ds" / "train" / "images.npy", mmap_mode="r")
    assert imgs.shape == (12, 32, 32, 3) and imgs.dtype == np.uint8
    vocab = json.loads((tmp_path / "ds" / "vocab.json").read_text())
    assert vocab[0] == END and "zebra" not in vocab
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp folder left


def test_writer_is_deterministic(tmp_path):
    write_tiny(tmp_path / "a")
    write_tiny(tmp_path / "b")
    for root, _, files in os.walk(tmp_path / "a"):
        for name in files:
            pa = os.path.join(root, name)
            pb = pa.replace(str(tmp_path / "a"), str(tmp_path / "b"))
            assert open(pa, "rb").read() == open(pb, "rb").read(), name


def test_interrupted_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "ds", source="unit", image_size=8, word_limit=5) as w:
            w.split("train").add(np.zeros((8, 8, 3), np.uint8), ["a bird"], 0, "x")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []


def test_rewrite_replaces_prepared_but_refuses_foreign_folder(tmp_path):
    write_tiny(tmp_path / "ds")
    write_tiny(tmp_path / "ds", seed=1)  # replacing a prepared dataset is fine
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        write_tiny(tmp_path / "other")
    assert os.listdir(tmp_path / "other") == ["notes.txt"]


def test_load_meta_errors(tmp_path):
    with pytest.raises(DataError, match="no such data folder"):
        load_meta(tmp_path / "missing")
    with pytest.raises(DataError, match="not a prepared dataset"):
        load_meta(tmp_path)
    write_tiny(tmp_path / "ds")
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    meta["format_version"] = 0
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format version"):
        load_meta(tmp_path / "ds")


def test_dataset_item_shapes_ranges_and_determinism(tmp_path):
    write_tiny(tmp_path / "ds")
    ds = PreparedDataset(tmp_path / "ds", "train", resolutions=(8, 16, 32), train=True, seed=3)
    item = ds[5]
    assert [tuple(x.shape) for x in item["images"]] == [(3, 8, 8), (3, 16, 16), (3, 32, 32)]
    for x in item["images"]:
        assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert item["tokens"].shape == (6,) and 1 <= item["length"] <= 6
    assert (item["tokens"][item["length"]:] == 0).all() and (item["tokens"][: item["length"]] > 0).all()
    again = ds[5]
    assert all(torch.equal(a, b) for a, b in zip(item["images"], again["images"]))
    ds.set_epoch(1)
    other = [ds[5] for _ in range(1)][0]
    differs = any(not torch.equal(a, b) for a, b in zip(item["images"], other["images"]))
    assert differs or not torch.equal(item["tokens"], other["tokens"]) or item["caption"] != other["caption"]


def test_test_split_is_deterministic_and_unaugmented(tmp_path):
    write_tiny(tmp_path / "ds")
    ds = PreparedDataset(tmp_path / "ds", "test", train=False)
    x = ds[1]["images"][0]
    raw = torch.from_numpy(np.array(ds.images_uint8[1])).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(x, raw, atol=1e-6)  # no crop/flip/resize at full size
    ds.set_epoch(7)
    assert torch.equal(ds[1]["tokens"], PreparedDataset(tmp_path / "ds", "test", train=False)[1]["tokens"])
    toks, oov = ds.encode("a zebra red bird")
    assert oov == ["a", "zebra"] and ds.decode(toks) == ["red", "bird"]
    assert ds.caption_texts(0)[-1] == "a zebra-striped RED bird!"


def test_crop_larger_than_the_stored_images_is_flagged_as_upsampling(tmp_path):
    """A crop whose AttnGAN load size int(C * 76 / 64) exceeds the stored pixels upsamples (an old or small
    folder, e.g. 299-px DAMSM crops of 256-px images): allowed, and said so in ds.upsamples."""
    write_tiny(tmp_path / "ds")  # stored at 32
    ds = PreparedDataset(tmp_path / "ds", "train", resolutions=(64,))
    assert ds.crop == 64 and ds.load == 76 and ds.upsamples and ds[0]["images"][0].shape == (3, 64, 64)
    assert PreparedDataset(tmp_path / "ds", "train", resolutions=(16, 32)).upsamples  # 32 from 38: as toybirds
    assert not PreparedDataset(tmp_path / "ds", "test", resolutions=(16, 32), train=False).upsamples


def test_augment_flip_and_none_keep_the_test_view(tmp_path):
    """--augment flip: the whole image at each resolution, as the test split gives it, mirrored half the time (no
    76/64 scale, so objects keep their test size); none: exactly the test view; scale-crop (AttnGAN's) stays the
    default; an unknown name is a DataError naming the choices."""
    write_tiny(tmp_path / "ds")  # stored at 32
    test = PreparedDataset(tmp_path / "ds", "train", resolutions=(16, 32), train=False)
    flip = PreparedDataset(tmp_path / "ds", "train", resolutions=(16, 32), train=True, augment="flip")
    none = PreparedDataset(tmp_path / "ds", "train", resolutions=(16, 32), train=True, augment="none")
    assert (flip.load, flip.upsamples) == (32, False) and PreparedDataset(tmp_path / "ds", "train").load == 38
    mirrored = 0
    for i in range(len(test)):
        views = test[i]["images"]
        got = flip[i]["images"]
        same = all(torch.equal(a, b) for a, b in zip(views, got))
        mirror = all(torch.allclose(a.flip(2), b, atol=1e-5) for a, b in zip(views, got))  # resizing commutes
        assert same or mirror
        mirrored += int(mirror and not same)
        assert all(torch.equal(a, b) for a, b in zip(views, none[i]["images"]))
    assert 0 < mirrored < len(test)
    with pytest.raises(DataError, match="scale-crop, flip, none"):
        PreparedDataset(tmp_path / "ds", "train", augment="jitter")


def _write_paper_sized(out):
    """Two train + one test image stored as prep stores CUB for 256-px models (stored_size_for(256) = 355)."""
    from t2icli.data.images import stored_size_for

    rng = np.random.default_rng(0)
    stored = stored_size_for(256)
    with DatasetWriter(out, source="unit", image_size=256, word_limit=6, stored_size=stored) as w:
        for split, n in (("train", 2), ("test", 1)):
            s = w.split(split)
            for i in range(n):
                s.add(rng.integers(0, 256, size=(stored, stored, 3), dtype=np.uint8), ["red bird"], i, f"{split}{i}")
        return w.finish()


def test_no_upsampling_of_stored_images_at_the_paper_sizes(tmp_path):
    """AttnGAN's 64/128/256 stages load 304 px and DAMSM's Inception crops load 355 (main.py:122-126 with
    BASE_SIZE 64 x 4 and DAMSM/bird.yml BASE_SIZE 299): the 355-px stored images serve both without upsampling,
    and DAMSM's 299 crop is a window of the stored pixels themselves (no resampling at all)."""
    from t2icli.data.images import load_size, stored_size_for

    assert (load_size(256), load_size(299), stored_size_for(256), stored_size_for(64)) == (304, 355, 355, 76)
    meta = _write_paper_sized(tmp_path / "cub")
    assert meta["image_size"] == 256 and meta["stored_size"] == 355 and meta["format_version"] == 2
    gan = PreparedDataset(tmp_path / "cub", "train", resolutions=(64, 128, 256), seed=1)
    assert (gan.crop, gan.load, gan.upsamples) == (256, 304, False)
    assert [tuple(x.shape) for x in gan[0]["images"]] == [(3, 64, 64), (3, 128, 128), (3, 256, 256)]
    damsm = PreparedDataset(tmp_path / "cub", "train", resolutions=(299,), seed=1)
    assert (damsm.crop, damsm.load, damsm.upsamples) == (299, 355, False)
    for i in range(len(damsm)):
        x = ((damsm[i]["images"][0] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()  # [299, 299, 3]
        stored = np.asarray(damsm.stored_uint8[i])
        windows = [stored[y : y + 299, x0 : x0 + 299] for y in range(57) for x0 in range(57)]
        assert any(np.array_equal(x, w) or np.array_equal(x, w[:, ::-1]) for w in windows)


def test_images_uint8_is_the_image_size_view_of_larger_stored_images(tmp_path):
    from PIL import Image

    _write_paper_sized(tmp_path / "cub")
    ds = PreparedDataset(tmp_path / "cub", "test", train=False)
    assert ds.images_uint8.shape == (1, 256, 256, 3) and ds.stored_uint8.shape == (1, 355, 355, 3)
    want = np.asarray(Image.fromarray(np.asarray(ds.stored_uint8[0])).resize((256, 256), Image.Resampling.LANCZOS))
    assert np.array_equal(ds.images_uint8[0], want) and np.array_equal(ds.images_uint8[[0]][0], want)
    assert np.array_equal(np.asarray(ds.images_uint8)[0], want) and ds[0]["images"][0].shape == (3, 256, 256)


def test_format_version_1_folders_still_load(tmp_path):
    write_tiny(tmp_path / "ds")
    path = tmp_path / "ds" / "dataset.json"
    meta = json.loads(path.read_text())
    for key in ("stored_size", "vocab_from"):
        del meta[key]
    meta["format_version"] = 1
    path.write_text(json.dumps(meta))
    loaded = load_meta(tmp_path / "ds")
    assert loaded["stored_size"] == loaded["image_size"] == 32 and loaded["vocab_from"] == "train"
    ds = PreparedDataset(tmp_path / "ds", "train", resolutions=(16, 32))
    assert ds.stored_size == 32 and ds.images_uint8 is ds.stored_uint8 and ds[0]["images"][1].shape == (3, 32, 32)
    meta["stored_size"] = 40  # a stored size that disagrees with images.npy is damage, named
    path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="images of 32x32 px"):
        load_meta(tmp_path / "ds")


def test_vocabulary_from_train_or_train_and_test(tmp_path):
    """AttnGAN builds its vocabulary from train + test captions (datasets.py:179-186); t2i's default on train."""
    for vocab_from in ("train", "train+test"):
        with DatasetWriter(tmp_path / vocab_from, source="unit", image_size=8, word_limit=5,
                           vocab_from=vocab_from) as w:
            w.split("train").add(np.zeros((8, 8, 3), np.uint8), ["red bird"], 0, "a")
            w.split("test").add(np.zeros((8, 8, 3), np.uint8), ["blue bird"], 1, "b")
            meta = w.finish()
        words = json.loads((tmp_path / vocab_from / "vocab.json").read_text())
        assert meta["vocab_from"] == vocab_from and ("blue" in words) == (vocab_from == "train+test")
        assert meta["splits"]["test"]["oov_words"] == (1 if vocab_from == "train" else 0)
    with pytest.raises(DataError, match="--vocab"):
        DatasetWriter(tmp_path / "x", source="unit", image_size=8, word_limit=5, vocab_from="test")
    with pytest.raises(DataError, match="--stored-size 4"):
        DatasetWriter(tmp_path / "y", source="unit", image_size=8, word_limit=5, stored_size=4)


def test_sampler_resume_and_ranks_cover_the_global_batches():
    full = list(EpochBatchSampler(50, 8, seed=1, epoch=2))
    assert len(full) == 6 and all(len(b) == 8 for b in full)
    assert list(EpochBatchSampler(50, 8, seed=1, epoch=2, start_batch=4)) == full[4:]
    r0 = list(EpochBatchSampler(50, 8, seed=1, epoch=2, rank=0, world=2))
    r1 = list(EpochBatchSampler(50, 8, seed=1, epoch=2, rank=1, world=2))
    for b, x, y in zip(full, r0, r1):
        assert sorted(x + y) == sorted(b) and len(x) == len(y) == 4
    assert list(EpochBatchSampler(50, 8, seed=1, epoch=3)) != full
    with pytest.raises(ValueError):
        EpochBatchSampler(50, 7, world=2)


def test_class_pairs_fill_batches_with_same_class_pairs():
    """--class-pairs: every epoch is a permutation in which rows 2m, 2m+1 share a class (left-over images of
    odd-sized classes pair up across classes), deterministic in (seed, epoch), resumable like the plain shuffle."""
    from t2icli.data.dataset import class_pair_order

    rng = np.random.default_rng(0)
    classes = rng.integers(0, 7, size=101)  # odd n, odd-sized classes
    order = class_pair_order(classes, np.random.default_rng(3))
    assert sorted(order.tolist()) == list(range(101))
    same = classes[order[0:100:2]] == classes[order[1:100:2]]
    leftovers = sum(int(c) % 2 for c in np.bincount(classes))  # one image of every odd-sized class
    assert same.sum() >= (101 - leftovers) // 2 and same.mean() > 0.9
    full = list(EpochBatchSampler(101, 8, seed=1, epoch=2, classes=classes))
    assert full == list(EpochBatchSampler(101, 8, seed=1, epoch=2, classes=classes))
    assert list(EpochBatchSampler(101, 8, seed=1, epoch=2, start_batch=5, classes=classes)) == full[5:]
    assert full != list(EpochBatchSampler(101, 8, seed=1, epoch=3, classes=classes))
    pairs = [(b[i], b[i + 1]) for b in full for i in range(0, 8, 2)]
    assert np.mean([classes[a] == classes[b] for a, b in pairs]) > 0.9  # pairs never straddle two batches
    plain = [i for b in EpochBatchSampler(101, 8, seed=1, epoch=2) for i in b]
    assert np.mean([classes[a] == classes[b] for a, b in zip(plain[::2], plain[1::2])]) < 0.5
    with pytest.raises(ValueError, match="class ids"):
        EpochBatchSampler(100, 8, classes=classes)


def test_loader_batches(tmp_path):
    write_tiny(tmp_path / "ds")
    ds = PreparedDataset(tmp_path / "ds", "train", resolutions=(16, 32))
    batches = list(make_loader(ds, 4, seed=0, epoch=0))
    assert len(batches) == 3
    b = batches[0]
    assert b["images"][0].shape == (4, 3, 16, 16) and b["images"][1].shape == (4, 3, 32, 32)
    assert b["tokens"].shape == (4, 6) and b["lengths"].shape == (4,)
    assert b["class_ids"].tolist() == [int(ds.class_ids[i]) for i in b["indices"]]
    resumed = list(make_loader(ds, 4, seed=0, epoch=0, start_batch=1))
    assert torch.equal(resumed[0]["images"][1], batches[1]["images"][1])


def _one_image(ds, index):
    """Sample `index`'s images made one image at a time, as AttnGAN's get_imgs does (taoxugit/AttnGAN
    code/datasets.py:59-88: Scale to int(C * 76 / 64), RandomCrop(C), RandomHorizontalFlip, then one downsample
    per smaller stage) with the dataset's own random draws: [float [3, r, r] per resolution]."""
    rng = ds._rng(index)
    k = int(rng.integers(ds.n_captions(index)))
    ds.cut_caption_of(index, k, rng)  # the caption's draws come first
    img = torch.from_numpy(np.array(ds.stored_uint8[index])).permute(2, 0, 1).unsqueeze(0).float()  # [1, 3, P, P]
    if ds.train and ds.augment == "scale-crop":
        big, c = ds.load, ds.crop
        if big != img.shape[-1]:
            img = torch.nn.functional.interpolate(img, size=(big, big), mode="bilinear", align_corners=False,
                                                  antialias=True)
        y, x = (int(v) for v in rng.integers(0, big - c + 1, size=2))
        img = img[:, :, y : y + c, x : x + c]
        if rng.random() < 0.5:
            img = img.flip(3)
    elif ds.train and ds.augment == "flip" and rng.random() < 0.5:
        img = img.flip(3)
    out = []
    for r in ds.resolutions:
        im = img if r == img.shape[-1] else torch.nn.functional.interpolate(
            img, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        out.append((im[0] / 127.5 - 1.0).clamp(-1.0, 1.0))
    return out


@pytest.mark.parametrize("augment,resolutions,train", [("scale-crop", (8, 16, 32), True), ("scale-crop", (64,), True),
                                                       ("flip", (8, 32), True), ("none", (16,), True),
                                                       ("scale-crop", (16, 32), False)])
def test_loader_batches_equal_images_made_one_at_a_time(tmp_path, augment, resolutions, train):
    """The loader resizes, crops and flips a whole batch at once (PreparedDataset.__getitems__): every image is
    bit for bit the one a per-image pipeline makes from the same draws, and ds[i] agrees with the batch."""
    write_tiny(tmp_path / "ds", n_train=20)
    ds = PreparedDataset(tmp_path / "ds", "train", resolutions=resolutions, train=train, seed=5, augment=augment)
    ds.set_epoch(3)
    batch = next(iter(make_loader(ds, 16, seed=5, epoch=3)))
    for row, i in enumerate(batch["indices"].tolist()):
        want = _one_image(ds, i)
        assert all(torch.equal(b[row], w) for b, w in zip(batch["images"], want)), (augment, i)
        assert all(torch.equal(a, w) for a, w in zip(ds[i]["images"], want))
        assert torch.equal(batch["tokens"][row], ds[i]["tokens"]) and batch["captions"][row] == ds[i]["caption"]


def test_tokenize_matches_nltk_regexp_tokenizer():
    RegexpTokenizer = pytest.importorskip("nltk.tokenize", reason="nltk (test extra; scripts/test.sh installs it)").RegexpTokenizer

    nltk_tok = RegexpTokenizer(r"\w+")
    for text in ["This bird has a RED crown, and a short-ish beak!", "  ", "naïve café über_bird 42x",
                 "line\nbreak\ttab", "...", "a-b_c d'e", "Ünïcödé 鸟 bird", ""]:
        assert tokenize(text) == nltk_tok.tokenize(text.lower())
