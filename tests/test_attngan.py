"""Tests of the multi-stage GANs: stage shapes, attention maps, losses, both trainers, exact resume, export, CLI errors."""

import json
import os

import pytest
import torch
from click.testing import CliRunner

from t2icli import losses
from t2icli.models.attngan import (GeneratorConfig, Generator, build_discriminators, check_stages, stage_sizes,
                                   word_mask)
from t2icli.models.config import ModelConfigError
from t2icli.models.export import load_generator

TINY = dict(gf_dim=4, df_dim=4, z_dim=8, cond_dim=8, batch_size=4, snapshot_every=1000, n_prompts=2,
            snapshot_rprecision=0, final_rprecision=20, rprecision_runs=1, progress=False)


def _text(B=3, T=7, D=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 20, (B, T), generator=g)
    tokens[0, 3:] = 0  # a short caption: 4 padded positions
    tokens[1, 5:] = 0
    return tokens, torch.randn(B, D, T, generator=g), torch.randn(B, D, generator=g)


# -- models ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stages,size", [(1, 16), (2, 32), (3, 64), (2, 64)])
@pytest.mark.parametrize("attention", [True, False])
def test_stage_shapes(stages, size, attention):
    cfg = GeneratorConfig(image_size=size, stages=stages, gf_dim=4, df_dim=2, z_dim=8, cond_dim=6, text_dim=32,
                          attention=attention)
    G, Ds = Generator(cfg), build_discriminators(cfg)
    tokens, e, e_bar = _text()
    out = G(torch.randn(3, 8), e_bar, e, word_mask(tokens), return_attn=True)
    sizes = stage_sizes(size, stages)
    assert sizes[-1] == size and all(b == 2 * a for a, b in zip(sizes, sizes[1:]))
    assert [tuple(x.shape) for x in out["images"]] == [(3, 3, s, s) for s in sizes]
    assert all(x.abs().max() <= 1 for x in out["images"])
    assert out["mu"].shape == out["logvar"].shape == out["c"].shape == (3, 6)
    if attention:
        assert [tuple(b.shape) for b in out["attn"]] == [(3, 7, s * s) for s in sizes[:-1]]
    else:
        assert out["attn"] == []
    assert len(Ds) == stages
    for D, x in zip(Ds, out["images"]):
        code = D(x)
        assert code.shape == (3, 16, 4, 4)
        assert D.logits(code).shape == D.logits(code, e_bar).shape == (3,)


def test_attention_sums_to_one_over_unmasked_words():
    cfg = GeneratorConfig(image_size=64, stages=3, gf_dim=4, z_dim=8, cond_dim=6, text_dim=32)
    tokens, e, e_bar = _text()
    out = Generator(cfg).eval()(torch.randn(3, 8), e_bar, e, word_mask(tokens), return_attn=True)
    mask = word_mask(tokens)  # [B, T]
    for beta in out["attn"]:  # [B, T, N]
        assert torch.allclose(beta.sum(1), torch.ones(3, beta.shape[2]), atol=1e-5)
        assert beta.masked_select(mask[:, :, None].expand_as(beta)).abs().max() == 0
        assert (beta >= 0).all()


def test_check_stages_rules():
    check_stages(64, 3)
    check_stages(256, 3)
    check_stages(16, 1)
    with pytest.raises(ModelConfigError, match="first stage of 8 px"):
        check_stages(32, 3)
    with pytest.raises(ModelConfigError, match="power of two"):
        check_stages(76, 1)
    with pytest.raises(ModelConfigError, match="choose 1, 2 or 3"):
        check_stages(256, 4)


# -- losses --------------------------------------------------------------------------------------
def test_losses():
    mu, logvar = torch.zeros(4, 5), torch.zeros(4, 5)
    assert losses.kl_loss(mu, logvar).item() == pytest.approx(0.0)
    assert losses.kl_loss(mu + 1, logvar).item() == pytest.approx(0.5)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    big = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")  # same pixel statistics
    assert losses.color_consistency_loss(x, big).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.color_consistency_loss(x, big + 0.5).item() == pytest.approx(0.25, rel=1e-4)  # lambda1 * 0.5^2
    cfg = GeneratorConfig(image_size=16, stages=1, gf_dim=4, df_dim=2, text_dim=32)
    D = build_discriminators(cfg)[0]
    _, _, e_bar = _text(B=4)
    d = losses.discriminator_loss(D, x[:1].expand(4, -1, -1, -1).repeat_interleave(2, 2).repeat_interleave(2, 3),
                                      torch.zeros(4, 3, 16, 16), e_bar)
    assert set(d) == {"loss", "real", "fake", "wrong", "u_real", "u_fake"} and torch.isfinite(d["loss"])
    assert torch.equal(losses.mismatched(e_bar)[0], e_bar[1])


def test_shift_flip():
    x = torch.rand(3, 3, 16, 16, requires_grad=True)
    still = torch.tensor([[0.5, 0.5, 0.9]]).expand(3, 3)  # no shift, no mirror
    assert torch.allclose(losses.shift_flip(x, still), x, atol=1e-5)
    mirror = torch.tensor([[0.5, 0.5, 0.1]]).expand(3, 3)
    assert torch.allclose(losses.shift_flip(x, mirror), x.flip(3), atol=1e-5)
    # u = 0.5 + 1/16 at max_shift 0.5: (2u - 1) * 2 * 0.5 = 1/8 grid unit; the grid spans 2 units = 16 px: 1 px.
    one_px = torch.tensor([[0.5 + 1 / 16, 0.5, 0.9]]).expand(3, 3)
    y = losses.shift_flip(x, one_px, max_shift=0.5)
    assert torch.allclose(y[..., :-1], x[..., 1:], atol=1e-5)  # content moved one pixel left, border reflected
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_r1_penalty():
    torch.manual_seed(0)
    cfg = GeneratorConfig(image_size=16, stages=1, gf_dim=4, df_dim=2, text_dim=32)
    D = build_discriminators(cfg)[0]
    _, _, e_bar = _text(B=4)
    real, fake = torch.rand(4, 3, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1
    torch.manual_seed(1)
    plain = losses.discriminator_loss(D, real, fake, e_bar)
    torch.manual_seed(1)
    pen = losses.discriminator_loss(D, real, fake, e_bar, r1_gamma=4.0)
    assert "r1" not in plain and pen["r1"] > 0
    assert pen["loss"].item() == pytest.approx(plain["loss"].item() + 2.0 * pen["r1"].item(), rel=1e-5)
    # The penalty is E_x ||d(cond + uncond logit)/dx||^2, computed here by hand for image 0.
    x0 = real.clone().requires_grad_(True)
    D.train()
    code = D(x0)
    (g,) = torch.autograd.grad(D.logits(code, e_bar).sum() + D.logits(code).sum(), x0)
    assert pen["r1"].item() == pytest.approx(g.pow(2).flatten(1).sum(1).mean().item(), rel=1e-4)
    # It reaches D's weights (double backward through BN) and leaves the real images alone.
    D.zero_grad()
    losses.discriminator_loss(D, real, fake, e_bar, r1_gamma=4.0)["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.encode.parameters())
    assert real.grad is None


# -- trainers --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_gan_setup):
    """A 32 px toybirds dataset (40 train / 20 test) and a randomly initialised DAMSM export on its vocabulary."""
    return tiny_gan_setup(tmp_path_factory.mktemp("gan"), n_train=40, n_test=20)


@pytest.mark.parametrize("kind", ["attngan", "stackgan2"])
def test_one_training_step(tiny, kind, tmp_path):
    from t2icli.training import train

    out = tmp_path / kind
    res = train(kind, data=tiny["data"], damsm=tiny["damsm"], out=out, stages=2, steps=1, **TINY)
    assert res["step"] == 1 and os.path.isfile(res["export"])
    assert os.path.isfile(out / "fakes00000000.png") and os.path.isfile(out / "fakes00000001.png")
    assert (os.path.isfile(out / "attn00000001.png")) == (kind == "attngan")
    assert res["rprecision"] is not None and 0 <= res["rprecision"]["mean"] <= 1
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["final"] and stats[-1]["gen_rprecision"]["n"] == 20
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == kind and cfg["color_consistency"] == (kind == "stackgan2")  # AttnGAN has none
    assert (stats[-1]["last"]["cc"] > 0) == (kind == "stackgan2")
    # The export alone rebuilds G + text encoder; it reproduces the run's generator.
    G, text_encoder, gcfg, vocab, style = load_generator(str(out))
    assert gcfg["stages"] == 2 and gcfg["sizes"] == [16, 32] and gcfg["kind"] == kind and len(vocab) > 10
    assert G.config.attention == (kind == "attngan")
    blob = torch.load(out / "generator.pt", weights_only=True)
    assert set(blob["generator"]) == set(G.state_dict())


def test_attngan_color_consistency_is_a_tree_option(tiny, tmp_path):
    """--color-consistency on AttnGAN: StackGAN++'s term joins G's loss (stats' "cc"), and the flag is recorded."""
    from t2icli.training import train

    train("attngan", data=tiny["data"], damsm=tiny["damsm"], out=tmp_path / "cc", stages=2, steps=1,
          color_consistency=True, **dict(TINY, final_rprecision=0))
    stats = [json.loads(line) for line in (tmp_path / "cc" / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["last"]["cc"] > 0
    assert json.loads((tmp_path / "cc" / "config.json").read_text())["color_consistency"]


@pytest.mark.long
def test_resume_equals_uninterrupted(tiny, tmp_path):
    from t2icli.training import train
    from t2icli.training.run import find_latest_checkpoint, load_checkpoint

    kw = dict(data=tiny["data"], damsm=tiny["damsm"], stages=2, **dict(TINY, final_rprecision=0))
    train("attngan", out=tmp_path / "a", steps=3, **kw)
    train("attngan", out=tmp_path / "b", steps=1, **kw)
    train("attngan", out=tmp_path / "b", steps=3, resume="latest", **kw)
    a = load_checkpoint(find_latest_checkpoint(str(tmp_path / "a")))
    b = load_checkpoint(find_latest_checkpoint(str(tmp_path / "b")))
    assert a["step"] == b["step"] == 3
    for key in ("G", "G_ema", "Ds"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name} differs after resume"


def test_non_finite_loss_stops_and_names_step(tiny, tmp_path, monkeypatch):
    from t2icli.training import attngan as trainer, train
    from t2icli.training.run import RunError, list_checkpoints

    out = str(tmp_path / "nan")
    kw = dict(data=tiny["data"], damsm=tiny["damsm"], out=out, stages=1, **TINY)
    train("stackgan2", steps=1, **kw)
    monkeypatch.setattr(trainer.losses, "kl_loss", lambda mu, logvar: torch.tensor(float("nan")))
    with pytest.raises(RunError, match="non-finite loss at step 2"):
        train("stackgan2", steps=3, resume="latest", **kw)
    assert [s for s, _ in list_checkpoints(out)] == [1]


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_bad_inputs(tiny, tmp_path):
    from t2icli.cli import main

    # Through the group, as a user runs them: user errors become messages in LazyGroup.invoke.
    def attngan_(args):
        return ["train", "attngan", *args]

    def stackgan2_(args):
        return ["train", "stackgan2", *args]

    runner = CliRunner()
    base = ["--data", tiny["data"], "--damsm", tiny["damsm"], "--out", str(tmp_path / "r"), "--no-progress"]
    r = runner.invoke(main, attngan_(base + ["--stages", "3"]))
    assert r.exit_code == 1 and "--stages 3" in r.output and "first stage of 8 px" in r.output
    r = runner.invoke(main, attngan_(base + ["--batch-size", "0"]))
    assert r.exit_code == 2 and "--batch-size" in r.output
    r = runner.invoke(main, stackgan2_(base + ["--steps", "2", "--epochs", "2"]))
    assert r.exit_code == 2 and "not both" in r.output
    r = runner.invoke(main, attngan_(["--data", tiny["data"], "--damsm", tiny["data"], "--out", str(tmp_path / "r"),
                                      "--stages", "2"]))
    assert r.exit_code == 1 and "no DAMSM export" in r.output
    # A DAMSM trained on another vocabulary: the error names both paths.
    from t2icli.models.damsm import DAMSMConfig, build_damsm
    from t2icli.models.export import save_damsm

    other = tmp_path / "other"
    other.mkdir()
    cfg = DAMSMConfig(vocab_size=3, image_size=32, small_width=4, hidden=4, embedding_dim=4)
    m = build_damsm(cfg)
    save_damsm(str(other), m.text_encoder, m.image_encoder, cfg, ["<end>", "a", "b"])
    r = runner.invoke(main, attngan_(["--data", tiny["data"], "--damsm", str(other), "--out", str(tmp_path / "r"),
                                      "--stages", "2"]))
    assert r.exit_code == 1 and str(other) in r.output and tiny["data"] in r.output
    assert not (tmp_path / "r").exists()  # nothing written before the checks
    assert "char-CNN-RNN" in runner.invoke(main, stackgan2_(["--help"])).output


def test_cli_trains_and_prints_rprecision(tiny, tmp_path):
    from t2icli.cli import main

    out = tmp_path / "cli"
    r = CliRunner().invoke(main, ["train", "stackgan2"] + ["--data", tiny["data"], "--damsm", tiny["damsm"], "--out", str(out),
                                       "--stages", "1", "--steps", "1", "--batch-size", "4", "--gf-dim", "4",
                                       "--df-dim", "2", "--z-dim", "4", "--cond-dim", "4", "--r1-gamma", "1", "--r1-every", "2",
                                       "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "R-precision (generated images" in r.output
    assert (out / "generator.pt").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["r1_gamma"] == 1.0 and cfg["r1_every"] == 2


def test_lazy_r1_weights_every_kth_step():
    """--r1-every K: the penalty on steps 0, K, 2K, ... only, weighted K times (StyleGAN2's lazy regularisation)."""
    from types import SimpleNamespace

    from t2icli.training.attngan import TreeTrainer

    def weight(step, every, gamma=2.0):
        me = SimpleNamespace(cfg=SimpleNamespace(r1_gamma=gamma, r1_every=every), loop=SimpleNamespace(step=step))
        return TreeTrainer.r1_gamma(me)

    assert [weight(s, 4) for s in range(9)] == [8.0, 0, 0, 0, 8.0, 0, 0, 0, 8.0]
    assert [weight(s, 1) for s in range(3)] == [2.0, 2.0, 2.0] and weight(5, 3, gamma=0.0) == 0.0


def test_lr_decay_steps_lowers_both_learning_rates_linearly(tiny, tmp_path, monkeypatch):
    """--lr-decay-steps N: constant, then over the last N steps (total - step) / N of --lr-g and --lr-d."""
    from t2icli.training import attngan as trainer, train
    from t2icli.training.attngan import lr_decay_factor

    assert [lr_decay_factor(s, 10, 4) for s in range(10)] == [1.0] * 7 + [0.75, 0.5, 0.25]
    assert lr_decay_factor(0, 5, 100) == 0.05 and lr_decay_factor(3, 5, 1) == 1.0
    seen, real = [], trainer.train_step

    def spy(G_fwd, D_fwd, G, Ds, opt_G, opt_D, *args, **kwargs):
        seen.append((opt_G.param_groups[0]["lr"], opt_D.param_groups[0]["lr"]))
        return real(G_fwd, D_fwd, G, Ds, opt_G, opt_D, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", spy)
    train("attngan", data=tiny["data"], damsm=tiny["damsm"], out=tmp_path / "d", stages=2, steps=4, lr_decay_steps=3,
          lr_g=1e-3, lr_d=3e-3, **dict(TINY, final_rprecision=0))
    assert [g for g, _ in seen] == pytest.approx([1e-3, 1e-3, 2e-3 / 3, 1e-3 / 3])
    assert [d for _, d in seen] == pytest.approx([3e-3, 3e-3, 2e-3, 1e-3])
    assert json.loads((tmp_path / "d" / "config.json").read_text())["lr_decay_steps"] == 3


@pytest.mark.parametrize("mask", [True, False])
def test_class_mask_flag_reaches_the_damsm_term(tiny, tmp_path, monkeypatch, mask):
    """attngan --no-class-mask: the generator's DAMSM term gets no class ids (every other image is a negative);
    by default it masks same-class pairs as AttnGAN's trainer.py does (words_loss(..., class_ids, ...))."""
    import t2icli.losses as L
    from t2icli.training import train

    seen, real = [], L.generator_damsm_loss

    def spy(*args, **kw):
        seen.append(args[5] if len(args) > 5 else kw.get("class_ids"))
        return real(*args, **kw)

    monkeypatch.setattr(L, "generator_damsm_loss", spy)
    train("attngan", data=tiny["data"], damsm=tiny["damsm"], out=tmp_path / "r", stages=2, steps=2, class_mask=mask,
          **TINY)
    assert len(seen) == 2 and all((ids is not None) == mask for ids in seen)


def test_class_pairs_flag_reaches_the_loader(tiny, tmp_path, monkeypatch):
    """attngan --class-pairs: the training batches are same-class pairs (so the roll of AttnGAN's wrong captions
    pairs row 2m with a caption of its own class); an odd --batch-size is refused by name."""
    import t2icli.data as data_pkg
    from t2icli.errors import ConfigError
    from t2icli.training import train
    from t2icli.training.config import AttnGANTrainConfig

    seen, real = [], data_pkg.make_loader

    def spy(ds, *args, **kw):
        loader = real(ds, *args, **kw)
        seen.append(loader.batch_sampler.classes is ds.class_ids)  # the sampler orders by the training classes
        return loader

    monkeypatch.setattr(data_pkg, "make_loader", spy)
    train("attngan", data=tiny["data"], damsm=tiny["damsm"], out=tmp_path / "r", stages=2, steps=2, class_pairs=True,
          **dict(TINY, batch_size=4))
    assert seen and all(seen)  # (test_data.py checks the pairs themselves)
    with pytest.raises(ConfigError, match="--batch-size 5: --class-pairs"):
        AttnGANTrainConfig(data=tiny["data"], damsm=tiny["damsm"], out=str(tmp_path / "o"), batch_size=5,
                           class_pairs=True).validate()


def test_standing_stats_average_training_batch_statistics(tiny, tmp_path):
    """--standing-stats N: the export's BatchNorm statistics are the plain average of the training-mode batch
    statistics over N training captions (BigGAN's standing statistics), computed from the EMA generator of the
    last checkpoint; its weights are the EMA's; the snapshot/export copy is the same at every call of a step; and
    the EMA itself (and so the checkpoint) keeps the trained G's statistics."""
    from t2icli.data import PreparedDataset
    from t2icli.training import train
    from t2icli.training.gan import standing_stats
    from t2icli.training.run import list_checkpoints

    out = tmp_path / "s"
    train("attngan", data=tiny["data"], damsm=tiny["damsm"], out=out, stages=2, steps=3, standing_stats=10,
          **dict(TINY, final_rprecision=0))
    ckpt = torch.load(list_checkpoints(str(out))[-1][1], map_location="cpu", weights_only=False)
    G, text_encoder, _, _, _ = load_generator(str(out / "generator.pt"))
    ema = Generator(G.config)
    ema.load_state_dict(ckpt["G_ema"])
    exported = G.state_dict()
    stats = [k for k in exported if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(exported[k], ckpt["G_ema"][k]) for k in exported if k not in stats
                         and not k.endswith("num_batches_tracked"))
    assert all(not torch.allclose(exported[k], ckpt["G_ema"][k]) for k in stats)  # not the trained G's
    ds = PreparedDataset(tiny["data"], "train", resolutions=(32, 64), train=True, seed=0)
    again = standing_stats(ema, text_encoder, ds, 10, 4, 0).state_dict()  # TINY batch 4, seed 0
    assert all(torch.allclose(exported[k], again[k], atol=1e-6) for k in stats)
    assert all(torch.equal(ema.state_dict()[k], ckpt["G_ema"][k]) for k in stats)  # the input is left alone

    # by hand, for the first BatchNorm layer: batches of 4, 4 and 2 captions, each normalised by its own statistics
    bn_name, bn = next((n, m) for n, m in ema.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    probe = Generator(G.config)
    probe.load_state_dict(ckpt["G_ema"])
    probe.train()
    hook = dict(probe.named_modules())[bn_name].register_forward_hook(
        lambda m, inp, out_: seen.append((inp[0].mean((0, 2, 3)), inp[0].var((0, 2, 3), unbiased=True))))
    import numpy as np
    from t2icli.models.attngan import word_mask

    rng, gen = np.random.default_rng(15485863), torch.Generator().manual_seed(15485863)
    with torch.no_grad():
        for b in (4, 4, 2):
            toks, lens = [], []
            for i in rng.integers(len(ds), size=b).tolist():
                c = int(rng.integers(ds.n_captions(i)))
                t, n = ds.cut(ds.caption_ids(ds.image_captions[i] + c), rng)
                toks.append(torch.from_numpy(t))
                lens.append(n)
            tok = torch.stack(toks)
            e, e_bar = text_encoder(tok, torch.tensor(lens))
            z, eps = torch.randn(b, G.config.z_dim, generator=gen), torch.randn(b, G.config.cond_dim, generator=gen)
            probe(z, e_bar, e, word_mask(tok), eps=eps)
    hook.remove()
    assert len(seen) == 3
    assert torch.allclose(exported[f"{bn_name}.running_mean"], torch.stack([m for m, _ in seen]).mean(0), atol=1e-5)
    assert torch.allclose(exported[f"{bn_name}.running_var"], torch.stack([v for _, v in seen]).mean(0), atol=1e-4)
    assert bn is not None


def test_local_batchnorm_copies_synchronised_layers_as_plain_ones():
    """distributed.local_batchnorm: a copy whose GlooSyncBatchNorm / SyncBatchNorm layers are plain BatchNorm
    (same parameters, statistics and state-dict keys), so one rank can run it in training mode alone."""
    from t2icli.training.distributed import GlooSyncBatchNorm, local_batchnorm

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), GlooSyncBatchNorm(4), torch.nn.Sequential(GlooSyncBatchNorm(4)))
    with torch.no_grad():
        net[1].running_mean.fill_(0.5)
        net[1].weight.fill_(2.0)
    copy_ = local_batchnorm(net)
    assert not any(isinstance(m, (GlooSyncBatchNorm, torch.nn.SyncBatchNorm)) for m in copy_.modules())
    assert list(copy_.state_dict()) == list(net.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(copy_.state_dict().values(), net.state_dict().values()))
    copy_.train()(torch.randn(2, 3, 5, 5))  # updates the copy's statistics only
    assert torch.equal(net[1].running_mean, torch.full((4,), 0.5))
    assert not torch.equal(copy_[1].running_mean, net[1].running_mean)


def test_standing_stats_on_stackgan2_and_with_text_embeddings(tiny, tmp_path):
    """--standing-stats runs for StackGAN++ (conditional and --unconditional: G takes the same call) and is refused
    with --text-embeddings (the captions it encodes need the DAMSM text encoder)."""
    from t2icli.errors import ConfigError
    from t2icli.training import train
    from t2icli.training.config import StackGAN2TrainConfig

    for extra in ({}, {"unconditional": True}):
        out = tmp_path / f"s{len(extra)}"
        train("stackgan2", data=tiny["data"], damsm=tiny["damsm"], out=out, stages=2, steps=2, standing_stats=6,
              **dict(TINY, final_rprecision=0), **extra)
        assert load_generator(str(out / "generator.pt"))[0] is not None
    with pytest.raises(ConfigError, match="--standing-stats .* --text-embeddings"):
        StackGAN2TrainConfig(data="d", damsm="r", out="o", standing_stats=8, text_embeddings="e.pickle").check()
