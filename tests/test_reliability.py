"""The bad-input catalogue of docs/RELIABILITY.md: each bad input gives a clear message naming the problem,
a non-zero exit, and leaves nothing half-written (run folders, checkpoints, exports, prepared datasets)."""

import errno
import json
import os
import shutil
import time

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from t2icli.cli import main
from t2icli.training.run import list_checkpoints, load_checkpoint


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def failed(res, code, *words):
    """Assert exit `code` and that every word is in the message (stdout + stderr)."""
    assert res.exit_code == code, (res.exit_code, res.output)
    assert "Traceback" not in res.output, res.output
    for w in words:
        assert str(w) in res.output, (w, res.output)


def snapshot_files(folder):
    """{relative path: bytes} of every file under `folder` (to check that nothing changed)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """24 train / 8 test toybirds at 32 px; a random tiny DAMSM export and 2-stage AttnGAN export on them."""
    from t2icli.data.toybirds import prepare_toybirds
    from test_eval import make_tiny_models

    root = tmp_path_factory.mktemp("reliability")
    data = str(root / "data")
    prepare_toybirds(data, size=32, n_train=24, n_test=8, captions_per_image=2, workers=1)
    gan, damsm = make_tiny_models(data, str(root / "models"))
    return {"data": data, "gan": gan, "damsm": damsm, "root": root}


DAMSM_TINY = ["--batch-size", "8", "--small-width", "4", "--eval-every", "1000", "--no-progress", "--device", "cpu"]
GAN_TINY = ["--stages", "1", "--gf-dim", "4", "--df-dim", "4", "--z-dim", "8", "--cond-dim", "8", "--batch-size", "8",
            "--snapshot-every", "1000", "--no-progress", "--device", "cpu"]


# -- data folders -----------------------------------------------------------------------------------
def test_missing_data_folder(tiny, tmp_path):
    out = tmp_path / "run"
    failed(run("train", "damsm", "--data", tmp_path / "nowhere", "--out", out), 2, "--data", "does not exist")
    failed(run("train", "attngan", "--data", tmp_path / "nowhere", "--damsm", tiny["damsm"], "--out", out), 2,
           "--data", "does not exist")
    failed(run("eval", "--model", tiny["gan"], "--data", tmp_path / "nowhere"), 2, "--data", "does not exist")
    failed(run("prep", "folder", "--root", tmp_path / "nowhere", "--out", tmp_path / "d"), 2, "--root",
           "does not exist")
    assert not out.exists() and not (tmp_path / "d").exists()


def _damage(data, how):
    """Damage a copy of a prepared dataset in one way; returns the words its error message must hold."""
    if how == "empty":
        shutil.rmtree(data)
        os.makedirs(data)
        return ["not a prepared dataset", "t2i prep"]
    if how == "garbage-json":
        with open(os.path.join(data, "dataset.json"), "w") as f:
            f.write("{ not json")
        return ["dataset.json", "unreadable"]
    if how == "missing-array":
        os.remove(os.path.join(data, "train", "tokens.npy"))
        return ["incomplete dataset", "train/tokens.npy is missing"]
    if how == "truncated-images":
        path = os.path.join(data, "train", "images.npy")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        return [path, "truncated", "prepare the dataset again"]
    if how == "not-npy":
        with open(os.path.join(data, "test", "classes.npy"), "wb") as f:
            f.write(b"these are not the bytes you are looking for")
        return [os.path.join("test", "classes.npy"), "not a readable .npy array"]
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["empty", "garbage-json", "missing-array", "truncated-images", "not-npy"])
def test_corrupt_data_folder(tiny, tmp_path, how):
    data = str(tmp_path / "data")
    shutil.copytree(tiny["data"], data)
    words = _damage(data, how)
    out = tmp_path / "run"
    failed(run("train", "damsm", "--data", data, "--out", out, *DAMSM_TINY), 1, *words)
    failed(run("train", "attngan", "--data", data, "--damsm", tiny["damsm"], "--out", out, *GAN_TINY), 1, *words)
    failed(run("eval", "--model", tiny["gan"], "--data", data, "--n-samples", 4, "--device", "cpu"), 1, *words)
    assert not out.exists()


def test_dataset_of_an_older_format_version(tiny, tmp_path):
    data = tmp_path / "old"
    shutil.copytree(tiny["data"], data)
    meta = json.loads((data / "dataset.json").read_text())
    meta["format_version"] = 0
    (data / "dataset.json").write_text(json.dumps(meta))
    out = tmp_path / "run"
    words = ["dataset format version 0", "reads versions 1, 2", "prepare it again"]
    failed(run("train", "damsm", "--data", data, "--out", out, *DAMSM_TINY), 1, *words)
    failed(run("train", "attngan", "--data", data, "--damsm", tiny["damsm"], "--out", out, *GAN_TINY), 1, *words)
    failed(run("eval", "--model", tiny["gan"], "--data", data, "--device", "cpu"), 1, *words)
    assert not out.exists()


# -- models against data ----------------------------------------------------------------------------
def test_damsm_with_another_vocabulary(tiny, tmp_path):
    from t2icli.models.damsm import DAMSMConfig, build_damsm
    from t2icli.models.export import save_damsm

    other = tmp_path / "other"
    other.mkdir()
    cfg = DAMSMConfig(vocab_size=3, image_size=32, small_width=4, hidden=4, embedding_dim=4)
    m = build_damsm(cfg)
    save_damsm(str(other), m.text_encoder, m.image_encoder, cfg, ["<end>", "a", "b"])
    out = tmp_path / "run"
    failed(run("train", "attngan", "--data", tiny["data"], "--damsm", other, "--out", out, *GAN_TINY), 1,
           "different vocabulary", "(3 words)", str(other), tiny["data"])
    assert not out.exists()
    failed(run("eval", "--model", tiny["gan"], "--data", tiny["data"], "--damsm", other, "--n-samples", 4,
               "--device", "cpu"), 1, "vocabulary")


def test_resume_damsm_on_data_with_another_vocabulary(tiny, tmp_path):
    from t2icli.data.toybirds import prepare_toybirds

    other = str(tmp_path / "other")
    prepare_toybirds(other, size=32, n_train=24, n_test=8, captions_per_image=2, workers=1, seed=5)
    out = tmp_path / "run"
    assert run("train", "damsm", "--data", tiny["data"], "--out", out, "--steps", 3, *DAMSM_TINY).exit_code == 0
    before = snapshot_files(out / "checkpoints")
    failed(run("train", "damsm", "--data", other, "--out", out, "--steps", 6, "--resume", "latest", *DAMSM_TINY), 1,
           "vocabulary mismatch", "Resume with the same --data")
    assert snapshot_files(out / "checkpoints") == before


def test_stages_larger_than_the_image_size_allows(tiny, tmp_path):
    out = tmp_path / "run"
    args = ["--data", tiny["data"], "--damsm", tiny["damsm"], "--out", out, "--no-progress", "--device", "cpu"]
    failed(run("train", "attngan", *args, "--stages", 3), 1, "--stages 3 on 32 px images", "first stage of 8 px",
           "--stages <= 2")
    failed(run("train", "stackgan2", *args, "--stages", 3), 1, "--stages 3")
    failed(run("train", "attngan", *args, "--stages", 4), 2, "--stages")
    assert not out.exists()


def test_image_size_the_generator_cannot_make(tiny, tmp_path):
    from t2icli.data.toybirds import prepare_toybirds

    data = str(tmp_path / "d48")
    prepare_toybirds(data, size=48, n_train=8, n_test=2, captions_per_image=1, workers=1)
    out = tmp_path / "run"
    failed(run("train", "attngan", "--data", data, "--damsm", tiny["damsm"], "--out", out, *GAN_TINY), 1,
           "image size 48 px", "power of two", data)
    assert not out.exists()


# -- checkpoints ------------------------------------------------------------------------------------
def test_truncated_or_foreign_checkpoints_and_exports(tiny, tmp_path):
    good = torch.load(os.path.join(tiny["gan"], "generator.pt"), weights_only=True)
    trunc = tmp_path / "trunc.pt"
    raw = open(os.path.join(tiny["gan"], "generator.pt"), "rb").read()
    trunc.write_bytes(raw[: len(raw) // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)  # a pickled module: weights_only refuses to run its code
    out = tmp_path / "run"
    base = ["train", "damsm", "--data", tiny["data"], "--out", out, *DAMSM_TINY]
    failed(run(*base, "--resume", trunc), 1, str(trunc), "unreadable checkpoint")
    failed(run(*base, "--resume", foreign), 1, str(foreign), "not a t2i training checkpoint")
    failed(run(*base, "--resume", module), 1, str(module), "unreadable checkpoint")
    assert not out.exists()
    failed(run("sample", "a red bird", "--model", trunc, "--out", tmp_path / "x.png"), 1, "unreadable generator export")
    failed(run("sample", "a red bird", "--model", foreign, "--out", tmp_path / "x.png"), 1,
           "not a t2i generator export")
    failed(run("train", "attngan", "--data", tiny["data"], "--damsm", trunc, "--out", out, *GAN_TINY), 1,
           "unreadable DAMSM export")
    assert not out.exists() and not (tmp_path / "x.png").exists()
    assert good["format"]  # the real export still loads


def _poison_after(n_good):
    """A stand-in for a loss function: the real one for `n_good` calls, then NaN."""
    calls = {"n": 0}

    def wrap(real):
        def poisoned(*args, **kwargs):
            out = real(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] > n_good:
                if isinstance(out, dict):
                    out = dict(out, loss=out["loss"] * float("nan"))
                else:
                    out = out * float("nan")
            return out
        return poisoned

    return wrap


@pytest.mark.long
def test_non_finite_loss_damsm(tiny, tmp_path, monkeypatch):
    import t2icli.losses as losses

    out = tmp_path / "run"
    assert run("train", "damsm", "--data", tiny["data"], "--out", out, "--steps", 6, *DAMSM_TINY).exit_code == 0
    before = snapshot_files(out)
    assert [s for s, _ in list_checkpoints(out)] == [3, 6]  # 24 images / batch 8: a checkpoint per epoch
    monkeypatch.setattr(losses, "damsm_loss", _poison_after(1)(losses.damsm_loss))
    failed(run("train", "damsm", "--data", tiny["data"], "--out", out, "--steps", 12, "--resume", "latest",
               *DAMSM_TINY), 1, "non-finite loss at step 8", "the last checkpoint", "is intact", "--lr")
    after = snapshot_files(out)
    for name in ("checkpoints/ckpt-00000003.pt", "checkpoints/ckpt-00000006.pt", "damsm.pt", "config.json"):
        assert after[name] == before[name], name
    assert sorted(after) == sorted(before)


@pytest.mark.long
def test_non_finite_loss_attngan(tiny, tmp_path, monkeypatch):
    import t2icli.losses as losses

    out = tmp_path / "run"
    args = ["train", "attngan", "--data", tiny["data"], "--damsm", tiny["damsm"], "--out", out, *GAN_TINY,
            "--checkpoint-every", 2]
    assert run(*args, "--steps", 4).exit_code == 0
    before = snapshot_files(out / "checkpoints")
    monkeypatch.setattr(losses, "kl_loss", _poison_after(1)(losses.kl_loss))
    failed(run(*args, "--steps", 8, "--resume", "latest"), 1, "non-finite loss at step 6", "is intact")
    assert snapshot_files(out / "checkpoints") == before
    assert load_checkpoint(str(out / "checkpoints" / "ckpt-00000004.pt"))["step"] == 4


class _FullDisk:
    """A file whose writes fail with ENOSPC after `room` bytes (what a full disk does)."""

    def __init__(self, f, room=100):
        self.f, self.room = f, room

    def write(self, data):
        n = min(len(data), self.room)
        self.f.write(bytes(data[:n]))
        self.room -= n
        if n < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False


def _disk_full_for(monkeypatch, name):
    """Make atomic writes of files named `name` fail as on a full disk."""
    from t2icli import fileio

    real = fileio._open_temp

    def fake(tmp):
        f = real(tmp)
        return _FullDisk(f) if os.path.basename(tmp).startswith(name + ".tmp") else f

    monkeypatch.setattr(fileio, "_open_temp", fake)


def test_disk_full_while_writing_a_checkpoint(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _disk_full_for(monkeypatch, "ckpt-00000006.pt")
    failed(run("train", "damsm", "--data", tiny["data"], "--out", out, "--steps", 6, *DAMSM_TINY), 1,
           "could not write checkpoint", "ckpt-00000006.pt", "No space left on device", "previous checkpoints are "
           "intact", "ckpt-00000003.pt", "--resume latest")
    assert sorted(os.listdir(out / "checkpoints")) == ["ckpt-00000003.pt"]  # no partial file, no temp file
    assert load_checkpoint(str(out / "checkpoints" / "ckpt-00000003.pt"))["step"] == 3
    assert not (out / "damsm.pt").exists()
    monkeypatch.undo()
    res = run("train", "damsm", "--data", tiny["data"], "--out", out, "--steps", 6, "--resume", "latest", *DAMSM_TINY)
    assert res.exit_code == 0, res.output  # space freed: the run continues from step 3


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_disk_full_while_writing_an_export(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _disk_full_for(monkeypatch, "damsm.pt")
    failed(run("train", "damsm", "--data", tiny["data"], "--out", out, "--steps", 3, *DAMSM_TINY), 1,
           os.path.join(str(out), "damsm.pt"), "No space left on device", "errno 28")
    assert "damsm.pt" not in os.listdir(out) and not [n for n in os.listdir(out) if ".tmp" in n]
    assert [s for s, _ in list_checkpoints(out)] == [3]


# -- captions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("caption", ["...", "!!!", " ?! , "])
def test_caption_of_only_punctuation(tiny, tmp_path, caption):
    png = tmp_path / "p.png"
    failed(run("sample", caption, "--model", tiny["gan"], "--out", png, "--device", "cpu"), 2, "has no words",
           "CAPTION")
    assert not png.exists()


def test_ten_thousand_word_caption(tiny, tmp_path):
    png = tmp_path / "long.png"
    words = " ".join(["a small red bird with blue wings"] * 1429)[: 10_000 * 8]
    assert len(words.split()) >= 10_000
    t0 = time.perf_counter()
    res = run("sample", words, "--model", tiny["gan"], "--out", png, "--n", 2, "--device", "cpu", "--save-attn")
    seconds = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    assert "the model reads at most 18; using the first 18" in res.output
    assert seconds < 20, seconds
    from PIL import Image

    assert Image.open(png).size[1] < 400  # the label is cut too: not a 10,000-word column of text
    assert len(res.output) < 2000  # the warnings quote the caption shortened


@pytest.mark.parametrize("source", ["cub", "flowers", "folder"])
def test_non_utf8_caption_file(tmp_path, source):
    """Documented decode policy (t2icli/data/images.py read_caption_file): a caption file that is not UTF-8 is read
    as latin-1 and a warning naming the file is printed and kept in the prep summary."""
    from test_prep_real import make_cub, make_flowers, make_folder

    out = tmp_path / "data"
    if source == "cub":
        root, caps = make_cub(tmp_path)
        bad = next((caps / "text_c10").rglob("*.txt"))
        args = ["prep", "cub", "--root", root, "--captions", caps]
    elif source == "flowers":
        root, caps = make_flowers(tmp_path)
        bad = next((caps / "text_c10").rglob("*.txt"))
        args = ["prep", "flowers", "--root", root, "--captions", caps]
    else:
        root, _ = make_folder(tmp_path)
        bad = root / "a.txt"
        args = ["prep", "folder", "--root", root]
    bad.write_bytes("a caf\u00e9 bird with a na\u00efve look\n".encode("latin-1"))
    res = run(*args, "--out", out, "--size", 24, "--workers", 1)
    assert res.exit_code == 0, res.output
    assert str(bad) in res.output and "not UTF-8" in res.output and "latin-1" in res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert any(str(bad) in w for w in summary["warnings"])
    texts = [c for split in ("train", "test") for line in (out / split / "captions.jsonl").read_text().splitlines()
             for c in json.loads(line)["captions"]]
    assert "a caf\u00e9 bird with a na\u00efve look" in texts


# -- numeric flags ----------------------------------------------------------------------------------
def _leaf_commands():
    """(command path, click.Command) of every leaf under prep, train, sample and eval."""
    ctx = click.Context(main)
    found = []

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), path + [name])
        else:
            found.append((path, cmd))

    for name in ("prep", "train", "sample", "eval"):
        walk(main.get_command(ctx, name), [name])
    return found


# Flags whose 0 is nonsense (a count, a size, a rate, a period): it must be rejected.
_ZERO_IS_NONSENSE = ("size", "n-", "steps", "epochs", "every", "dim", "lr", "batch", "splits", "classes", "limit",
                     "minutes", "gamma", "width", "keep", "captions", "samples", "fraction")
# ... except these, whose 0 switches something off (stated in their help).
_ZERO_SWITCHES_OFF = ("--r1-gamma",)


def _numeric_options():
    out = []
    for path, cmd in _leaf_commands():
        for p in cmd.params:
            if isinstance(p, click.Option) and isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)):
                out.append((path, max(p.opts, key=len), p))
    return out


def test_every_numeric_flag_has_a_lower_bound():
    opts = _numeric_options()
    assert len(opts) > 40  # prep x5, train x3+, sample, eval
    unbounded = [f"{' '.join(path)} {flag}" for path, flag, p in opts
                 if not isinstance(p.type, (click.IntRange, click.FloatRange)) or p.type.min is None]
    assert not unbounded, f"numeric flags without a lower bound: {unbounded}"


def test_negative_and_zero_numeric_flags_are_refused():
    for path, flag, p in _numeric_options():
        where = f"t2i {' '.join(path)} {flag}"
        res = CliRunner().invoke(main, [*path, flag, "-1"])
        assert res.exit_code == 2 and flag in res.output and "-1" in res.output, (where, res.output)
        zero_ok = p.type.min is not None and p.type.min == 0 and not p.type.min_open
        res = CliRunner().invoke(main, [*path, flag, "0"])
        if zero_ok:
            assert flag in _ZERO_SWITCHES_OFF or not any(w in flag for w in _ZERO_IS_NONSENSE), \
                f"{where}: 0 is accepted but means nothing"
        else:
            assert res.exit_code == 2 and flag in res.output, (where, res.output)


def test_nothing_half_written_by_a_refused_prep(tmp_path):
    """A prep that fails half-way (a caption file missing) leaves neither --out nor a temporary folder."""
    from test_prep_real import make_folder

    root, _ = make_folder(tmp_path)
    os.remove(root / "cats" / "i.txt")
    out = tmp_path / "data"
    failed(run("prep", "folder", "--root", root, "--out", out, "--size", 24, "--workers", 1), 1, "i.txt",
           "caption file missing")
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if ".tmp" in n]


def test_stale_temp_folder_of_a_killed_prep_is_cleaned(tmp_path):
    """A prep killed mid-write leaves `.NAME.tmp-<pid>`; the next prep of NAME removes it (its process is gone)."""
    from t2icli.data.toybirds import prepare_toybirds

    stale = tmp_path / ".tb.tmp-999999999"
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "images.raw").write_bytes(b"\0" * 10)
    prepare_toybirds(str(tmp_path / "tb"), size=16, n_train=4, n_test=2, captions_per_image=1, workers=1)
    assert not stale.exists() and (tmp_path / "tb" / "dataset.json").is_file()
    assert np.load(tmp_path / "tb" / "train" / "images.npy").shape == (4, 16, 16, 3)
