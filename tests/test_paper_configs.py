"""The paper configurations on the trainers (issue 15): the cub-paper / coco-paper presets, --dry-run, and the
reference code's losses and options behind their flags (StackGAN++'s D on mu with wrong images and UNCOND_LOSS, its
unconditional mode and detached colour consistency; StackGAN's Stage-II unconditional terms and lr decay;
GAN-INT-CLS's caption means, wrong images, cls weight and fresh G samples). The parameter counts of the presets'
dry runs are checked against the reference's in tests/test_fidelity.py; the DAMSM's new Adam per epoch and its
exact resume in tests/test_damsm.py."""

import copy
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from t2icli import losses
from t2icli.cli import main
from t2icli.errors import ConfigError
from t2icli.training import distributed, train
from t2icli.training.config import CONFIGS, PAPER_PRESETS, PRESETS
from t2icli.training.run import RunError, find_latest_checkpoint, load_checkpoint

NON_FIELDS = {"description", "reference", "stand_in", "unavailable"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_gan_setup):
    return tiny_gan_setup(tmp_path_factory.mktemp("paper"))


def _cli(*args):
    return CliRunner().invoke(main, list(args))


# -- presets -------------------------------------------------------------------------------------------------------
def test_every_preset_sets_fields_and_every_paper_preset_names_its_reference():
    for kind, presets in PRESETS.items():
        assert {"cub-paper", "coco-paper"} <= set(presets), kind
        for name, preset in presets.items():
            unknown = set(preset) - set(CONFIGS[kind].field_names()) - NON_FIELDS
            assert not unknown, (kind, name, unknown)
            if name in PAPER_PRESETS[kind]:
                assert ("reference" in preset) != ("unavailable" in preset), (kind, name)


@pytest.mark.parametrize("kind,preset", [(k, p) for k in PAPER_PRESETS for p in PAPER_PRESETS[k]
                                         if "unavailable" not in PAPER_PRESETS[k][p]])
def test_a_paper_preset_is_the_config_and_its_help_names_the_file(kind, preset):
    r = _cli("train", kind, "--preset", preset, "--dry-run")
    assert r.exit_code == 0, r.output
    config = json.loads(r.stdout)["config"]
    for name, value in PAPER_PRESETS[kind][preset].items():
        if name not in NON_FIELDS:
            assert config[name] == value, (kind, preset, name)
    help_text = " ".join(_cli("train", kind, "--help").output.split())
    assert " ".join(PAPER_PRESETS[kind][preset]["reference"].split()) in help_text


def test_a_preset_without_a_reference_config_is_refused_with_the_reason():
    r = _cli("train", "stackgan2", "--preset", "coco-paper", "--dry-run")
    assert r.exit_code == 2 and "StackGAN-v2 publishes no COCO configuration" in r.output
    with pytest.raises(ConfigError, match="no COCO configuration"):
        CONFIGS["stackgan2"](preset="coco-paper").validate(dry_run=True)


def test_explicit_steps_replace_the_presets_epochs():
    out = json.loads(_cli("train", "attngan", "--preset", "cub-paper", "--steps", "5", "--dry-run").stdout)["config"]
    assert (out["steps"], out["epochs"], out["batch_size"]) == (5, None, 20)
    out = json.loads(_cli("train", "stackgan", "--preset", "coco-paper", "--stage1-steps", "7", "--dry-run").stdout)
    assert (out["config"]["stage1_steps"], out["config"]["stage1_epochs"], out["config"]["stage2_epochs"]) == (7, None,
                                                                                                             100)
    out = json.loads(_cli("train", "damsm", "--preset", "cub-paper", "--no-reset-adam", "--dry-run").stdout)["config"]
    assert out["reset_adam"] is False and out["backbone_batch_stats"] is True  # a flag turns the odd behaviour off


# -- --dry-run ---------------------------------------------------------------------------------------------------
def test_dry_run_needs_the_inputs_a_preset_does_not_stand_in_for(tiny, tmp_path):
    r = _cli("train", "attngan", "--dry-run")
    assert r.exit_code == 2 and "--dry-run needs --data" in r.output and "--preset cub-paper|coco-paper" in r.output
    r = _cli("train", "attngan", "--preset", "toybirds-cpu", "--data", tiny["data"], "--dry-run")
    assert r.exit_code == 2 and "--dry-run needs --damsm" in r.output
    r = _cli("train", "damsm", "--dry-run")
    assert r.exit_code == 2 and "--dry-run needs --data" in r.output
    out = json.loads(_cli("train", "damsm", "--data", tiny["data"], "--dry-run", "--small-width", "4").stdout)
    assert out["inputs"]["from"] == "--data" and out["model"]["image_size"] == 32 and out["model"]["small_width"] == 4


@pytest.mark.parametrize("kind,flags", [
    ("attngan", ["--stages", "2", "--cond-dim", "8", "--r-num", "1"]),
    ("stackgan2", ["--stages", "2", "--cond-dim", "8", "--d-condition", "mu"]),
    ("stackgan", ["--stage1-steps", "1", "--stage2-steps", "1", "--cond-dim", "8", "--res-blocks", "1"]),
    ("gancls", ["--layout", "coco", "--train-style-encoder"]),
])
@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_dry_run_on_data_counts_what_training_builds(tiny, tmp_path, kind, flags):
    """The dry run's counts equal the parameters of the networks a training run saves (the exported G, the
    checkpoint's Ds / D / S), and the dry run writes nothing."""
    from t2icli.models.export import load_generator

    base = ["train", kind, "--data", tiny["data"], "--damsm", tiny["damsm"], "--batch-size", "4", "--gf-dim", "4",
            "--df-dim", "4", "--z-dim", "8", "--no-progress", "--device", "cpu", *flags]
    dry_out = str(tmp_path / "dry")
    r = _cli(*base, "--out", dry_out, "--dry-run")
    assert r.exit_code == 0, r.output
    counts = json.loads(r.stdout)["parameters"]
    assert not os.path.exists(dry_out)
    run = str(tmp_path / "run")
    steps = [] if kind == "stackgan" else ["--steps", "1"]
    r = _cli(*base, *steps, "--out", run, "--snapshot-every", "1000")
    assert r.exit_code == 0, r.output
    G = load_generator(run)[0]
    assert counts["G"] == sum(p.numel() for p in G.parameters())
    ckpt = load_checkpoint(find_latest_checkpoint(run))

    def trained(state):  # parameters of a state dict: what BatchNorm keeps besides them are buffers
        return sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var",
                                                                          "num_batches_tracked")))

    if kind == "gancls":
        assert (counts["D"], counts["S"]) == (trained(ckpt["D"]), trained(ckpt["S"]))
    else:
        D_keys = sorted((k for k in counts if k.startswith("D")), key=lambda k: int(k[1:]))
        per_stage = [trained({k: v for k, v in ckpt["Ds"].items() if k.startswith(f"{i}.")})
                     for i in range(len(D_keys))]
        assert [counts[k] for k in D_keys] == per_stage
    assert counts["text_encoder"] > 0 and counts["image_encoder"] > 0  # the DAMSM run's frozen encoders


# -- the StackGAN-v2 losses on hand-made logits -------------------------------------------------------------------
class _StubD(torch.nn.Module):
    """A 'discriminator' whose image code is the input itself, x [B, 2]: logits(code) = code[:, 0] (unconditional),
    logits(code, c) = code[:, 1] + c[:, 0] (conditional), so every logit is chosen by hand; a list of conditions
    gives a list of logits, as StageDiscriminator.logits."""

    def forward(self, x):
        return x

    def logits(self, code, cond=None):
        if isinstance(cond, (list, tuple)):
            return [self.logits(code, c) for c in cond]
        return code[:, 0] if cond is None else code[:, 1] + cond[:, 0]


def _bce(x, y):
    """Binary cross-entropy of logit x against label y, by hand."""
    p = 1 / (1 + np.exp(-x))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_stackgan2_discriminator_loss_terms_on_hand_made_logits():
    D = _StubD()
    real = torch.tensor([[0.5, 1.0], [-0.3, 2.0]])  # [uncond, cond] logits of the real images (cond 0)
    fake = torch.tensor([[-1.0, -0.5], [0.2, 0.1]])
    wrong = torch.tensor([[0.7, 0.4], [1.5, -2.0]])
    cond = torch.zeros(2, 1)
    out = losses.stackgan2_discriminator_loss(D, real, fake, cond, wrong_images=wrong, uncond_weight=0.5)
    mean = lambda xs, y: float(np.mean([_bce(x, y) for x in xs]))  # noqa: E731
    terms = {"real": mean([1.0, 2.0], 1), "wrong": mean([0.4, -2.0], 0), "fake": mean([-0.5, 0.1], 0),
             "u_real": mean([0.5, -0.3], 1), "u_wrong": mean([0.7, 1.5], 1),  # a wrong image is real, unconditionally
             "u_fake": mean([-1.0, 0.2], 0)}
    for k, v in terms.items():
        assert float(out[k]) == pytest.approx(v, rel=1e-6), k
    expected = sum(terms[k] for k in ("real", "wrong", "fake")) + 0.5 * sum(terms[k] for k in
                                                                             ("u_real", "u_wrong", "u_fake"))
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-6)
    # UNCOND_LOSS 0: the reference's real + (wrong + fake) / 2, no unconditional terms
    out0 = losses.stackgan2_discriminator_loss(D, real, fake, cond, wrong_images=wrong, uncond_weight=0.0)
    assert float(out0["loss"]) == pytest.approx(terms["real"] + (terms["wrong"] + terms["fake"]) / 2, rel=1e-6)
    assert "u_real" not in out0
    # wrong captions instead of wrong images: the real images scored with the rolled condition
    shifted = torch.tensor([[3.0], [-1.0]])
    outc = losses.stackgan2_discriminator_loss(D, real, fake, shifted, uncond_weight=0.0)
    assert float(outc["wrong"]) == pytest.approx(mean([1.0 - 1.0, 2.0 + 3.0], 0), rel=1e-6)
    # AttnGAN's form with wrong images: (real + u_real) / 2 + (fake + u_fake + wrong) / 3
    outa = losses.discriminator_loss(D, real, fake, cond, wrong_images=wrong)
    assert float(outa["wrong"]) == pytest.approx(terms["wrong"], rel=1e-6)
    assert float(outa["loss"]) == pytest.approx((terms["real"] + terms["u_real"]) / 2
                                                + (terms["fake"] + terms["u_fake"] + terms["wrong"]) / 3, rel=1e-6)
    # unconditional mode: u_real + u_fake; G: the unconditional term only, or cond + W x uncond
    outu = losses.unconditional_discriminator_loss(D, real, fake)
    assert float(outu["loss"]) == pytest.approx(terms["u_real"] + mean([-1.0, 0.2], 0), rel=1e-6)
    g_uncond, _ = losses.generator_adv_loss([D], [fake], None)
    assert float(g_uncond) == pytest.approx(mean([-1.0, 0.2], 1), rel=1e-6)
    g, _ = losses.generator_adv_loss([D], [fake], cond, uncond_weight=0.5)
    assert float(g) == pytest.approx(mean([-0.5, 0.1], 1) + 0.5 * mean([-1.0, 0.2], 1), rel=1e-6)


def test_r1_penalty_in_every_form():
    from t2icli.models.attngan import StageDiscriminator

    torch.manual_seed(0)
    D = StageDiscriminator(16, 2, 3)
    real, fake, cond = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16), torch.randn(2, 3)
    for fn in (lambda r: losses.stackgan2_discriminator_loss(D, real, fake, cond, r1_gamma=r),
               lambda r: losses.unconditional_discriminator_loss(D, real, fake, r1_gamma=r)):
        plain, pen = ({k: float(v.detach()) for k, v in fn(r).items()} for r in (0.0, 4.0))
        assert pen["r1"] > 0 and pen["loss"] == pytest.approx(plain["loss"] + 2 * pen["r1"], rel=1e-5)


def test_colour_consistency_against_the_detached_smaller_stage():
    torch.manual_seed(0)
    small = torch.rand(2, 3, 4, 4, requires_grad=True)
    big = torch.rand(2, 3, 8, 8, requires_grad=True)
    losses.tree_color_consistency([small, big], detach=True).backward()
    assert small.grad is None and big.grad.abs().sum() > 0  # StackGAN-v2: only the larger stage moves
    big.grad = None
    losses.tree_color_consistency([small, big]).backward()
    assert small.grad.abs().sum() > 0 and big.grad.abs().sum() > 0


# -- StackGAN++ with the reference's options ------------------------------------------------------------------------
TREE = dict(stages=2, steps=3, batch_size=4, gf_dim=4, df_dim=4, z_dim=8, cond_dim=8, snapshot_every=2,
            snapshot_rprecision=8, final_rprecision=8, progress=False, device="cpu")
SG2_PAPER = dict(d_condition="mu", wrong="images", uncond_loss=1.0, kl_weight=2.0, cc_detach=True)


@pytest.mark.long
def test_stackgan2_reference_options_resume_exactly(tiny, tmp_path):
    """The reference's D on mu with wrong images (drawn for the global batch from the step's generator) and
    UNCOND_LOSS: a run resumed mid-way ends with the weights of an uninterrupted one."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    kw = dict(data=tiny["data"], damsm=tiny["damsm"], **TREE, **SG2_PAPER)
    train("stackgan2", out=a, **kw)
    train("stackgan2", out=b, **dict(kw, steps=2))
    train("stackgan2", out=b, resume="latest", **kw)
    sa, sb = load_checkpoint(find_latest_checkpoint(a)), load_checkpoint(find_latest_checkpoint(b))
    for part in ("G", "Ds", "G_ema"):
        for k, v in sa[part].items():
            assert torch.equal(v, sb[part][k]), (part, k)
    Ds = sa["Ds"]
    code = 8 * 4  # the D code width (8 df); its conditional head joins the CA mean mu (cond_dim 8)
    assert Ds["0.joint.0.weight"].shape[1] == code + 8
    with pytest.raises(RunError, match="--d-condition mu"):
        train("stackgan2", out=b, resume="latest", **dict(kw, steps=4, d_condition="sentence"))


def test_stackgan2_unconditional_mode_trains_and_samples(tiny, tmp_path):
    from t2icli.models.export import load_generator

    run = str(tmp_path / "u")
    res = train("stackgan2", data=tiny["data"], damsm=tiny["damsm"], out=run, unconditional=True,
                **dict(TREE, steps=2))
    assert res["rprecision"] is None and res["final"]["last"]["kl"] == 0.0
    ckpt = load_checkpoint(find_latest_checkpoint(run))
    assert not any(k.split(".")[1] in ("joint", "cond") for k in ckpt["Ds"])  # unconditional heads only
    G, _, config, _, _ = load_generator(run)
    assert config["conditional"] is False and G.ca is None
    r = _cli("sample", "a red bird", "--model", run, "--out", str(tmp_path / "s.png"), "--n", "2")
    assert r.exit_code == 0, r.output
    with pytest.raises(ConfigError, match="--unconditional"):
        CONFIGS["stackgan2"](data=tiny["data"], damsm=tiny["damsm"], out=run, unconditional=True,
                             text_embeddings=tiny["data"] + "/dataset.json").validate()


def test_wrong_images_are_of_other_classes_and_drawn_for_the_global_batch(tiny):
    from t2icli.training.attngan import TreeTrainer

    cfg = CONFIGS["stackgan2"](data=tiny["data"], damsm=tiny["damsm"], out="unused", stages=2, wrong="images")
    trainer = TreeTrainer(cfg, distributed.Env())
    ds = trainer.train_ds
    batch = {"class_ids": torch.as_tensor(ds.class_ids[:16]), "indices": torch.arange(16)}
    picks = trainer.wrong_indices(batch, torch.Generator().manual_seed(3))
    assert all(ds.class_ids[j] != c for j, c in zip(picks, ds.class_ids[:16]))
    assert picks == trainer.wrong_indices(batch, torch.Generator().manual_seed(3))  # a function of the step's draws
    assert picks != trainer.wrong_indices(batch, torch.Generator().manual_seed(4))
    many = [j for s in range(40) for j in trainer.wrong_indices(batch, torch.Generator().manual_seed(s))]
    assert len(set(many)) > len(ds) // 2  # spread over the other classes' images, not a fixed partner
    images = trainer.wrong_images(batch, torch.Generator().manual_seed(3))
    assert [tuple(x.shape) for x in images] == [(16, 3, 16, 16), (16, 3, 32, 32)]
    assert torch.equal(images[1][0], ds[picks[0]]["images"][1])  # the loader's crop and flip of that image


# -- GAN-INT-CLS ---------------------------------------------------------------------------------------------------
def test_gancls_caption_means_are_means_of_the_images_own_captions(tiny, tmp_path):
    from t2icli.training.gancls import GanClsTrainer

    cfg = CONFIGS["gancls"](data=tiny["data"], damsm=tiny["damsm"], out="unused", n_captions=3)
    trainer = GanClsTrainer(cfg, distributed.Env())
    ds, enc = trainer.train_ds, trainer.text_encoder
    batch = {"indices": torch.arange(6)}
    t = trainer.mean_condition(batch, torch.Generator().manual_seed(0), 3)  # [6, D]
    assert t.shape == (6, trainer.text_dim)
    for i in range(6):  # the image's captions' features (each cut as the loader does: under its word limit here)
        caps = [torch.from_numpy(ds.cut(ids.numpy(), np.random.default_rng(0))[0]) for ids in ds.caption_tokens(i)]
        lens = torch.tensor([min(len(ids), ds.word_limit) for ids in ds.caption_tokens(i)])
        with torch.no_grad():
            feats = enc(torch.stack(caps), lens)[1]  # [n_captions, D]
        means = [feats[list(c)].mean(0) for c in _multisets(len(feats), 3)]
        assert any(torch.allclose(t[i], m, atol=1e-5) for m in means), i
    # char-CNN-RNN embeddings: rows e of image i hold 10 i + e, so the mean tells which rows were drawn
    trainer.embeddings = (10 * torch.arange(len(ds))[:, None] + torch.arange(4)[None, :]).float()[:, :, None]
    t = trainer.mean_condition(batch, torch.Generator().manual_seed(1), 3)[:, 0]  # [6]
    frac = t - 10 * torch.arange(6)
    assert torch.all((frac >= 0) & (frac <= 3)) and torch.allclose(frac * 3, (frac * 3).round())


def _multisets(n, k):
    from itertools import combinations_with_replacement

    return combinations_with_replacement(range(n), k)


def test_gancls_discriminator_cls_weight_and_fresh_generator_samples():
    """D = real + cls x (wrong image, right text) + (1 - cls) x fake, from the D and G the step starts with; G on
    1.5 B fresh samples: BCE weighted 1 (B) and interp_weight (B/2), averaged over all 1.5 B."""
    from t2icli.models.gancls import CondDiscriminator, GanClsConfig, GanClsGenerator, init_dcgan
    from t2icli.training.gancls import train_step

    torch.manual_seed(0)
    mcfg = GanClsConfig(image_size=16, gf_dim=4, df_dim=4, z_dim=6, text_dim=5, proj_dim=3)
    G, D = init_dcgan(GanClsGenerator(mcfg)), init_dcgan(CondDiscriminator(16, 4, 5, 3))
    reals, wrongs, t = torch.rand(4, 3, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 5)
    z, z_int = torch.randn(4, 6), torch.randn(4, 6)
    G0, D0 = copy.deepcopy(G), copy.deepcopy(D)
    with torch.no_grad():
        fake = G0(z, t)["images"][0]
        d = (losses.bce(D0.logits(D0(reals), t), 1.0) + 0.3 * losses.bce(D0.logits(D0(wrongs), t), 0.0)
             + 0.7 * losses.bce(D0.logits(D0(fake), t), 0.0))
    fresh = (torch.randn(4, 6), torch.randn(2, 6), 0.5 * (t[:2] + t[2:]))
    opts = [torch.optim.Adam(m.parameters(), lr=1e-4) for m in (G, D)]
    vals = train_step(G, D, None, opts[0], opts[1], None, reals, t, z, z_int, wrong_images=wrongs, cls_weight=0.3,
                      interp_weight=0.25, fresh=fresh)
    assert vals["d"] == pytest.approx(float(d), rel=1e-5)
    assert vals["g"] == pytest.approx((4 * vals["g_adv"] + 0.25 * 2 * vals["g_int"]) / 6, rel=1e-5)
    # the 1.5 B samples go through G together: its BatchNorm sees them as one batch
    seen = []
    hook = G.net[1].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    train_step(G, D, None, opts[0], opts[1], None, reals, t, z, z_int, fresh=fresh)
    hook.remove()
    assert seen == [4, 6]  # D's fakes (no gradient), then G's fresh samples


def test_learning_rate_decays_as_the_references():
    from t2icli.training import gancls, stackgan

    # main_cls_int.lua:421-424: 1-based epoch 100 starts at half the rate, i.e. 0-based epoch 99
    assert [gancls.lr_factor(e, 100) for e in (0, 98, 99, 198, 199)] == [1, 1, 0.5, 0.5, 0.25]
    # StackGAN-Pytorch trainer.py:148: epoch % LR_DECAY_EPOCH == 0 and epoch > 0 (0-based)
    assert [stackgan.lr_factor(e, 20) for e in (0, 19, 20, 39, 40)] == [1, 1, 0.5, 0.5, 0.25]
    assert gancls.lr_factor(1000, None) == stackgan.lr_factor(1000, None) == 1


# -- StackGAN v1 ---------------------------------------------------------------------------------------------------
def test_stackgan_stage2_unconditional_head_is_trained_only_when_asked():
    from t2icli.models.stackgan import StackGAN, StackGANConfig, build_discriminators
    from t2icli.training.stackgan import stage_step

    torch.manual_seed(0)
    scfg = StackGANConfig(image_size=32, gf_dim=4, df_dim=2, z_dim=5, cond_dim=3, text_dim=6, res_blocks=1)
    for uncond in (False, True):
        G, (_, D2) = StackGAN(scfg), build_discriminators(scfg)
        G.ca1.requires_grad_(False)
        G.g1.requires_grad_(False)
        opts = [torch.optim.Adam(p, lr=1e-4) for p in (list(G.ca2.parameters()) + list(G.g2.parameters()),
                                                       D2.parameters())]
        before = D2.uncond.weight.detach().clone()
        stage_step(2, G, D2, opts[0], opts[1], torch.rand(4, 3, 32, 32), torch.randn(4, 6), torch.randn(4, 5),
                   torch.randn(4, 3), uncond=uncond)
        assert torch.equal(D2.uncond.weight, before) != uncond


def test_stackgan_epochs_per_stage_and_lr_decay(tiny, tmp_path):
    run = str(tmp_path / "s")
    res = train("stackgan", data=tiny["data"], damsm=tiny["damsm"], out=run, stage1_epochs=1, stage2_steps=12,
                lr_decay_epochs=1, stage2_uncond=True, batch_size=4, gf_dim=4, df_dim=4, z_dim=8, cond_dim=8,
                res_blocks=1, snapshot_every=1000, log_every=1, snapshot_rprecision=0, final_rprecision=0,
                progress=False)
    per_epoch = 40 // 4
    assert res["stage1_end"] == per_epoch and res["step"] == per_epoch + 12
    with open(os.path.join(run, "stats.jsonl")) as f:
        lr = {r["step"]: r["lr"] for r in map(json.loads, f) if "lr" in r and "train" in r}
    assert lr[1]["opt_G[0]"] == lr[per_epoch]["opt_G[0]"] == pytest.approx(2e-4)  # Stage-I: its first epoch
    assert lr[per_epoch + 1]["opt_D[1]"] == pytest.approx(2e-4)  # Stage-II starts at the full rate ...
    assert lr[2 * per_epoch + 1]["opt_D[1]"] == pytest.approx(1e-4)  # ... and halves after its first epoch


# -- bad input -------------------------------------------------------------------------------------------------------
def test_reference_options_refuse_what_they_cannot_do(tmp_path):
    """--wrong images on a data set of one class, and --g-batch fresh with interpolation on an odd batch, are
    refused with a message naming the flag, before the run folder exists."""
    from t2icli.data.format import DatasetWriter
    from t2icli.models.damsm import DAMSMConfig, build_damsm
    from t2icli.models.export import save_damsm

    data = tmp_path / "one-class"
    rng = np.random.default_rng(0)
    with DatasetWriter(data, source="unit", image_size=16, word_limit=5) as w:
        for split, n in (("train", 8), ("test", 4)):
            s = w.split(split)
            for i in range(n):
                s.add(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), ["a red bird", "a small bird"], class_id=0,
                      filename=f"{split}/{i}")
        w.finish()
    vocab = json.loads((data / "vocab.json").read_text())
    cfg = DAMSMConfig(vocab_size=len(vocab), image_size=16, small_width=4, hidden=8, embedding_dim=8)
    m = build_damsm(cfg)
    (tmp_path / "damsm").mkdir()
    save_damsm(str(tmp_path / "damsm"), m.text_encoder, m.image_encoder, cfg, vocab)
    base = ["train", "gancls", "--data", str(data), "--damsm", str(tmp_path / "damsm"), "--steps", "1", "--gf-dim",
            "4", "--df-dim", "4", "--z-dim", "4", "--no-progress", "--device", "cpu"]
    r = _cli(*base, "--out", str(tmp_path / "a"), "--batch-size", "4", "--wrong", "images")
    assert r.exit_code == 1 and "--wrong images: every training image" in r.output and "Traceback" not in r.output
    assert not os.path.exists(tmp_path / "a")
    r = _cli(*base, "--out", str(tmp_path / "b"), "--batch-size", "5", "--g-batch", "fresh")
    assert r.exit_code == 2 and "--batch-size 5: --g-batch fresh with --interp" in r.output
    assert not os.path.exists(tmp_path / "b")
