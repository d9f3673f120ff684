"""Tests of the baselines: GAN-INT-CLS (+ style encoder, char-CNN-RNN embeddings) and StackGAN v1 — training steps,
exact resume, exports that `t2i sample` and `t2i eval` drive, and bad input."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from t2icli.cli import main

TINY = dict(gf_dim=4, df_dim=4, z_dim=8, batch_size=4, snapshot_every=1000, n_prompts=2, snapshot_rprecision=0,
            final_rprecision=20, rprecision_runs=1, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_gan_setup):
    """A 32 px toybirds dataset (40 train / 20 test) and a randomly initialised DAMSM export on its vocabulary."""
    return tiny_gan_setup(tmp_path_factory.mktemp("baselines"), n_train=40, n_test=20)


@pytest.fixture(scope="module")
def models(tiny):
    """One trained export of each kind: gancls (plain), gancls with style encoder, stackgan (both stages)."""
    from t2icli.training import train

    root = tiny["root"]
    out = {"gancls": train("gancls", data=tiny["data"], damsm=tiny["damsm"], out=str(root / "gancls"), steps=2, **TINY),
           "style": train("gancls", data=tiny["data"], damsm=tiny["damsm"], out=str(root / "style"), steps=2,
                                 train_style_encoder=True, **TINY),
           "stackgan": train("stackgan", data=tiny["data"], damsm=tiny["damsm"], out=str(root / "stackgan"), stage1_steps=2,
                                      stage2_steps=2, cond_dim=8, res_blocks=1, **TINY)}
    return {k: v["run_dir"] for k, v in out.items()} | {"results": out}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _stats(run_dir):
    with open(os.path.join(run_dir, "stats.jsonl")) as f:
        return [json.loads(line) for line in f]


# -- GAN-INT-CLS -------------------------------------------------------------------------------------
def test_gancls_shapes_and_discriminator_terms():
    from t2icli.models.gancls import CondDiscriminator, GanClsConfig, GanClsGenerator, StyleEncoder

    for size in (32, 64):
        G = GanClsGenerator(GanClsConfig(image_size=size, gf_dim=4, df_dim=4, z_dim=8, text_dim=20, proj_dim=6))
        x = G(torch.randn(3, 8), torch.randn(3, 20))["images"]
        assert len(x) == 1 and x[0].shape == (3, 3, size, size) and x[0].abs().max() <= 1
        D = CondDiscriminator(size, 4, 20, proj_dim=6)
        code = D(x[0])
        assert code.shape[2:] == (4, 4) and D.logits(code, torch.randn(3, 20)).shape == (3,)
        assert StyleEncoder(size, 4, 8)(x[0]).shape == (3, 8)


def test_gancls_one_step_and_export(tiny, models):
    from t2icli.metrics.generate import load_model

    res = models["results"]["gancls"]
    assert res["step"] == 2 and os.path.isfile(res["export"]) and 0 <= res["rprecision"]["mean"] <= 1
    out = models["gancls"]
    assert os.path.isfile(os.path.join(out, "fakes00000000.png")) and os.path.isfile(os.path.join(out, "fakes00000002.png"))
    train_rec = [r for r in _stats(out) if "train" in r]
    assert train_rec and {"d", "g", "g_adv", "g_int", "style"} <= set(train_rec[-1]["train"])
    assert train_rec[-1]["train"]["g_int"] > 0  # manifold interpolation is on by default
    cfg = json.loads(open(os.path.join(out, "config.json")).read())
    assert cfg["kind"] == "gancls" and cfg["interp_beta"] == 0.5 and cfg["text_embeddings"] is None
    assert json.loads(open(os.path.join(out, "run.json")).read())["text_source"] == "damsm"
    blob = torch.load(os.path.join(out, "generator.pt"), weights_only=True)
    assert blob["kind"] == "gancls" and blob["style_encoder"] is None
    model = load_model(out)
    assert model.kind == "gancls" and model.sizes == [32] and model.style_encoder is None and model.cond_dim == 0


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_gancls_step_updates_style_encoder_on_its_squared_loss():
    from t2icli.models.gancls import CondDiscriminator, GanClsConfig, GanClsGenerator, StyleEncoder
    from t2icli.training.gancls import train_step

    torch.manual_seed(0)
    G = GanClsGenerator(GanClsConfig(image_size=16, gf_dim=4, df_dim=4, z_dim=8, text_dim=10, proj_dim=6))
    D, S = CondDiscriminator(16, 4, 10, proj_dim=6), StyleEncoder(16, 4, 8)
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (G, D, S)]
    reals, t, z = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 10), torch.randn(4, 8)
    before = {name: [p.detach().clone() for p in m.parameters()] for name, m in (("G", G), ("D", D), ("S", S))}
    train_step(G, D, S, *opts, reals, t, z, torch.randn(4, 8))
    for name, m in (("G", G), ("D", D), ("S", S)):  # every network takes its optimiser step
        changed = [not torch.equal(a, b) for a, b in zip(before[name], m.parameters())]
        assert sum(changed) >= len(changed) - 2, f"{name}: only {sum(changed)}/{len(changed)} tensors updated"
    losses_seen = []
    for _ in range(30):  # S fits z of the same fakes' G: its loss must fall
        vals = train_step(G, D, S, *opts, reals, t, z, torch.randn(4, 8), interp=False)
        losses_seen.append(vals["style"])
        assert vals["g_int"] == 0.0
    assert losses_seen[-1] < 0.5 * losses_seen[0]
    s_before = [p.clone() for p in S.parameters()]
    vals = train_step(G, D, None, opts[0], opts[1], None, reals, t, z, torch.randn(4, 8), interp_beta=0.5)
    assert vals["style"] == 0.0 and vals["g_int"] > 0
    assert all(torch.equal(a, b) for a, b in zip(s_before, S.parameters()))


def test_style_encoder_export_and_sample_style_from(tiny, models, tmp_path):
    from t2icli.metrics.generate import load_model

    out = models["style"]
    blob = torch.load(os.path.join(out, "generator.pt"), weights_only=True)
    assert blob["style_encoder"] is not None
    model = load_model(out)
    assert model.style_encoder is not None
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(tmp_path / f"s{k}.png")
    r = run("sample", "a small red bird", "a blue bird", "--model", out, "--out", tmp_path / "sty.png",
            "--style-from", tmp_path / "s0.png", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert r.stdout.split() == [str(tmp_path / "sty-00.png"), str(tmp_path / "sty-01.png")]
    # The generated image follows z = S(IMAGE): two style images, two results for the same caption.
    ids, _ = model.encode("a small red bird")
    from t2icli.sample import read_style_image

    outs = [model.generate(torch.tensor([ids]), torch.tensor([len(ids)]), [0],
                           z=model.style_z(read_style_image(tmp_path / f"s{k}.png", 32)))["images"][-1]
            for k in range(2)]
    assert outs[0].shape == (1, 3, 32, 32) and not torch.allclose(outs[0], outs[1])
    # Refusals: a model without S, --n with --style-from, an unreadable image.
    r = run("sample", "a red bird", "--model", models["gancls"], "--out", tmp_path / "x.png", "--style-from",
            tmp_path / "s0.png")
    assert r.exit_code == 1 and "--style-from" in r.output and "--train-style-encoder" in r.output
    r = run("sample", "a red bird", "--model", out, "--out", tmp_path / "x.png", "--style-from", tmp_path / "s0.png",
            "--n", 3)
    assert r.exit_code == 2 and "--n" in r.output
    (tmp_path / "bad.png").write_bytes(b"not an image")
    r = run("sample", "a red bird", "--model", out, "--out", tmp_path / "x.png", "--style-from", tmp_path / "bad.png")
    assert r.exit_code == 1 and "--style-from" in r.output and "readable" in r.output


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_gancls_resume_equals_uninterrupted(tiny, tmp_path):
    from t2icli.training import train
    from t2icli.training.run import find_latest_checkpoint, load_checkpoint

    kw = dict(TINY, final_rprecision=0, train_style_encoder=True)
    train("gancls", data=tiny["data"], damsm=tiny["damsm"], out=str(tmp_path / "a"), steps=3, **kw)
    train("gancls", data=tiny["data"], damsm=tiny["damsm"], out=str(tmp_path / "b"), steps=1, **kw)
    train("gancls", data=tiny["data"], damsm=tiny["damsm"], out=str(tmp_path / "b"), steps=3, resume="latest", **kw)
    a = load_checkpoint(find_latest_checkpoint(str(tmp_path / "a")))
    b = load_checkpoint(find_latest_checkpoint(str(tmp_path / "b")))
    assert a["step"] == b["step"] == 3
    for key in ("G", "G_ema", "D", "S"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name} differs after resume"


# -- char-CNN-RNN embeddings ------------------------------------------------------------------------------
def _write_embeddings(path, n, as_list=False, protocol=2, seed=0):
    emb = np.random.default_rng(seed).normal(size=(n, 10, 1024)).astype(np.float32)  # StackGAN's [n, 10, 1024]
    with open(path, "wb") as f:
        pickle.dump([e for e in emb] if as_list else emb, f, protocol=protocol)
    return emb


def test_char_cnn_rnn_loader_safe_and_matched_by_name(tiny, tmp_path):
    from t2icli.data import DataError
    from t2icli.data.embeddings import embeddings_for_split, load_char_cnn_rnn

    emb = _write_embeddings(tmp_path / "e.pickle", 40, as_list=True, protocol=pickle.HIGHEST_PROTOCOL)
    assert np.array_equal(load_char_cnn_rnn(tmp_path / "e.pickle"), emb)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "evil.pickle").write_bytes(pickle.dumps([Evil()], protocol=2))
    with pytest.raises(DataError, match="refused to load global"):
        load_char_cnn_rnn(tmp_path / "evil.pickle")
    with open(tmp_path / "obj.pickle", "wb") as f:
        pickle.dump(np.array([["a"]], dtype=object), f, protocol=2)
    with pytest.raises(DataError):
        load_char_cnn_rnn(tmp_path / "obj.pickle")
    # With filenames.pickle beside the file, rows are matched by name whatever their order.
    files = [json.loads(line)["file"] for line in open(os.path.join(tiny["data"], "train", "captions.jsonl"))]
    order = np.random.default_rng(1).permutation(40)
    folder = tmp_path / "split"
    folder.mkdir()
    with open(folder / "char-CNN-RNN-embeddings.pickle", "wb") as f:
        pickle.dump(emb[order], f, protocol=2)
    with open(folder / "filenames.pickle", "wb") as f:
        pickle.dump([files[i] for i in order], f, protocol=2)
    assert np.array_equal(embeddings_for_split(folder / "char-CNN-RNN-embeddings.pickle", tiny["data"]), emb)


def test_gancls_and_stackgan_on_text_embeddings(tiny, tmp_path):

    _write_embeddings(tmp_path / "emb.pickle", 40)
    _write_embeddings(tmp_path / "short.pickle", 39)
    base = ["--data", tiny["data"], "--damsm", tiny["damsm"], "--batch-size", 4, "--gf-dim", 4, "--df-dim", 4,
            "--z-dim", 8, "--no-progress", "--snapshot-every", 1000]
    r = CliRunner().invoke(main, ["train", "gancls"] + [str(a) for a in base + ["--out", tmp_path / "g", "--steps", 1,
                                                             "--text-embeddings", tmp_path / "emb.pickle"]])
    assert r.exit_code == 0, r.output
    assert "R-precision: n/a" in r.output
    blob = torch.load(tmp_path / "g" / "generator.pt", weights_only=True)
    assert blob["text_source"] == "char-cnn-rnn" and blob["config"]["text_dim"] == 1024
    r = CliRunner().invoke(main, ["train", "stackgan"] + [str(a) for a in base + ["--out", tmp_path / "s", "--stage1-steps", 1,
                                                               "--stage2-steps", 1, "--cond-dim", 8, "--res-blocks", 1,
                                                               "--text-embeddings", tmp_path / "emb.pickle"]])
    assert r.exit_code == 0, r.output
    # Such a model cannot embed new captions: sample and eval say so.
    r = run("sample", "a red bird", "--model", tmp_path / "g", "--out", tmp_path / "x.png")
    assert r.exit_code == 1 and "--text-embeddings" in r.output
    r = run("eval", "--metric", "rprecision", "--model", tmp_path / "s", "--data", tiny["data"], "--n-samples", 10)
    assert r.exit_code == 1 and "char-cnn-rnn" in r.output
    # A file with another number of images than the split: a clear error naming the flag, before any run folder.
    for cmd in ("gancls", "stackgan"):  # through the group: user errors become messages in LazyGroup.invoke
        r = run("train", cmd, *base, "--out", tmp_path / "bad", "--text-embeddings", tmp_path / "short.pickle")
        assert r.exit_code == 1 and "--text-embeddings" in r.output and "39" in r.output and "40" in r.output
        assert not (tmp_path / "bad").exists()


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_eval_with_test_split_text_embeddings(tiny, models, tmp_path):
    """`t2i eval --text-embeddings` conditions a char-CNN-RNN model on the test split's embeddings (caption k of
    image i -> row (i, k mod E), as in training) and scores the images against the captions with the DAMSM encoders."""
    from t2icli.metrics.generate import generate_from_test_captions, load_model, to_uint8
    from t2icli.training import train

    _write_embeddings(tmp_path / "train.pickle", 40)
    emb = _write_embeddings(tmp_path / "test.pickle", 20, seed=1)
    run_dir = str(tmp_path / "s")
    train("stackgan", data=tiny["data"], damsm=tiny["damsm"], out=run_dir, stage1_steps=1, stage2_steps=1, cond_dim=8, res_blocks=1,
          text_embeddings=str(tmp_path / "train.pickle"), **dict(TINY, final_rprecision=0))
    r = run("eval", "--metric", "rprecision", "--model", run_dir, "--data", tiny["data"], "--n-samples", 30,
            "--text-embeddings", tmp_path / "test.pickle", "--json", "--device", "cpu")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["kind"] == "stackgan" and out["n"] == 30 and 0 <= out["mean"] <= 1 and "real" in out
    assert out["text_embeddings"] == str(tmp_path / "test.pickle")
    model = load_model(run_dir)
    images, caps, ds = generate_from_test_captions(model, tiny["data"], 30, seed=0, batch_size=7,
                                                   text_embeddings=str(tmp_path / "test.pickle"))
    j = 25  # caption row 25 of 40: image 12's second caption -> embedding row (12, 1)
    i, k = int(caps["images"][j]), int(caps["rows"][j] - ds.image_captions[caps["images"][j]])
    assert (i, k) == (12, 1)
    x = model.generate_embedded(torch.from_numpy(emb[i, k])[None], [j], seed=0)["images"][-1]
    assert np.array_equal(to_uint8(x, "truncate")[0], images[j])  # eval truncates as the references
    # A DAMSM-conditioned model refuses the flag; a file of another split's size is named with both counts.
    r = run("eval", "--model", models["stackgan"], "--data", tiny["data"], "--n-samples", 4,
            "--text-embeddings", tmp_path / "test.pickle")
    assert r.exit_code == 1 and "trained on the DAMSM sentence features" in r.output
    r = run("eval", "--model", run_dir, "--data", tiny["data"], "--n-samples", 4,
            "--text-embeddings", tmp_path / "train.pickle")
    assert r.exit_code == 1 and "--text-embeddings" in r.output and "40" in r.output and "20" in r.output


# -- StackGAN -------------------------------------------------------------------------------------------
def test_stackgan_shapes():
    from t2icli.models.stackgan import StackGAN, StackGANConfig, build_discriminators

    cfg = StackGANConfig(image_size=64, gf_dim=4, df_dim=4, z_dim=8, cond_dim=6, text_dim=20, res_blocks=1)
    out = StackGAN(cfg)(torch.randn(3, 8), torch.randn(3, 20))
    assert [tuple(x.shape) for x in out["images"]] == [(3, 3, 16, 16), (3, 3, 64, 64)]
    assert out["mu"].shape == out["mu1"].shape == (3, 6)
    for D, x in zip(build_discriminators(cfg), out["images"]):
        assert D.logits(D(x), out["mu"]).shape == (3,)


def test_stackgan_stage_steps_update_only_their_stage():
    from t2icli.models.stackgan import StackGAN, StackGANConfig, build_discriminators
    from t2icli.training.stackgan import stage_step

    torch.manual_seed(0)
    cfg = StackGANConfig(image_size=32, gf_dim=4, df_dim=4, z_dim=8, cond_dim=6, text_dim=10, res_blocks=1)
    G, Ds = StackGAN(cfg), build_discriminators(cfg)
    opt_G = [torch.optim.Adam(list(G.ca1.parameters()) + list(G.g1.parameters()), lr=1e-2),
             torch.optim.Adam(list(G.ca2.parameters()) + list(G.g2.parameters()), lr=1e-2)]
    opt_D = [torch.optim.Adam(D.parameters(), lr=1e-2) for D in Ds]
    reals = [torch.rand(4, 3, s, s) * 2 - 1 for s in cfg.sizes]
    t, z, eps = torch.randn(4, 10), torch.randn(4, 8), torch.randn(4, 6)

    def snap():
        return {k: v.clone() for k, v in list(G.state_dict().items()) + [(f"D{i}." + k, v) for i, D in enumerate(Ds)
                                                                         for k, v in D.state_dict().items()]}

    for stage in (1, 2):
        if stage == 2:
            G.g1.eval().requires_grad_(False)
            G.ca1.requires_grad_(False)
        before = snap()
        vals = stage_step(stage, G, Ds[stage - 1], opt_G[stage - 1], opt_D[stage - 1], reals[stage - 1], t, z, eps)
        assert all(np.isfinite(v) for v in vals.values())
        after = snap()
        moved = {k.split(".")[0] for k in before if "weight" in k and not torch.equal(before[k], after[k])}
        assert moved == ({"ca1", "g1", "D0"} if stage == 1 else {"ca2", "g2", "D1"}), (stage, moved)


def test_stackgan_trains_both_stages_stage1_frozen(tiny, models):
    from t2icli.metrics.generate import load_model

    res = models["results"]["stackgan"]
    assert res["step"] == 4 and res["stage1_end"] == 2
    stats = _stats(models["stackgan"])
    assert [r["phase"] for r in stats if "phase" in r] == ["I", "I", "II", "II"]
    assert any(r.get("stage1_end") == 2 for r in stats) and stats[-1]["final"] and stats[-1]["stage"] == 2
    model = load_model(models["stackgan"])
    assert model.kind == "stackgan" and model.sizes == [8, 32] and not model.attention
    # Stage II left Stage I alone: the export's Stage-I equals the checkpoint's at the end of stage 1.
    from t2icli.training.run import list_checkpoints, load_checkpoint

    final = load_checkpoint(list_checkpoints(models["stackgan"])[-1][1])
    blob = torch.load(os.path.join(models["stackgan"], "generator.pt"), weights_only=True)
    for name, t in blob["generator"].items():
        if name.startswith(("g1.", "ca1.")):
            assert torch.equal(t, final["G"][name]), name


def test_stackgan_resume_across_stages_equals_uninterrupted(tiny, tmp_path):
    from t2icli.training.run import find_latest_checkpoint, load_checkpoint
    from t2icli.training import train

    kw = dict(TINY, final_rprecision=0, cond_dim=8, res_blocks=1)
    train("stackgan", data=tiny["data"], damsm=tiny["damsm"], out=str(tmp_path / "a"), stage1_steps=2, stage2_steps=2, **kw)
    train("stackgan", data=tiny["data"], damsm=tiny["damsm"], out=str(tmp_path / "b"), stage1_steps=2, stage2_steps=1, **kw)
    train("stackgan", data=tiny["data"], damsm=tiny["damsm"], out=str(tmp_path / "b"), stage1_steps=2, stage2_steps=2, resume="latest", **kw)
    a = load_checkpoint(find_latest_checkpoint(str(tmp_path / "a")))
    b = load_checkpoint(find_latest_checkpoint(str(tmp_path / "b")))
    assert a["step"] == b["step"] == 4 and a["stage1_end"] == b["stage1_end"] == 2
    for key in ("G", "G_ema", "Ds"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name} differs after resume"


# -- sample and eval on every kind -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gancls", "stackgan"])
def test_sample_every_kind(models, kind, tmp_path):
    last, every = tmp_path / "last.png", tmp_path / "all.png"
    r = run("sample", "a small red bird", "--model", models[kind], "--out", last, "--n", 2, "--device", "cpu")
    assert r.exit_code == 0, r.output
    r = run("sample", "a small red bird", "--model", models[kind], "--out", every, "--n", 2, "--stage", "all")
    assert r.exit_code == 0, r.output
    taller = Image.open(every).size[1] > Image.open(last).size[1]
    assert taller == (kind == "stackgan")  # stackgan: one row per stage; gancls has one stage
    r = run("sample", "a red bird", "--model", models[kind], "--out", tmp_path / "a.png", "--save-attn")
    assert r.exit_code == 1 and "no word attention" in r.output
    r = run("sample", "--interpolate", "a red bird", "a blue bird", "--steps", 3, "--model", models[kind],
            "--out", tmp_path / "line.png")
    assert r.exit_code == 0 and os.path.isfile(tmp_path / "line.png")


def test_eval_rprecision_on_gancls(tiny, models):
    r = run("eval", "--metric", "rprecision", "--model", models["gancls"], "--data", tiny["data"], "--n-samples", 40,
            "--json", "--device", "cpu")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["kind"] == "gancls" and out["n"] == 40 and 0 <= out["mean"] <= 1 and "real" in out


# -- CLI errors -------------------------------------------------------------------------------------------
def test_cli_bad_inputs(tiny, tmp_path):
    from t2icli.cli import main

    runner = CliRunner()

    def invoke(cmd, args):  # through the group, as a user runs them: user errors become messages there
        return runner.invoke(main, ["train", cmd, *args])

    base = ["--data", tiny["data"], "--damsm", tiny["damsm"], "--out", str(tmp_path / "r"), "--no-progress"]
    r = invoke("gancls", base + ["--interp-beta", "1.5"])
    assert r.exit_code == 2 and "--interp-beta" in r.output
    r = invoke("gancls", base + ["--batch-size", "0"])
    assert r.exit_code == 2 and "--batch-size" in r.output
    r = invoke("gancls", base + ["--steps", "2", "--epochs", "2"])
    assert r.exit_code == 2 and "not both" in r.output
    r = invoke("stackgan", base + ["--stage2-steps", "0"])
    assert r.exit_code == 2 and "--stage2-steps" in r.output
    r = invoke("stackgan", base + ["--batch-size", "64"])
    assert r.exit_code == 1 and "--batch-size 64" in r.output
    r = invoke("gancls", ["--data", tiny["data"], "--damsm", tiny["data"], "--out", str(tmp_path / "r")])
    assert r.exit_code == 1 and "--damsm" in r.output
    assert not (tmp_path / "r").exists()
    for cmd in ("gancls", "stackgan"):
        assert "Examples" in invoke(cmd, ["--help"]).output


def test_non_finite_loss_stops_and_names_step(tiny, tmp_path, monkeypatch):
    from t2icli.training import stackgan as trainer, train
    from t2icli.training.run import RunError, list_checkpoints

    out = str(tmp_path / "nan")
    kw = dict(TINY, final_rprecision=0, cond_dim=8, res_blocks=1, checkpoint_every=1)
    train("stackgan", data=tiny["data"], damsm=tiny["damsm"], out=out, stage1_steps=1, stage2_steps=1, **kw)
    monkeypatch.setattr(trainer.losses, "kl_loss", lambda mu, logvar: torch.tensor(float("nan")))
    with pytest.raises(RunError, match="non-finite loss at step 3"):
        train("stackgan", data=tiny["data"], damsm=tiny["damsm"], out=out, stage1_steps=1, stage2_steps=3, resume="latest", **kw)
    assert [s for s, _ in list_checkpoints(out)] == [2]  # the last good checkpoint, nothing after it
