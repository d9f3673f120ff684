"""DAMSM: encoders, Inception-v3 naming, loss, R-precision, export round trip, trainer resume/errors, CLI."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from t2icli.data.format import DatasetWriter
from t2icli.losses import (damsm_loss, damsm_scores, damsm_word_attention, inside_captions, same_class_mask,
                           sentence_scores)
from t2icli.metrics.rprecision import retrieval_rprecision, rprecision_from_features
from t2icli.models.damsm import DAMSMConfig, build_damsm
from t2icli.models.export import ExportError, load_damsm, save_damsm
from t2icli.models.image_encoder import SmallImageEncoder
from t2icli.models.inception import Inception3, InceptionWeightsError, load_inception_weights
from t2icli.models.text_encoder import TextEncoder
from t2icli.ops import reference
from t2icli.training import run as runlib
from t2icli.training import train
from t2icli.training.run import RunError
from t2icli.errors import ConfigError

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 40)}


def write_birds(out, n_train=32, n_test=24, size=16, seed=0, extra_word=None):
    """A tiny learnable dataset: a coloured square (class = square colour x background colour)."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    with DatasetWriter(out, source="unit", image_size=size, word_limit=7) as w:
        for split, n in (("train", n_train), ("test", n_test)):
            s = w.split(split)
            for i in range(n):
                a, b = (int(v) for v in rng.integers(len(names), size=2))
                img = np.empty((size, size, 3), np.uint8)
                img[:] = np.array(COLOURS[names[b]]) // 2 + 60
                y, x = rng.integers(0, size // 2, size=2)
                img[y : y + size // 2, x : x + size // 2] = COLOURS[names[a]]
                caps = [f"a {names[a]} bird on {names[b]}", f"this bird is {names[a]} and small"]
                if extra_word:
                    caps.append(f"a {extra_word} bird")
                s.add(img, caps, class_id=a * len(names) + b, filename=f"{split}/{i}")
        return w.finish()


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "birds"
    write_birds(path)
    return str(path)


TINY = dict(batch_size=8, small_width=8, progress=False, n_attention=2, rprecision_runs=2)


# -- models ---------------------------------------------------------------------------------------
def test_text_encoder_shapes_and_padding():
    torch.manual_seed(0)
    enc = TextEncoder(vocab_size=30).eval()
    tokens = torch.tensor([[3, 4, 5, 0, 0, 0], [7, 8, 9, 10, 11, 12]])
    e, e_bar = enc(tokens, torch.tensor([3, 6]))
    assert e.shape == (2, 256, 6) and e_bar.shape == (2, 256)
    assert torch.all(e[0, :, 3:] == 0)  # padding positions carry no feature
    # The same caption with less padding gives the same features.
    e2, e_bar2 = enc(tokens[:1, :4], torch.tensor([3]))
    torch.testing.assert_close(e_bar2[0], e_bar[0])
    torch.testing.assert_close(e2[0, :, :3], e[0, :, :3])
    # Sentence feature = final forward state | final backward state.
    assert torch.allclose(e_bar[1, :128], e[1, :128, 5]) and torch.allclose(e_bar[1, 128:], e[1, 128:, 0])


def test_small_image_encoder_shapes():
    enc = SmallImageEncoder(out_dim=256, image_size=64, grid=8, width=8)
    f, f_bar = enc(torch.randn(3, 3, 64, 64))
    assert f.shape == (3, 256, 8, 8) and f_bar.shape == (3, 256)
    f, _ = enc(torch.randn(2, 3, 32, 32))  # resized to its size first
    assert f.shape == (2, 256, 8, 8)
    avg = SmallImageEncoder(out_dim=64, image_size=32, grid=8, width=8, pool="avg")
    assert avg(torch.randn(2, 3, 32, 32))[1].shape == (2, 64)


def test_inception_names_roundtrip_and_wrong_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = Inception3().eval()
    sd = net.state_dict()
    for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_4a_3x3.bn.running_var", "Mixed_5b.branch_pool.conv.weight",
                "Mixed_6e.branch7x7dbl_5.bn.num_batches_tracked", "Mixed_7c.branch3x3dbl_3b.conv.weight",
                "AuxLogits.conv1.conv.weight", "AuxLogits.fc.weight", "fc.bias"):
        assert key in sd
    assert sd["Mixed_6e.branch7x7_2.conv.weight"].shape == (192, 192, 1, 7)
    assert sd["AuxLogits.conv1.conv.weight"].shape == (768, 128, 5, 5) and sd["fc.weight"].shape == (1000, 2048)
    path = tmp_path / "inception.pth"
    torch.save(sd, path)
    other = load_inception_weights(Inception3().eval(), str(path))
    x = torch.rand(1, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        a, b = net.features(x), other.features(x)
    assert a["mixed_6e"].shape == (1, 768, 17, 17) and a["pool"].shape == (1, 2048) and a["logits"].shape == (1, 1000)
    for k in a:
        assert torch.equal(a[k], b[k])
    bad = dict(sd)
    bad["Mixed_6e.extra.weight"] = bad.pop("Mixed_6e.branch1x1.conv.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(InceptionWeightsError, match=r"missing keys \(1\): Mixed_6e.branch1x1.conv.weight.*"
                                                    r"unexpected keys \(1\): Mixed_6e.extra.weight"):
        load_inception_weights(other, str(tmp_path / "bad.pth"))
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "resnet.pth")
    with pytest.raises(InceptionWeightsError, match="missing keys"):
        load_inception_weights(other, str(tmp_path / "resnet.pth"))


@pytest.mark.long
def test_inception_image_encoder_is_frozen_with_trainable_heads():
    from t2icli.models.image_encoder import InceptionImageEncoder

    enc = InceptionImageEncoder(out_dim=256).train()
    assert not enc.backbone.training  # frozen BatchNorm statistics
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {"emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias"}
    f, f_bar = enc(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert f.shape == (1, 256, 17, 17) and f_bar.shape == (1, 256)
    # Frozen weights, but gradients reach the input: AttnGAN's DAMSM term trains G through this encoder.
    x = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)
    f, f_bar = enc(x)
    (f.sum() + f_bar.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.backbone.parameters())


# -- loss -----------------------------------------------------------------------------------------
def test_damsm_loss_matches_definition_and_masks_same_class():
    torch.manual_seed(0)
    M, D, T, N = 6, 16, 5, 9
    img, words = torch.randn(M, D, N), torch.randn(M, D, T)
    lengths = torch.tensor([5, 3, 4, 1, 5, 2])
    f_bar, e_bar = torch.randn(M, D), torch.randn(M, D)
    classes = torch.tensor([0, 1, 0, 2, 3, 1])
    word, sent = damsm_scores(img.reshape(M, D, 3, 3), words, lengths, f_bar, e_bar, 4.0, 5.0)
    loop = reference.damsm_word_scores_loop(img, words, lengths, 4.0, 5.0)
    torch.testing.assert_close(word, loop, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sent, F.cosine_similarity(f_bar[:, None], e_bar[None], dim=2))
    out = damsm_loss(word, sent, classes, gamma3=10.0)
    mask = same_class_mask(classes)
    assert mask.sum() == 4 and not mask.diagonal().any()

    def ce_both(s):
        s = (10.0 * s).masked_fill(mask, float("-inf"))
        rows = -torch.log_softmax(s, 1).diagonal().mean()  # image -> caption
        cols = -torch.log_softmax(s, 0).diagonal().mean()  # caption -> image
        return cols, rows

    w1, w2 = ce_both(word)
    s1, s2 = ce_both(sent)
    for name, want in (("w1", w1), ("w2", w2), ("s1", s1), ("s2", s2), ("loss", w1 + w2 + s1 + s2)):
        torch.testing.assert_close(out[name], want)
    # A masked pair's score does not matter.
    word2 = word.clone()
    word2[0, 2] += 100.0
    torch.testing.assert_close(damsm_loss(word2, sent, classes)["loss"], out["loss"])


def test_word_attention_is_a_distribution_over_regions():
    f, e = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 4)
    alpha = damsm_word_attention(f, e, torch.tensor([4, 2]), gamma1=4.0)
    assert alpha.shape == (2, 4, 3, 3)
    torch.testing.assert_close(alpha[0].sum((1, 2)), torch.ones(4))
    assert torch.all(alpha[1, 2:] == 0)


# -- R-precision ----------------------------------------------------------------------------------
def test_rprecision_from_features():
    torch.manual_seed(0)
    n = 300
    f = torch.randn(n, 32)
    classes = np.arange(n) % 30
    r = rprecision_from_features(f, f.clone(), classes, n_negatives=99, runs=3)
    assert r["mean"] == 1.0 and r["std"] == 0.0 and len(r["runs"]) == 3
    r = rprecision_from_features(f, torch.randn(n, 32), classes, n_negatives=99, runs=5)
    assert r["mean"] < 0.1  # chance is 1/100
    # Captions of the same class are never negatives: identical same-class captions don't hurt.
    e = f.clone()
    for c in range(30):
        e[classes == c] = f[classes == c][0]
    assert rprecision_from_features(e, e, classes, n_negatives=99, runs=2)["mean"] == 1.0
    with pytest.raises(ValueError, match="other classes"):
        rprecision_from_features(f[:50], f[:50], classes[:50], n_negatives=99)


def test_retrieval_rprecision_with_encoders():
    torch.manual_seed(0)
    model = build_damsm(DAMSMConfig(vocab_size=20, image_size=16, small_width=8)).eval()
    images = np.random.default_rng(0).integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
    tokens, lengths = torch.randint(1, 20, (12, 5)), torch.full((12,), 5)
    r = retrieval_rprecision(model, images, (tokens, lengths), n_negatives=5, runs=2, class_ids=np.arange(12) % 4)
    assert 0.0 <= r["mean"] <= 1.0 and r["n_negatives"] == 5 and r["n"] == 12


# -- export ---------------------------------------------------------------------------------------
def test_save_load_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    cfg = DAMSMConfig(vocab_size=25, image_size=16, small_width=8)
    model = build_damsm(cfg)
    model.train()
    model.encode_images(torch.randn(4, 3, 16, 16))  # move BatchNorm running statistics off their init
    model.eval()
    vocab = ["<end>"] + [f"w{i}" for i in range(24)]
    path = save_damsm(str(tmp_path), model.text_encoder, model.image_encoder, cfg, vocab)
    assert os.path.basename(path) == "damsm.pt"
    blob = torch.load(path, weights_only=True)  # no pickled code
    assert blob["format"] == "t2i-damsm"
    text, image, cfg2, vocab2 = load_damsm(str(tmp_path), "cpu")
    assert cfg2 == cfg and vocab2 == vocab and not text.training
    x, tok, lens = torch.randn(3, 3, 16, 16), torch.randint(1, 25, (3, 7)), torch.tensor([7, 2, 4])
    with torch.no_grad():
        for a, b in zip(model.encode_images(x) + model.encode_text(tok, lens), image(x) + text(tok, lens)):
            assert torch.equal(a, b)
    with pytest.raises(ExportError, match="no DAMSM export"):
        load_damsm(str(tmp_path / "nowhere"))


# -- run folder -----------------------------------------------------------------------------------
def test_run_checkpoints_keep_last_and_skip_corrupt(tmp_path):
    out = str(tmp_path / "run")
    run = runlib.open_run(out, {"a": 1}, keep=2)
    for step in (1, 2, 3):
        run.save_checkpoint({"step": step, "w": torch.full((2,), float(step))}, step)
    assert [s for s, _ in runlib.list_checkpoints(out)] == [2, 3]
    with open(os.path.join(out, "checkpoints", "ckpt-00000009.pt"), "wb") as f:
        f.write(b"truncated")
    assert runlib.find_latest_checkpoint(out).endswith("ckpt-00000003.pt")
    run.append_stats({"x": 1})
    assert run.read_stats() == [{"x": 1}]
    assert json.load(open(os.path.join(out, "config.json"))) == {"a": 1}
    with pytest.raises(RunError, match="already holds a run"):
        runlib.open_run(out, {"a": 1})
    reopened = runlib.open_run(out, {"a": 2}, resume="latest")
    assert reopened.resume_from.endswith("ckpt-00000003.pt")
    assert json.load(open(os.path.join(out, "config.json"))) == {"a": 1}  # the original stays
    with pytest.raises(RunError, match="no checkpoint"):
        runlib.open_run(str(tmp_path / "fresh"), {}, resume="latest")


# -- trainer --------------------------------------------------------------------------------------
def _export_state(run_dir):
    blob = torch.load(os.path.join(run_dir, "damsm.pt"), weights_only=True)
    state = {"t." + k: v for k, v in blob["text_encoder"].items()}
    state.update({"i." + k: v for k, v in blob["image_encoder"].items()})
    return state


@pytest.mark.long
def test_resume_equals_uninterrupted(birds, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    train("damsm", data=birds, out=a, steps=7, **TINY)  # 4 steps per epoch: crosses an epoch boundary
    train("damsm", data=birds, out=b, steps=3, **TINY)  # stops mid-epoch
    res = train("damsm", data=birds, out=b, steps=7, resume="latest", **TINY)
    assert res["step"] == 7
    sa, sb = _export_state(a), _export_state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    stats = [json.loads(line) for line in open(os.path.join(b, "stats.jsonl"))]
    assert stats[-1]["final"] and stats[-1]["step"] == 7 and "w1" in stats[-1]["test"]
    assert any(name.startswith("attn") and name.endswith(".png") for name in os.listdir(b))


@pytest.mark.long
def test_reset_adam_at_epoch_starts_and_exact_resume_across_it(birds, tmp_path):
    """--reset-adam (AttnGAN pretrain_DAMSM.py:267-270: a new Adam at every epoch) clears the optimiser's moments
    when an epoch starts at its first batch: runs stopped mid-epoch (step 3) and at an epoch's end (step 4), then
    resumed, end with the weights of an uninterrupted run, which differ from a run that keeps its moments."""
    kw = dict(TINY, reset_adam=True)  # 4 steps per epoch
    runs = {name: str(tmp_path / name) for name in ("a", "mid", "end", "keep")}
    train("damsm", data=birds, out=runs["a"], steps=7, **kw)
    for name, stop in (("mid", 3), ("end", 4)):
        train("damsm", data=birds, out=runs[name], steps=stop, **kw)
        train("damsm", data=birds, out=runs[name], steps=7, resume="latest", **kw)
    train("damsm", data=birds, out=runs["keep"], steps=7, **TINY)
    a = _export_state(runs["a"])
    for name in ("mid", "end"):
        other = _export_state(runs[name])
        for k in a:
            assert torch.equal(a[k], other[k]), (name, k)
    keep = _export_state(runs["keep"])
    assert any(not torch.equal(a[k], keep[k]) for k in a)
    steps = {name: runlib.load_checkpoint(runlib.find_latest_checkpoint(runs[name]))["optimizer"]["state"][0]["step"]
             for name in ("a", "keep")}
    assert (float(steps["a"]), float(steps["keep"])) == (3.0, 7.0)  # epoch 2's steps 5-7 on fresh moments


def test_inception_encoder_is_built_for_299_crops_with_batch_statistics(birds, tmp_path):
    """--image-encoder inception_v3 reads 299 px crops of the image scaled to 355 (pretrain_DAMSM.py:235-240), not
    the stored size upsampled by the encoder; --backbone-batch-stats lets the frozen backbone follow train(), as
    pretrain_DAMSM.py:51 (cnn_model.train()). The training run itself: the slow test below."""
    from t2icli.training.damsm import DAMSMTrainer
    from t2icli.training.distributed import Env
    from t2icli.training.config import DAMSMTrainConfig

    torch.manual_seed(0)
    weights = tmp_path / "inception.pth"
    torch.save(Inception3().state_dict(), weights)
    for flag in (False, True):
        cfg = DAMSMTrainConfig(data=birds, out=str(tmp_path / "r"), image_encoder="inception_v3",
                               inception_weights=str(weights), backbone_batch_stats=flag).validate()
        trainer = DAMSMTrainer(cfg, Env())
        assert trainer.model_config.image_size == 299 and trainer.train_ds.resolutions == (299,)
        assert trainer.train_ds.load == 355 and trainer.train_ds[0]["images"][0].shape == (3, 299, 299)
        trainer.build(None)
        assert trainer.model.image_encoder.backbone.training == flag  # BatchNorm on batch statistics (or not)
    with pytest.raises(ConfigError, match="--backbone-batch-stats is only used with --image-encoder inception_v3"):
        train("damsm", data=birds, out=str(tmp_path / "small"), backbone_batch_stats=True, **TINY)


@pytest.mark.slow
def test_inception_backbone_statistics_drift_only_with_batch_stats(birds, tmp_path):
    """One training step with --backbone-batch-stats moves the frozen backbone's running statistics toward the data
    (what the GAN later normalises with); without it they stay those of the weights loaded. About 2 minutes on CPU."""
    torch.manual_seed(0)
    weights = tmp_path / "inception.pth"
    torch.save(Inception3().state_dict(), weights)
    kw = dict(TINY, image_encoder="inception_v3", inception_weights=str(weights), steps=1, batch_size=4,
              n_attention=0, rprecision_runs=1)
    key = "backbone.Conv2d_2a_3x3.bn.running_mean"
    initial = torch.load(weights, weights_only=True)["Conv2d_2a_3x3.bn.running_mean"]
    for flag in (False, True):
        run = str(tmp_path / f"bs{flag}")
        train("damsm", data=birds, out=run, backbone_batch_stats=flag, **kw)
        blob = torch.load(os.path.join(run, "damsm.pt"), weights_only=True)
        assert blob["config"]["image_size"] == 299
        assert torch.equal(blob["image_encoder"][key], initial) != flag, flag


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_checkpoint_every_writes_mid_epoch_checkpoints(birds, tmp_path):
    out = str(tmp_path / "c")
    train("damsm", data=birds, out=out, steps=7, checkpoint_every=3, keep=10, **TINY)  # 4 steps per epoch
    # step 3 (mid-epoch), 4 (epoch end), 6 (mid-epoch), 7 (the stop); 8 would be the next epoch's end
    assert [s for s, _ in runlib.list_checkpoints(out)] == [3, 4, 6, 7]
    with pytest.raises(ConfigError, match="--checkpoint-every"):
        train("damsm", data=birds, out=str(tmp_path / "d"), steps=2, checkpoint_every=0, **TINY)


def test_nan_loss_stops_with_step_and_saves_nothing(birds, tmp_path, monkeypatch):
    import t2icli.losses as losses_mod

    real = losses_mod.damsm_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(losses_mod, "damsm_loss", poisoned)
    out = str(tmp_path / "nan")
    with pytest.raises(RunError, match=r"non-finite loss at step 3"):
        train("damsm", data=birds, out=out, steps=5, **TINY)
    assert runlib.list_checkpoints(out) == [] and not os.path.exists(os.path.join(out, "damsm.pt"))


def test_resume_with_other_vocabulary_is_an_error(birds, tmp_path):
    other = tmp_path / "other"
    write_birds(other, extra_word="purple")
    out = str(tmp_path / "run")
    train("damsm", data=birds, out=out, steps=2, **TINY)
    with pytest.raises(RunError, match="vocabulary mismatch"):
        train("damsm", data=str(other), out=out, steps=4, resume="latest", **TINY)


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_train_damsm_end_to_end(birds, tmp_path):
    from t2icli.cli import main

    out = str(tmp_path / "run")
    r = CliRunner().invoke(main, ["train", "damsm", "--data", birds, "--out", out, "--steps", "3", "--batch-size", "8",
                                  "--no-progress", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "R-precision" in r.stdout
    for name in ("config.json", "log.txt", "stats.jsonl", "damsm.pt"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert json.load(open(os.path.join(out, "config.json")))["batch_size"] == 8
    r = CliRunner().invoke(main, ["train", "damsm", "--data", birds, "--out", out, "--steps", "3", "--batch-size", "8",
                                  "--no-progress"])
    assert r.exit_code == 1 and "--resume latest" in r.output


def test_cli_bad_inputs(birds, tmp_path):
    from t2icli.cli import main

    def run(*args):
        return CliRunner().invoke(main, ["train", "damsm", *args, "--no-progress"])

    r = run("--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"))
    assert r.exit_code == 2 and "--data" in r.output
    (tmp_path / "empty").mkdir()
    r = run("--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r"))
    assert r.exit_code == 1 and "not a prepared dataset" in r.output
    r = run("--data", birds, "--out", str(tmp_path / "r"), "--image-encoder", "inception_v3")
    assert r.exit_code == 2 and "--inception-weights" in r.output
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "resnet.pth")
    r = run("--data", birds, "--out", str(tmp_path / "r2"), "--image-encoder", "inception_v3",
            "--inception-weights", str(tmp_path / "resnet.pth"), "--steps", "1", "--batch-size", "8")
    assert r.exit_code == 1 and "missing keys" in r.output and "unexpected keys (1): conv1.weight" in r.output
    r = run("--data", birds, "--out", str(tmp_path / "r3"), "--resume", str(tmp_path / "nope.pt"))
    assert r.exit_code == 2 and "--resume" in r.output


@pytest.mark.parametrize("mask", [True, False])
def test_class_mask_flag_reaches_the_loss(birds, tmp_path, monkeypatch, mask):
    """--class-mask (default, AttnGAN's words_loss / sent_loss: miscc/losses.py masks same-class pairs) hands the
    batch's class ids to the loss; --no-class-mask hands none, so every other image is a negative."""
    import t2icli.losses as L

    seen, real = [], L.damsm_loss

    def spy(word, sent, class_ids=None, gamma3=10.0, **kw):
        seen.append(None if class_ids is None else torch.as_tensor(class_ids).clone())
        return real(word, sent, class_ids, gamma3, **kw)

    monkeypatch.setattr(L, "damsm_loss", spy)
    res = train("damsm", data=birds, out=str(tmp_path / "r"), steps=2, class_mask=mask, **TINY)
    trained = seen[:2]  # the two training steps come before the final evaluation
    assert all((ids is not None) == mask for ids in trained)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["class_mask"] is mask
    assert res["step"] == 2


def test_word_shuffle_permutes_the_training_captions_and_resumes_exactly(birds, tmp_path, monkeypatch):
    """--word-shuffle K: the captions the loss sees are the batch's own words, locally permuted (drawn from the
    step's generator: a resumed run permutes alike); 0 (the default) leaves them in order."""
    import t2icli.training.damsm as D

    seen, real = [], D.train_loss

    def spy(text_encoder, image_encoder, images, tokens, lengths, *args, **kw):
        seen.append((tokens.clone(), torch.as_tensor(lengths).clone()))
        return real(text_encoder, image_encoder, images, tokens, lengths, *args, **kw)

    monkeypatch.setattr(D, "train_loss", spy)
    train("damsm", data=birds, out=str(tmp_path / "plain"), steps=3, **TINY)
    plain, seen[:] = list(seen), []
    a = str(tmp_path / "a")
    train("damsm", data=birds, out=a, steps=3, word_shuffle=3, **TINY)
    for (p, n), (q, m) in zip(plain, seen):
        assert torch.equal(n, m) and torch.equal(p.sort(dim=1).values, q.sort(dim=1).values)
    assert any(not torch.equal(p, q) for (p, _), (q, _) in zip(plain, seen))
    assert json.loads(open(os.path.join(a, "config.json")).read())["word_shuffle"] == 3
    b = str(tmp_path / "b")
    train("damsm", data=birds, out=b, steps=1, word_shuffle=3, **TINY)
    train("damsm", data=birds, out=b, steps=3, word_shuffle=3, resume="latest", **TINY)
    sa, sb = _export_state(a), _export_state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_region_word_predictor_never_reads_the_word_it_names():
    """RegionWordPredictor (--word-prediction): word t's logits depend on its neighbours and the regions, never on
    word t itself nor on the padding past a caption's length."""
    from t2icli.models.damsm import RegionWordPredictor

    torch.manual_seed(0)
    head = RegionWordPredictor(vocab_size=20, dim=8, context=2)
    f = torch.randn(3, 8, 4, 4)  # [B, D, H, W]
    tokens = torch.randint(1, 20, (3, 7))
    lengths = torch.tensor([7, 5, 3])
    base = head(f, tokens, inside_captions(lengths, 7))  # [B, T, V]
    assert base.shape == (3, 7, 20)
    for t in range(7):
        other = tokens.clone()
        other[:, t] = (other[:, t] % 19) + 1  # another word at t
        out = head(f, other, inside_captions(lengths, 7))
        assert torch.equal(out[:, t], base[:, t])  # t's own logits do not see it
        near = [u for u in (t - 2, t - 1, t + 1, t + 2) if 0 <= u < 3]  # inside every caption
        if near:
            assert not torch.allclose(out[:, near], base[:, near])  # its neighbours' do
    padded = tokens.clone()
    padded[1, 5:] = 1
    padded[2, 3:] = 2
    assert torch.equal(head(f, padded, inside_captions(lengths, 7)), base)
    assert not torch.allclose(head(f + torch.randn_like(f), tokens, inside_captions(lengths, 7)),
                              base)  # the regions are read


def test_word_prediction_loss_learns_a_part_colour_only_from_regions_that_hold_it():
    """The masked-word task names a part's colour from the region that holds it: captions "p0 c0 p1 c1 p2 c2 p3 c3"
    (part word, its colour) over four regions, region k holding part k's colour. The head alone, trained on such
    regions, names the colour words (> 0.9); on regions of another image (the colours independent) it cannot
    (near chance 0.25). The loss ignores positions past each caption's length."""
    from t2icli.losses import word_prediction_loss
    from t2icli.models.damsm import RegionWordPredictor

    def batch(g, n=64):
        colours = torch.randint(0, 4, (n, 4), generator=g)  # [n, part]
        f = F.one_hot(colours, 4).float().transpose(1, 2)  # [n, 4 colours = D, 4 regions]
        f = torch.cat([f, F.one_hot(torch.arange(4), 4).float().T[None].expand(n, 4, 4)], 1)  # + where: [n, 8, 4]
        tokens = torch.stack([torch.arange(4).expand(n, 4), colours + 4], 2).reshape(n, 8)  # p_k = k, colour c = 4 + c
        return f, tokens, torch.full((n,), 8)

    def colour_accuracy(shuffle):
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        head = RegionWordPredictor(vocab_size=8, dim=8, context=1, embedding=16, hidden=32)
        opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        for _ in range(300):
            f, tokens, lengths = batch(g)
            if shuffle:
                f = f[torch.randperm(len(f), generator=g)]
            inside = inside_captions(lengths, 8)
            loss, _ = word_prediction_loss(head(f, tokens, inside), tokens, inside)
            opt.zero_grad()
            loss.backward()
            opt.step()
        f, tokens, lengths = batch(g, 512)
        if shuffle:
            f = f[torch.randperm(len(f), generator=g)]
        pred = head(f, tokens, inside_captions(lengths, 8)).argmax(2)
        return (pred[:, 1::2] == tokens[:, 1::2]).float().mean().item()

    assert colour_accuracy(shuffle=False) > 0.9
    assert colour_accuracy(shuffle=True) < 0.4
    logits = torch.randn(2, 5, 6)
    tokens, lengths = torch.randint(0, 6, (2, 5)), torch.tensor([5, 2])
    loss, acc = word_prediction_loss(logits, tokens, inside_captions(lengths, 5))
    rest = logits.clone()
    rest[1, 2:] = torch.randn(3, 6)
    assert torch.equal(word_prediction_loss(rest, tokens, inside_captions(lengths, 5))[0], loss)
    want = F.cross_entropy(torch.cat([logits[0], logits[1, :2]]), torch.cat([tokens[0], tokens[1, :2]]))
    assert torch.allclose(loss, want) and 0 <= acc.item() <= 1


def test_word_prediction_trains_the_head_logs_it_resumes_exactly_and_stays_out_of_the_export(birds, tmp_path):
    """--word-prediction W: the head's loss joins the step's loss and the logged means (wp, wp_acc); the head is in
    the checkpoints (a run stopped and resumed ends with the weights of an uninterrupted one) but not in damsm.pt;
    W = 0 (the default) trains as before, and the term moves the image encoder."""
    a, b, plain = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "plain")
    train("damsm", data=birds, out=a, steps=3, word_prediction=1.0, **TINY)
    train("damsm", data=birds, out=b, steps=1, word_prediction=1.0, **TINY)
    train("damsm", data=birds, out=b, steps=3, word_prediction=1.0, resume="latest", **TINY)
    train("damsm", data=birds, out=plain, steps=3, **TINY)
    sa, sb, sp = _export_state(a), _export_state(b), _export_state(plain)
    assert sa.keys() == sp.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sp[k]) for k in sa if k.startswith("i."))
    assert json.loads(open(os.path.join(a, "config.json")).read())["word_prediction"] == 1.0
    train_means = [json.loads(line)["train"] for line in open(os.path.join(a, "stats.jsonl"))]
    assert any(m and m["wp"] > 0 and 0 <= m["wp_acc"] <= 1 for m in train_means)
    blob = torch.load(os.path.join(a, "damsm.pt"), weights_only=True)
    assert not any("predictor" in k for k in blob)


def test_cli_small_grid_and_dropout_reach_the_exported_encoders(birds, tmp_path):
    """--small-grid N: the small encoder's local features (the regions words attend to) are N x N; --dropout P: the
    text encoder's word dropout. Both are saved in the export, so `train attngan` / `eval` rebuild the same model."""
    from t2icli.cli import main
    from t2icli.models.export import load_damsm

    out = str(tmp_path / "run")
    r = CliRunner().invoke(main, ["train", "damsm", "--data", birds, "--out", out, "--steps", "1", "--batch-size", "8",
                                  "--small-width", "8", "--small-grid", "4", "--dropout", "0.1", "--no-progress"])
    assert r.exit_code == 0, r.output
    text_encoder, image_encoder, config, _ = load_damsm(out)
    assert (config.small_grid, config.dropout, config.image_size) == (4, 0.1, 16)  # the birds are 16 px
    assert text_encoder.drop.p == 0.1
    f, f_bar = image_encoder(torch.zeros(2, 3, 16, 16))
    assert f.shape == (2, config.dim, 4, 4) and f_bar.shape == (2, config.dim)  # the default grid gives 8 x 8
    for bad, words in ((("--small-grid", "12"), "--small-grid 12: must be a power of two"),
                       (("--dropout", "1"), "--dropout")):
        r = CliRunner().invoke(main, ["train", "damsm", "--data", birds, "--out", str(tmp_path / "bad"), *bad,
                                      "--steps", "1", "--no-progress"])
        assert r.exit_code != 0 and words in r.output, r.output
        assert not os.path.exists(tmp_path / "bad" / "damsm.pt")
