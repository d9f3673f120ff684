"""Tests of `t2i eval`: FID math and loading, the FID Inception, IS, DM-GAN R-precision, attribute accuracy, CLI errors."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from t2icli.cli import main
from t2icli.metrics.common import MetricError


# -- tiny fixtures: 32 px toybirds, a random DAMSM and a random 2-stage generator exported to files -----
def make_tiny_models(data, root, attention=True, seed=0):
    """Random-weight DAMSM run root/damsm and generator run root/gan (attngan or stackgan2) for `data`."""
    from t2icli.models.attngan import Generator, GeneratorConfig
    from t2icli.models.damsm import DAMSMConfig, build_damsm
    from t2icli.models.export import save_damsm, save_generator

    with open(os.path.join(data, "vocab.json")) as f:
        vocab = json.load(f)
    with open(os.path.join(data, "dataset.json")) as f:
        size = json.load(f)["image_size"]
    torch.manual_seed(seed)
    dcfg = DAMSMConfig(vocab_size=len(vocab), image_size=size, embedding_dim=16, hidden=16, small_width=8)
    damsm = build_damsm(dcfg)
    os.makedirs(os.path.join(root, "damsm"), exist_ok=True)
    os.makedirs(os.path.join(root, "gan"), exist_ok=True)
    save_damsm(os.path.join(root, "damsm"), damsm.text_encoder, damsm.image_encoder, dcfg, vocab)
    G = Generator(GeneratorConfig(image_size=size, stages=2, gf_dim=4, df_dim=4, z_dim=8, cond_dim=8, text_dim=32,
                                  attention=attention)).eval()
    save_generator(os.path.join(root, "gan"), "attngan" if attention else "stackgan2", G, damsm.text_encoder, dcfg,
                   vocab, damsm_run=os.path.abspath(os.path.join(root, "damsm")))
    return os.path.join(root, "gan"), os.path.join(root, "damsm")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from t2icli.data.toybirds import prepare_toybirds

    root = tmp_path_factory.mktemp("tiny")
    data = str(root / "tb")
    prepare_toybirds(data, size=32, n_train=40, n_test=12, captions_per_image=3, workers=1)
    gan, damsm = make_tiny_models(data, str(root))
    return {"data": data, "gan": gan, "damsm": damsm, "root": root}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# -- FID --------------------------------------------------------------------------------------------
def test_frechet_distance_closed_forms():
    from t2icli.metrics.fid import frechet_distance

    assert frechet_distance([0.0], [[1.0]], [1.0], [[4.0]]) == pytest.approx(1 + 1 + 4 - 2 * 2)
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)  # standard deviations of diagonal covariances
    want = ((m1 - m2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(m1, np.diag(s1**2), m2, np.diag(s2**2)) == pytest.approx(want, rel=1e-6)
    a = rng.normal(size=(6, 20))  # 6 samples in 20-d: a singular covariance
    cov = np.cov(a, rowvar=False)
    d = frechet_distance(a.mean(0), cov, a.mean(0), cov)
    assert np.isfinite(d) and abs(d) < 1e-3 * np.trace(cov)
    with pytest.raises(MetricError):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_fid_terms_split_the_distance():
    """The mean term is |mu1 - mu2|^2, the covariance term the rest; the spreads are the covariances' traces."""
    from t2icli.metrics.fid import fid_terms, frechet_distance

    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=4), rng.normal(size=4)
    s1, s2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    t = fid_terms(m1, np.diag(s1**2), m2, np.diag(s2**2))
    assert t["mean"] == pytest.approx(((m1 - m2) ** 2).sum())
    assert t["covariance"] == pytest.approx(((s1 - s2) ** 2).sum(), rel=1e-6)
    assert t["spread_generated"] == pytest.approx((s1**2).sum()) and t["spread_real"] == pytest.approx((s2**2).sum())
    assert t["mean"] + t["covariance"] == frechet_distance(m1, np.diag(s1**2), m2, np.diag(s2**2))


def test_fid_inception_blocks_differ_from_torchvision_in_pooling_only():
    from t2icli.metrics.fid_inception import FIDInception3, FIDInceptionA, FIDInceptionE
    from t2icli.models.inception import Inception3, InceptionA, InceptionE

    fid, tv = FIDInception3(), Inception3(num_classes=1008, aux_logits=False)
    assert {k: v.shape for k, v in fid.state_dict().items()} == {k: v.shape for k, v in tv.state_dict().items()}
    assert fid.fc.out_features == 1008 and fid.AuxLogits is None
    torch.manual_seed(0)
    x = torch.randn(1, 192, 5, 5)
    a, b = InceptionA(192, 32).eval(), FIDInceptionA(192, 32).eval()
    b.load_state_dict(a.state_dict())
    ya, yb = a(x), b(x)
    pool = slice(224, 256)  # the pool branch's channels
    assert torch.equal(ya[:, :224], yb[:, :224]) and not torch.allclose(ya[:, pool], yb[:, pool])
    e, emax = InceptionE(64).eval(), FIDInceptionE(64, pool="max").eval()
    emax.load_state_dict(e.state_dict())
    x = torch.randn(1, 64, 4, 4)
    assert torch.equal(e(x)[:, :1856], emax(x)[:, :1856]) and not torch.allclose(e(x)[:, 1856:], emax(x)[:, 1856:])


@pytest.mark.long
def test_fid_loads_weights_file_and_fid_of_real_split_with_itself_is_zero(tiny, tmp_path):
    from t2icli.data import PreparedDataset
    from t2icli.metrics.fid import fid_of_images, stats_cache_path
    from t2icli.metrics.fid_inception import FIDInception3

    torch.manual_seed(0)
    weights = tmp_path / "fid_weights.pt"
    torch.save(FIDInception3().state_dict(), weights)
    real = PreparedDataset(tiny["data"], "test", train=False).images_uint8  # [12, 32, 32, 3]
    r1 = fid_of_images(real, tiny["data"], "test", "fid-inception", str(weights), batch_size=10)
    assert r1["backbone"] == "fid-inception" and r1["n"] == 12 and "bilinear" in r1["resize"]
    assert abs(r1["value"]) < 1e-3
    assert os.path.isfile(r1["reference_stats"]) and r1["reference_stats"].startswith(os.path.join(tiny["data"], "cache"))
    # the same weights for the other backbone are another cache key
    path_tv, _ = stats_cache_path(tiny["data"], "test", dict(backbone="torchvision", resize=r1["resize"],
                                                             weights_sha256=r1["weights_sha256"]))
    assert path_tv != r1["reference_stats"]
    r2 = fid_of_images(real[:6], tiny["data"], "test", "fid-inception", str(weights), batch_size=10)
    assert r2["n"] == 6 and r2["value"] > 0  # a different set, read against the cached reference


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_dmgan_fid_backbone_feeds_dmgans_input_range(tmp_path):
    """DM-GAN eval/FID/inception.py:127-131 applies torchvision's transform_input formula to [0, 1] pixels: black
    reaches the network as (0.485 - 0.5) / 0.5 = -0.03 in the red channel, white as 0.458 - 0.03 = 0.428."""
    from t2icli.metrics.fid import build_backbone
    from t2icli.models.inception import Inception3

    torch.manual_seed(0)
    weights = tmp_path / "tv.pt"
    torch.save(Inception3(num_classes=10, aux_logits=False).state_dict(), weights)
    dm, info = build_backbone("dmgan", str(weights))
    tv, _ = build_backbone("torchvision", str(weights))
    assert info["backbone"] == "dmgan" and "(mean - 0.5) / 0.5" in info["input"]
    seen = []
    hook = dm.Conv2d_1a_3x3.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    x = torch.cat([torch.full((1, 3, 299, 299), -1.0), torch.full((1, 3, 299, 299), 1.0)])  # black, white
    with torch.no_grad():
        out = dm.features(x, logits=False)["pool"]
    hook.remove()
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(seen[0][0, :, 0, 0], (mean - 0.5) / 0.5) and torch.allclose(seen[0][1, :, 0, 0], std / 0.5 + (mean - 0.5) / 0.5)
    with torch.no_grad():  # the same network as the torchvision backbone, on the remapped input
        assert torch.allclose(out, tv.features(seen[0], logits=False)["pool"], atol=1e-6)


@pytest.mark.parametrize("content", ["missing", "garbage", "wrong"])
def test_fid_and_is_weights_errors(tmp_path, content):
    from t2icli.metrics.fid import build_backbone
    from t2icli.metrics.inception_score import load_classifier

    path = tmp_path / "w.pt"
    if content == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif content == "wrong":
        torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(MetricError, match="inception-weights"):
        build_backbone("fid-inception", str(path))
    with pytest.raises(MetricError, match="inception-weights"):
        load_classifier(str(path), 10)
    with pytest.raises(MetricError, match="inception-weights is required"):
        build_backbone("torchvision", None)


# -- Inception Score -------------------------------------------------------------------------------
def test_inception_score_from_probs():
    from t2icli.metrics.inception_score import inception_score_from_probs

    K = 10
    onehot = np.eye(K)[np.arange(100) % K]  # confident and evenly spread over every split: IS = K
    mean, std, scores = inception_score_from_probs(onehot, splits=10, shuffle=False)
    assert mean == pytest.approx(K, rel=1e-6) and std == pytest.approx(0, abs=1e-6) and len(scores) == 10
    assert 1 < inception_score_from_probs(onehot, splits=10)[0] < K  # shuffled splits are not all balanced
    mean, _, _ = inception_score_from_probs(np.full((50, K), 1.0 / K), splits=10)  # no information: IS = 1
    assert mean == pytest.approx(1.0)
    with pytest.raises(MetricError, match="at least 10 images"):
        inception_score_from_probs(onehot[:5], splits=10)


def test_inception_score_splits_are_shuffled_not_class_ordered():
    """Test-caption order is class by class on CUB: 10 consecutive splits of 50 classes see 5 classes each, and a
    perfectly diverse, confident generator would score IS 5. StackGAN's / DM-GAN's evaluation shuffles first
    (DM-GAN eval/IS/bird/inception_score_bird.py:91-92) and every split sees ~all classes."""
    from t2icli.metrics.inception_score import inception_score_from_probs

    probs = np.eye(50)[np.repeat(np.arange(50), 20)]  # 1000 confident images, class by class
    consecutive, _, _ = inception_score_from_probs(probs, splits=10, shuffle=False)
    assert consecutive == pytest.approx(5.0)
    mean, std, scores = inception_score_from_probs(probs, splits=10, seed=3)
    perm = np.random.default_rng(3).permutation(1000)  # the shuffled value, computed by hand
    want = []
    for i in range(10):
        part = np.bincount(perm[i * 100 : (i + 1) * 100] // 20, minlength=50) / 100  # p(y) of the split
        nz = part[part > 0]
        want.append(np.exp(-(nz * np.log(nz)).sum()))  # confident images: IS = exp(H(p(y)))
    assert scores == pytest.approx(want, rel=1e-9) and mean == pytest.approx(np.mean(want))
    assert mean > 30 and inception_score_from_probs(probs, splits=10, seed=4)[0] != mean  # the seed matters


def test_tf_slim_pooling_excludes_the_padding():
    """TF-slim's 'SAME' 3x3 average pool (DM-GAN eval/IS/bird/inception/slim/inception_model.py, every mixed
    block's branch_pool) averages only the real pixels under the window; torchvision's divides by 9."""
    from t2icli.metrics.inception_score import tf_slim_inception
    from t2icli.models.inception import InceptionA, InceptionC, InceptionE

    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1 2 3] [4 5 6] [7 8 9]]
    by_hand = torch.tensor([[(1 + 2 + 4 + 5) / 4, (1 + 2 + 3 + 4 + 5 + 6) / 6, (2 + 3 + 5 + 6) / 4],
                            [(1 + 2 + 4 + 5 + 7 + 8) / 6, 45 / 9, (2 + 3 + 5 + 6 + 8 + 9) / 6],
                            [(4 + 5 + 7 + 8) / 4, (4 + 5 + 6 + 7 + 8 + 9) / 6, (5 + 6 + 8 + 9) / 4]])
    model = tf_slim_inception(51)
    blocks = [m for m in model.modules() if isinstance(m, (InceptionA, InceptionC, InceptionE))]
    assert len(blocks) == 9  # Mixed_5b..5d, 6b..6e, 7b, 7c: all of them
    for block in blocks:
        assert torch.allclose(block.pool3(x)[0, 0], by_hand)
    assert InceptionA.pool3(x)[0, 0, 0, 0] == pytest.approx(12 / 9)  # torchvision counts the padding
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in __import__("t2icli.models.inception", fromlist=["x"]).Inception3(51).state_dict().items()}


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_inception_score_drops_background_logit(tiny, tmp_path):
    from t2icli.data import PreparedDataset
    from t2icli.metrics.inception_score import inception_score
    from t2icli.models.inception import Inception3

    torch.manual_seed(0)
    weights = tmp_path / "cub_like.pt"
    torch.save(Inception3(num_classes=6, aux_logits=True).state_dict(), weights)  # 5 classes + background
    images = PreparedDataset(tiny["data"], "test", train=False).images_uint8[:4]
    res = inception_score(images, str(weights), num_classes=5, splits=2, batch_size=4)
    assert res["background_dropped"] and res["n"] == 4 and res["splits"] == 2 and len(res["weights_sha256"]) == 64
    assert 1.0 <= res["mean"] <= 5.0
    assert res["backbone"] == "tf-slim" and "exclude the padding" in res["pooling"] and "shuffled" in res["split_order"]
    tv = inception_score(images, str(weights), num_classes=5, splits=2, batch_size=4, backbone="torchvision")
    assert tv["backbone"] == "torchvision" and "include the padding" in tv["pooling"]
    from t2icli.metrics.fid_inception import avg3_no_pad
    from t2icli.metrics.inception_score import load_classifier

    auto = load_classifier(str(weights), 5)[0]  # a background output: the TF-slim network
    plain = load_classifier(str(weights), 5, backbone="torchvision")[0]
    assert auto.Mixed_7c.pool3 is avg3_no_pad and plain.Mixed_7c.pool3 is not avg3_no_pad
    with pytest.raises(MetricError, match="--is-backbone"):
        inception_score(images, str(weights), num_classes=5, splits=2, backbone="slim")
    with pytest.raises(MetricError, match="--num-classes 10"):
        inception_score(images, str(weights), num_classes=10, splits=2)


# -- R-precision (DM-GAN protocol) ------------------------------------------------------------------
def test_negatives_come_from_other_classes_fresh_per_image():
    from t2icli.metrics.rprecision_folds import draw_negatives

    classes = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    starts = np.arange(0, 17, 2)  # 2 captions per image
    rng = np.random.default_rng(0)
    neg = draw_negatives(np.array([0, 0, 1, 3]), classes, starts, 99, rng)
    assert neg.shape == (4, 99)
    caption_class = np.repeat(classes, 2)
    assert (caption_class[neg[:2]] != 0).all() and (caption_class[neg[2]] != 1).all() and (caption_class[neg[3]] != 3).all()
    assert not np.array_equal(neg[0], neg[1])  # drawn afresh for each image
    with pytest.raises(MetricError):
        draw_negatives(np.array([0]), np.array([0, 0]), np.array([0, 1, 2]), 5, rng)
    # With replacement even when there are enough other-class images (DM-GAN datasets.py:315-324 draws each
    # negative independently): 99 of 200 one-caption images repeat some, as 99 draws without replacement can't.
    many = draw_negatives(np.zeros(50, int), np.arange(201), np.arange(202), 99, np.random.default_rng(1))
    assert (many > 0).all() and max(99 - len(np.unique(row)) for row in many) > 0


def test_dmgan_rprecision_perfect_chance_and_folds():
    from t2icli.metrics.rprecision_folds import dmgan_rprecision

    rng = np.random.default_rng(1)
    m, caps = 40, 2  # 40 test images of 40 classes, 2 captions each
    pool = rng.normal(size=(m * caps, 16))
    starts, classes = np.arange(0, m * caps + 1, caps), np.arange(m)
    rows = np.arange(30) % (m * caps)
    img_cls = classes[rows // caps]
    perfect = dmgan_rprecision(pool[rows], pool[rows], pool, img_cls, classes, starts, n_negatives=20, folds=10)
    assert perfect["mean"] == 1.0 and perfect["std"] == 0.0 and len(perfect["folds"]) == 10 and perfect["n"] == 30
    noise = dmgan_rprecision(rng.normal(size=(30, 16)), pool[rows], pool, img_cls, classes, starts, n_negatives=20)
    assert noise["mean"] < 0.5
    tie = dmgan_rprecision(np.zeros((30, 16)), pool[rows], pool, img_cls, classes, starts, n_negatives=20)
    assert tie["mean"] == 1.0  # all 100 scores equal: a hit, as DM-GAN's argmax returns the true caption first
    with pytest.raises(MetricError, match="10 folds"):
        dmgan_rprecision(pool[:5], pool[:5], pool, img_cls[:5], classes, starts)


def test_dmgan_rprecision_ties_with_identical_captions_and_shuffled_folds():
    from t2icli.metrics.rprecision_folds import PROTOCOL_CHOICES, dmgan_rprecision

    rng = np.random.default_rng(2)
    m = 100  # 100 test images of 100 classes, one caption each; every other caption has the same text
    pool = rng.normal(size=(m, 8))
    pool[1::2] = pool[0]  # same sentence feature: a negative may tie with the true caption exactly
    starts, classes = np.arange(m + 1), np.arange(m)
    rows = np.arange(m)
    f = pool[rows]  # images aligned with their captions
    res = dmgan_rprecision(f, pool[rows], pool, classes, classes, starts, n_negatives=99, folds=10, seed=0)
    assert res["mean"] == 1.0  # the ties (odd rows) count as hits
    # Class-ordered hits: the first half of the images hit, the second half miss. Consecutive folds would be
    # [1]*5 + [0]*5 (std 0.5); shuffled folds (DM-GAN trainer.py:487) mix them.
    f = np.concatenate([pool[:50], -pool[50:]])
    res = dmgan_rprecision(f, pool, pool, classes, classes, starts, n_negatives=99, folds=10, seed=0)
    assert res["mean"] == pytest.approx(0.5) and res["std"] < 0.3 and 0 < min(res["folds"]) <= max(res["folds"]) < 1
    assert PROTOCOL_CHOICES == {"negatives_drawn": "with replacement, other-class test images", "ties": "hit",
                                "fold_order": "shuffled (seeded) before splitting"}


def test_eval_images_are_truncated_to_uint8_as_the_references():
    from t2icli.metrics.generate import to_uint8

    x = torch.tensor([-1.0, -0.999, 0.0, 0.999, 1.0]).reshape(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]  # rounded (PNGs of t2i sample)
    assert to_uint8(x, "truncate")[0, 0, :, 0].tolist() == [0, 0, 127, 254, 255]  # (x + 1) * 127.5 -> uint8


# -- attribute accuracy ----------------------------------------------------------------------------
def test_mentioned_accuracy_counts_only_mentioned_attributes():
    from t2icli.metrics.attributes import mentioned_accuracy

    truth = np.array([[1, 2, 0], [3, 1, 1]])
    pred = np.array([[1, 0, 0], [0, 1, 1]])
    mentions = np.array([0b011, 0b100])  # image 0 names attributes 0 and 1; image 1 names attribute 2
    res = mentioned_accuracy(pred, truth, mentions, ["a", "b", "c"])
    assert res["n_mentions"] == 3 and res["overall"] == pytest.approx(2 / 3)
    assert res["per_attribute"] == {"a": {"accuracy": 1.0, "n": 1}, "b": {"accuracy": 0.0, "n": 1},
                                    "c": {"accuracy": 1.0, "n": 1}}


def test_attribute_marginals_shares_and_total_variation():
    from t2icli.metrics.attributes import attribute_marginals

    schema = [{"name": "size", "values": ["small", "medium", "large"]}, {"name": "bg", "values": ["sky", "sand"]}]
    real = np.array([[0, 0], [1, 1], [2, 0], [0, 1]])  # sizes 2 small, 1 medium, 1 large; backgrounds half each
    gen = np.array([[2, 1], [2, 0], [2, 1], [1, 0]])  # every bird but one drawn large; the same background mix
    out = attribute_marginals(gen, real, schema)
    assert out["size"]["values"] == ["small", "medium", "large"]
    assert out["size"]["real"] == [0.5, 0.25, 0.25] and out["size"]["generated"] == [0.0, 0.25, 0.75]
    assert out["size"]["tv"] == pytest.approx(0.5)  # half the mass moved from small to large
    assert out["bg"]["tv"] == 0.0
    assert attribute_marginals(real, real, schema)["size"]["tv"] == 0.0
    assert attribute_marginals(np.zeros((4, 2), int), np.ones((4, 2), int), schema)["bg"]["tv"] == 1.0  # disjoint


def test_misplaced_colours_counts_a_colour_drawn_on_another_stated_part():
    from t2icli.metrics.attributes import misplaced_colours

    col = ["red", "blue", "green", "white"]
    schema = [{"name": "body", "kind": "color", "values": col}, {"name": "wing", "kind": "color", "values": col},
              {"name": "crown", "kind": "color", "values": col},
              {"name": "size", "kind": "category", "values": ["small", "blue"]}]  # not a colour, even if named so
    stated = np.array([[0, 1, -1, -1],  # red body, blue wings
                       [0, 1, -1, -1],
                       [0, 1, 2, 1],    # red body, blue wings, green crown, size "blue"
                       [0, 0, -1, -1],  # red body, red wings: no other colour to take
                       [0, 1, -1, -1]])
    pred = np.array([[1, 1, 3, 0],      # body drawn blue: the wing's colour -> misplaced
                     [3, 1, 0, 0],      # body drawn white: a colour nobody named -> wrong, not misplaced
                     [0, 2, 0, 0],      # wings green (the crown's) -> misplaced; crown red (the body's) -> misplaced
                     [1, 1, 0, 0],      # wrong, but the caption names no other colour: not counted
                     [0, 1, 1, 0]])     # right where stated; the unstated crown is not scored
    out = misplaced_colours(pred, stated, schema)
    assert out["wrong"] == 4 and out["misplaced"] == pytest.approx(3 / 4)
    assert out["per_attribute"]["body"] == {"wrong": 2, "misplaced": 0.5}
    assert out["per_attribute"]["wing"] == {"wrong": 1, "misplaced": 1.0}
    assert out["per_attribute"]["crown"] == {"wrong": 1, "misplaced": 1.0} and "size" not in out["per_attribute"]
    # chance: the caption's other differing colours over the attribute's other values (3 here): 1, 1, 2, 2 of 3
    assert out["chance"] == pytest.approx((1 + 1 + 2 + 2) / 3 / 4)
    none = misplaced_colours(stated.clip(0), stated, schema)
    assert none["wrong"] == 0 and none["misplaced"] is None and none["chance"] is None


def test_leaked_colours_counts_a_free_part_drawn_in_a_stated_colour():
    from t2icli.metrics.attributes import leaked_colours

    col = ["red", "blue", "green", "white"]
    schema = [{"name": "body", "kind": "color", "values": col}, {"name": "beak", "kind": "color", "values": col},
              {"name": "belly", "kind": "color", "values": col},
              {"name": "size", "kind": "category", "values": ["small", "red"]}]  # not a colour, even if named so
    stated = np.array([[1, 3, -1, -1],   # blue body, white beak; belly free
                       [1, -1, -1, 1],   # blue body; beak and belly free (size "red" states no colour)
                       [-1, -1, -1, 0],  # no colour stated: nothing can leak
                       [0, 0, 2, -1]])   # every colour stated: no free part
    pred = np.array([[1, 3, 3, 0],       # belly white: the beak's colour -> leaked
                     [1, 1, 0, 0],       # beak blue: the body's -> leaked; belly red: nobody's colour -> not
                     [1, 1, 1, 1],
                     [0, 0, 2, 0]])
    out = leaked_colours(pred, stated, schema)
    assert out["free"] == 3 and out["leaked"] == pytest.approx(2 / 3)
    assert out["per_attribute"]["belly"] == {"free": 2, "leaked": 0.5}
    assert out["per_attribute"]["beak"] == {"free": 1, "leaked": 1.0}
    assert out["per_attribute"]["body"] == {"free": 0, "leaked": None} and "size" not in out["per_attribute"]
    none = leaked_colours(pred, np.full_like(stated, -1), schema)
    assert none["free"] == 0 and none["leaked"] is None


def test_attr_summary_names_the_furthest_value_mix():
    from t2icli.cli.eval import _summary

    marg = {"body": {"values": ["red", "blue"], "real": [0.5, 0.5], "generated": [0.5, 0.5], "tv": 0.0},
            "size": {"values": ["small", "large"], "real": [0.5, 0.5], "generated": [0.1, 0.9], "tv": 0.4}}
    r = {"metric": "attr", "n": 10, "n_mentions": 12, "accuracy": 0.5, "per_attribute": {"body": 0.5, "size": 0.5},
         "real": {"accuracy": 1.0}, "marginals": marg}
    text = _summary(r)
    assert "value mix vs real (total variation, 0 = the same): body 0.00, size 0.40" in text
    assert "furthest: size drawn small 0.10 / large 0.90; real small 0.50 / large 0.50" in text
    assert "value mix" not in _summary(dict(r, marginals=None))  # results written before marginals existed


def test_attribute_classifier_augmentations():
    from t2icli.metrics.attributes import random_blur, random_noise

    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 16, 16) * 2 - 1
    y = random_blur(x, 2.0, g)
    assert y.shape == x.shape
    sharp = (y - x).flatten(1).abs().amax(1) < 1e-5  # images drawn sigma 0 are left as they are
    assert 10 < int(sharp.sum()) < 54
    blurred = y[~sharp]
    assert blurred.std() < x[~sharp].std()  # a blur removes pixel noise ...
    flat = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(random_blur(flat, 2.0, g), flat, atol=1e-5)  # ... but keeps a flat colour
    assert torch.allclose(y.mean((2, 3)), x.mean((2, 3)), atol=0.1)  # and the mean colour (reflect padding)
    z = random_noise(x, 0.15, torch.Generator().manual_seed(1))
    same = (z - x).flatten(1).abs().amax(1) == 0
    assert 10 < int(same.sum()) < 54 and (z - x)[~same].std() < 0.15
    again = random_noise(x, 0.15, torch.Generator().manual_seed(1))
    assert torch.equal(z, again)  # reproducible from the generator


@pytest.mark.slow
def test_attribute_classifier_is_accurate_on_toybirds_32px(tmp_path):
    from t2icli.data.toybirds import prepare_toybirds
    from t2icli.metrics.attributes import load_or_train_classifier

    data = str(tmp_path / "tb")
    prepare_toybirds(data, size=32, n_train=1000, n_test=200, captions_per_image=2, workers=1)
    _, info = load_or_train_classifier(data, steps=250)
    assert info["real_test"]["overall"] > 0.6 and not info["cached"]
    assert info["real_test"]["per_attribute"]["background"] > 0.9
    _, again = load_or_train_classifier(data, steps=250)
    assert again["cached"] and again["real_test"] == info["real_test"]


def test_attr_metric_protocol_and_cache(tiny, monkeypatch):
    from t2icli.metrics import attributes
    from t2icli.metrics.evaluate import evaluate

    monkeypatch.setitem(attributes.RECIPE, "steps", 3)
    res = evaluate(["attr"], tiny["gan"], tiny["data"], n_samples=25, seed=0)[0]
    assert res["metric"] == "attr" and res["n"] == 25 and res["n_mentions"] > 25
    assert set(res["per_attribute"]) == {"body", "wing", "crown", "belly", "beak", "beak_length", "size", "background"}
    assert 0 <= res["accuracy"] <= 1 and 0 <= res["real"]["accuracy"] <= 1
    assert os.path.isfile(os.path.join(tiny["data"], "cache", "attr_classifier.pt"))
    assert set(res["marginals"]) == set(res["per_attribute"]) == set(res["marginal_tv"])
    size = res["marginals"]["size"]
    assert size["values"] == ["small", "medium", "large"] and 0 <= size["tv"] <= 1
    assert sum(size["generated"]) == pytest.approx(1, abs=1e-3) and sum(size["real"]) == pytest.approx(1, abs=1e-3)


def test_eval_stage_all_scores_every_stage(tiny):
    """--stage all: the earlier stages' images go through the same classifier (their own accuracy and, per attribute,
    how often their reading agrees with the last stage's); the last stage's figures are those of a plain run."""
    args = ["eval", "--metric", "attr", "--model", tiny["gan"], "--data", tiny["data"], "--n-samples", 20,
            "--attr-steps", 3, "--json"]
    plain, staged = run(*args), run(*args, "--stage", "all")
    assert plain.exit_code == 0 and staged.exit_code == 0, staged.output
    plain, staged = json.loads(plain.stdout), json.loads(staged.stdout)
    assert "per_stage" not in plain and "per_stage" in staged["protocol"]
    for key in ("accuracy", "per_attribute", "marginals", "misplaced_colours"):
        assert staged[key] == plain[key], key
    (st,) = staged["per_stage"]  # 2 stages: the 16 px one
    assert st["size"] == 16 and 0 <= st["accuracy"] <= 1 and set(st["per_attribute"]) == set(plain["per_attribute"])
    assert all(0 <= v <= 1 for v in st["agreement_with_last"].values()) and 0 <= st["real"] <= 1
    mc = plain["misplaced_colours"]
    assert set(mc["per_attribute"]) == {"body", "wing", "crown", "belly", "beak"}
    assert mc["wrong"] == sum(v["wrong"] for v in mc["per_attribute"].values())
    text = run(*args[:-1], "--stage", "all")
    assert text.exit_code == 0 and "stage 16 px: accuracy" in text.stdout
    assert "wrong colours drawn in another part's stated colour" in text.stdout
    lc = plain["leaked_colours"]
    for side in ("generated", "real"):  # the same rows, so the same free parts on both sides
        assert lc[side]["free"] == lc["generated"]["free"] == sum(v["free"] for v in lc[side]["per_attribute"].values())
        assert lc[side]["leaked"] is None or 0 <= lc[side]["leaked"] <= 1
    assert "free parts drawn in a stated colour" in text.stdout or lc["generated"]["leaked"] is None
    res = run("eval", "--metric", "rprecision", "--model", tiny["gan"], "--data", tiny["data"], "--stage", "all")
    assert res.exit_code == 2 and "--stage all goes with --metric attr" in res.stderr


# -- the command ----------------------------------------------------------------------------------
def test_eval_rprecision_json_is_one_object(tiny):
    res = run("eval", "--metric", "rprecision", "--model", tiny["gan"], "--data", tiny["data"], "--n-samples", 30,
              "--json", "--device", "cpu")
    assert res.exit_code == 0, res.output + res.stderr
    out = json.loads(res.stdout)  # exactly one object, nothing else on stdout
    assert out["metric"] == "rprecision" and out["n"] == 30 and out["folds"] == 10 and out["negatives"] == 99
    assert out["encoder_run"] == os.path.abspath(tiny["damsm"]) and out["seed"] == 0
    assert 0 <= out["mean"] <= 1 and 0 <= out["real"]["mean"] <= 1 and len(out["fold_values"]) == 10
    assert out["word_limit"] == 25 and out["uint8"].startswith("truncate") and out["ties"] == "hit"
    assert "with replacement" in out["negatives_drawn"] and out["fold_order"].startswith("shuffled")
    assert "generating" in res.stderr
    again = run("eval", "--metric", "rprecision", "--model", tiny["gan"], "--data", tiny["data"], "--n-samples", 30,
                "--json", "--damsm", tiny["damsm"], "--device", "cpu")
    assert json.loads(again.stdout)["fold_values"] == out["fold_values"]  # deterministic from the seed


def test_eval_all_nests_metrics_and_skips_what_needs_weights(tiny):
    res = run("eval", "--metric", "all", "--model", tiny["gan"], "--data", tiny["data"], "--n-samples", 20, "--json",
              "--attr-steps", 3, "--fid-steps", 3)
    assert res.exit_code == 0, res.output + res.stderr
    out = json.loads(res.stdout)
    assert out["metric"] == "all" and set(out["metrics"]) == {"rprecision", "is", "fid", "attr"}
    assert "inception-weights" in out["metrics"]["is"]["skipped"]  # IS needs Inception; FID has the data backbone
    fid = out["metrics"]["fid"]
    assert fid["backbone"] == "data" and fid["n"] == 20 and fid["value"] >= 0 and fid["floor"] >= 0
    res = run("eval", "--metric", "all", "--model", tiny["gan"], "--data", tiny["data"], "--n-samples", 20, "--json",
              "--attr-steps", 3, "--fid-backbone", "fid-inception")
    assert "inception-weights" in json.loads(res.stdout)["metrics"]["fid"]["skipped"]
    assert out["metrics"]["rprecision"]["n"] == 20 and out["metrics"]["attr"]["n"] == 20


@pytest.mark.long
def test_eval_fid_stats_only(tiny, tmp_path):
    from t2icli.metrics.fid_inception import FIDInception3

    weights = tmp_path / "w.pt"
    torch.manual_seed(1)
    torch.save(FIDInception3().state_dict(), weights)
    res = run("eval", "--metric", "fid", "--stats-only", "--data", tiny["data"], "--inception-weights", weights, "--json")
    assert res.exit_code == 0, res.output + res.stderr
    out = json.loads(res.stdout)
    assert out["stats_only"] and out["n"] == 12 and os.path.isfile(out["path"]) and out["backbone"] == "fid-inception"


def test_eval_bad_inputs(tiny, tmp_path, monkeypatch):
    data, gan = tiny["data"], tiny["gan"]
    monkeypatch.setattr("t2icli.pretrained.ROOT", str(tmp_path / "no-pretrained"))  # no shipped model to fall back to
    res = run("eval", "--metric", "fid", "--fid-backbone", "fid-inception", "--model", gan, "--data", data)
    assert res.exit_code == 1 and "--inception-weights" in res.stderr
    res = run("eval", "--metric", "is", "--model", gan, "--data", data, "--inception-weights", tmp_path / "nope.pt")
    assert res.exit_code == 2 and "--inception-weights" in res.stderr
    res = run("eval", "--metric", "rprecision", "--data", data)
    assert res.exit_code == 2 and "no --model given" in res.stderr and "shipped pretrained" in res.stderr
    res = run("eval", "--metric", "rprecision", "--model", tmp_path, "--data", data)
    assert res.exit_code == 1 and "generator export" in res.stderr
    res = run("eval", "--metric", "rprecision", "--model", gan, "--data", data, "--stats-only")
    assert res.exit_code == 1 and "--stats-only" in res.stderr
    res = run("eval", "--metric", "bleu", "--model", gan, "--data", data)
    assert res.exit_code == 2
    res = run("eval", "--metric", "rprecision", "--model", gan, "--data", tmp_path / "absent")
    assert res.exit_code == 2
    # a data set without attribute truth
    meta_path = os.path.join(data, "dataset.json")
    import shutil

    other = tmp_path / "noattr"
    shutil.copytree(data, other)
    with open(meta_path) as f:
        meta = json.load(f)
    meta.pop("attributes")
    (other / "dataset.json").write_text(json.dumps(meta))
    res = run("eval", "--metric", "attr", "--model", gan, "--data", other)
    assert res.exit_code == 1 and "attribute" in res.stderr
    # a model trained on another vocabulary
    from t2icli.data.toybirds import prepare_toybirds

    small = str(tmp_path / "small")
    prepare_toybirds(small, size=32, n_train=3, n_test=3, captions_per_image=1, workers=1)
    res = run("eval", "--metric", "rprecision", "--model", gan, "--data", small, "--n-samples", 10)
    assert res.exit_code == 1 and "vocabulary" in res.stderr


def test_shipped_model_carries_its_damsm(tiny, tmp_path, monkeypatch):
    """install_model copies a run into the package's pretrained folder with its DAMSM export beside the generator and
    the training machine's DAMSM path dropped: `t2i eval --model` scores R-precision with the damsm.pt it carries
    (the same encoders, so the same folds), and without it names the missing DAMSM."""
    import shutil

    import t2icli.pretrained as pretrained

    monkeypatch.setattr(pretrained, "ROOT", str(tmp_path / "pretrained"))
    gan = tmp_path / "run"
    shutil.copytree(tiny["gan"], gan)
    (gan / "config.json").write_text(json.dumps({"kind": "attngan"}))
    (tmp_path / "eval.json").write_text(json.dumps({"metric": "all"}))
    damsm = tmp_path / "damsm"
    shutil.copytree(tiny["damsm"], damsm)
    with pytest.raises(FileNotFoundError, match="the DAMSM run's training config"):  # nothing installed without it
        pretrained.install_model(str(gan), str(damsm), str(tmp_path / "eval.json"))
    assert pretrained.shipped_model() is None
    (damsm / "config.json").write_text(json.dumps({"kind": "damsm", "steps": 7}))
    folder = pretrained.install_model(str(gan), str(damsm), str(tmp_path / "eval.json"))
    assert pretrained.shipped_model() == folder and sorted(os.listdir(folder)) == sorted(pretrained.FILES)
    assert json.loads(open(os.path.join(folder, "damsm_config.json")).read()) == {"kind": "damsm", "steps": 7}
    assert torch.load(os.path.join(folder, "generator.pt"), weights_only=True)["damsm_run"] is None
    args = ("eval", "--metric", "rprecision", "--data", tiny["data"], "--n-samples", 30, "--json", "--device", "cpu")
    shipped = run(*args, "--model", folder)
    assert shipped.exit_code == 0, shipped.output + shipped.stderr
    out = json.loads(shipped.stdout)
    assert out["encoder_run"] == os.path.join(folder, "damsm.pt")
    assert out["fold_values"] == json.loads(run(*args, "--model", tiny["gan"]).stdout)["fold_values"]
    default = run(*args)  # without --model: the shipped model, named on stderr
    assert default.exit_code == 0 and json.loads(default.stdout)["fold_values"] == out["fold_values"]
    assert f"using the shipped pretrained toybirds model {folder}" in default.stderr
    os.remove(os.path.join(folder, "damsm.pt"))
    missing = run(*args, "--model", folder)
    assert missing.exit_code != 0 and "DAMSM" in missing.output + missing.stderr
    with pytest.raises(ValueError, match="vocabularies"):  # a DAMSM of another vocabulary is refused, nothing replaced
        from t2icli.models.export import load_damsm, save_damsm

        text_enc, image_enc, dcfg, vocab = load_damsm(tiny["damsm"])
        save_damsm(str(tmp_path / "damsm.pt"), text_enc, image_enc, dcfg, vocab[:-1] + ["zebra"])
        pretrained.install_model(str(gan), str(tmp_path / "damsm.pt"), str(tmp_path / "eval.json"))
    assert os.path.isfile(os.path.join(folder, "generator.pt"))


def test_probe_damsm_script_bounds(tiny):
    """scripts/probe_damsm.py: within-class retrieval of a DAMSM with its chance and oracle; the oracle (attribute
    truth) is at least chance and at most 1."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    para = os.path.join(os.path.dirname(tiny["data"]), "probe_para.jsonl")
    subprocess.run([sys.executable, os.path.join(root, "scripts", "paraphrases.py"), "--data", tiny["data"], "--out",
                    para, "--n", "60"], capture_output=True, text=True, check=True)
    out = subprocess.run([sys.executable, os.path.join(root, "scripts", "probe_damsm.py"), "--damsm", tiny["damsm"],
                          "--data", tiny["data"], "--captions", para, "--image-probe"], capture_output=True, text=True,
                         check=True)
    res = json.loads(out.stdout)
    probe = res["image_probe"]
    names = ["body", "wing", "crown", "belly", "beak", "beak_length", "size", "background"]
    assert probe["n_train"] > 0 and probe["n_test"] > 0
    for kind in ("global", "local_pooled"):
        assert list(probe[kind]) == names and all(0 <= v <= 1 for v in probe[kind].values())
    files = res["captions_swapped_pairwise"]
    assert list(files) == [para] and 0 < files[para]["n"] <= 60 and 0 <= files[para]["pairwise"] <= 1
    assert res["n"] > 0 and 0 < res["chance"] <= res["oracle"] <= 1 and 0 <= res["within_class_top1"] <= 1
    assert res["n_swapped"] == 0 or 0 <= res["swapped_pairwise"] <= 1
    assert 0 <= res["other_pairwise"] <= 1
    assert set(res["attribute_pairwise"]) == {"crown", "belly", "beak", "beak_length", "size", "background"}
    for v in res["attribute_pairwise"].values():
        assert v["n"] >= 0 and (v["pairwise"] is None) == (v["n"] == 0)
        assert v["pairwise"] is None or 0 <= v["pairwise"] <= 1
    assert set(res["part_pairwise"]) <= {"crown", "belly", "beak", "body"}
    for v in res["part_pairwise"].values():
        assert v["n"] > 0 and 0 <= v["pairwise"] <= 1


def _probe_damsm_module():
    """scripts/probe_damsm.py imported as a module (scripts/ is not a package)."""
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("probe_damsm", os.path.join(root, "scripts", "probe_damsm.py"))
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    return probe


def test_probe_damsm_linear_probe_reads_what_the_features_hold_and_only_that():
    """probe_damsm --image-probe's linear probe: features that hold the label linearly (plus noise) are read on new
    rows nearly always; features independent of it near chance (4 values: 0.25)."""
    probe = _probe_damsm_module()
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (800,), generator=g)
    codes = torch.randn(4, 16, generator=g)  # one direction per value
    held = codes[y] + 0.5 * torch.randn(800, 16, generator=g)  # [800, 16]
    blind = torch.randn(800, 16, generator=g)
    assert probe.linear_probe(held[:600], y[:600].numpy(), held[600:], y[600:].numpy(), 4) > 0.95
    assert probe.linear_probe(blind[:600], y[:600].numpy(), blind[600:], y[600:].numpy(), 4) < 0.40


def test_probe_damsm_swaps_two_colour_words_in_any_phrasing():
    """probe_damsm --captions: the negative of a line is the line with its two colour words exchanged, every
    occurrence, whole words only, "grey" as "gray"."""
    probe = _probe_damsm_module()
    assert probe.swap_words("Its wings are white but its body is purple.", "purple", "white") == \
        "its wings are purple but its body is white."
    assert probe.swap_words("wings grey, body red, a reddish whitened gray crown", "gray", "red") == \
        "wings red, body gray, a reddish whitened red crown"


# -- the shipped evaluation networks ---------------------------------------------------------------
def test_installed_evaluators_score_only_their_own_data(tmp_path, monkeypatch):
    """install_evaluators copies DATA/cache's two networks into the package; a data set whose arrays hash the same
    loads them (shipped=True, same weights, nothing trained) once its own cache is gone; another data set trains."""
    import shutil

    import t2icli.pretrained as pretrained
    from t2icli.data.toybirds import prepare_toybirds
    from t2icli.metrics import attributes, data_fid

    monkeypatch.setattr(pretrained, "ROOT", str(tmp_path / "pretrained"))
    monkeypatch.setitem(attributes.RECIPE, "steps", 3)
    monkeypatch.setitem(data_fid.RECIPE, "steps", 3)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    prepare_toybirds(a, size=32, n_train=40, n_test=12, captions_per_image=1, workers=1)
    prepare_toybirds(b, size=32, n_train=40, n_test=12, captions_per_image=1, workers=1, seed=1)
    with pytest.raises(FileNotFoundError, match="attr_classifier.pt"):
        pretrained.install_evaluators(a)  # nothing cached yet
    clf, info = attributes.load_or_train_classifier(a)
    net, ninfo = data_fid.load_or_train_feature_network(a)
    written = pretrained.install_evaluators(a)
    assert [os.path.basename(p) for p in written] == list(pretrained.EVALUATORS)
    shutil.rmtree(os.path.join(a, "cache"))

    def no_training(*args, **kwargs):
        raise AssertionError("trained although a shipped network matches")

    with monkeypatch.context() as m:
        m.setattr(attributes, "train_attribute_classifier", no_training)
        clf2, info2 = attributes.load_or_train_classifier(a)
        net2, ninfo2 = data_fid.load_or_train_feature_network(a)
    assert info2["shipped"] and info2["cached"] and os.path.isfile(info2["path"])  # copied into DATA/cache
    assert sorted(os.listdir(os.path.join(a, "cache"))) == sorted(pretrained.EVALUATORS)
    assert ninfo2["shipped"] and ninfo2["weights_sha256"] == ninfo["weights_sha256"]
    for x, y in ((clf, clf2), (net, net2)):
        assert all(torch.equal(p, q) for p, q in zip(x.state_dict().values(), y.state_dict().values()))
    _, other = attributes.load_or_train_classifier(b)  # other arrays, other key: trained, not the shipped one
    assert not other["cached"] and "shipped" not in other
    _, longer = attributes.load_or_train_classifier(a, steps=4)  # another recipe: trained too
    assert not longer["cached"]


@pytest.fixture(scope="module")
def default_prep(tmp_path_factory):
    """A fresh `t2i prep toybirds` folder with the defaults (8000 + 1000 birds, 64 px; a few seconds)."""
    from t2icli.data.toybirds import prepare_toybirds

    data = str(tmp_path_factory.mktemp("default") / "toybirds")
    prepare_toybirds(data)
    return data


#: The shipped DAMSM's figures on a fresh default prep (scripts/probe_damsm.py, measured when it was shipped):
#: swapped_pairwise less a margin, and captions_swapped_pairwise on `paraphrases.py --n 1000`.
SHIPPED_SWAPPED, PARA_BINDING = 0.98, 0.950


def test_shipped_damsm_binds_colours_to_parts(default_prep):
    """scripts/probe_damsm.py's binding probe on the shipped DAMSM and a fresh default prep: its own caption beats
    the captions of birds with body and wing colours swapped (same words, other parts) in nearly every pair (0.997
    when it was shipped; a bag of words scores 0.5, the 1200-step demo DAMSM 0.84) and beats unrelated classes';
    its attribute_pairwise reads the attributes it was shipped seeing."""
    import subprocess
    import sys

    from t2icli.pretrained import shipped_model

    model = shipped_model()
    if not model:
        pytest.skip("this checkout ships no pretrained model")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    para = os.path.join(os.path.dirname(default_prep), "para.jsonl")
    subprocess.run([sys.executable, os.path.join(root, "scripts", "paraphrases.py"), "--data", default_prep, "--out",
                    para, "--n", "1000"], capture_output=True, text=True, check=True)
    out = subprocess.run([sys.executable, os.path.join(root, "scripts", "probe_damsm.py"), "--damsm",
                          os.path.join(model, "damsm.pt"), "--data", default_prep, "--captions", para],
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    assert res["n_swapped"] > 500 and res["swapped_pairwise"] > SHIPPED_SWAPPED and res["other_pairwise"] > 0.99
    # and in words the caption grammar never writes (scripts/paraphrases.py): the two colours of a paraphrase
    # exchanged lose to it as written (PARA_BINDING when shipped; 0.5 = colours read without their places)
    assert res["captions_swapped_pairwise"][para]["n"] > 800
    assert res["captions_swapped_pairwise"][para]["pairwise"] > PARA_BINDING - 0.03
    # beyond the class it sees size and background (0.84 / 0.70 when shipped; background has only 64 pairs, one
    # pair is 0.016), not beak length (0.45): the probe scores each caption's own image against same-class images
    # that differ in one stated fact, not the reverse
    seen = res["attribute_pairwise"]
    assert seen["size"]["n"] > 50 and seen["size"]["pairwise"] > 0.75 and seen["background"]["pairwise"] > 0.6
    assert seen["beak_length"]["pairwise"] < 0.6
    # where a colour is: "a red body" beats "a red crown" on a bird whose crown is not red (0.998 when shipped)
    parts = res["part_pairwise"]
    assert set(parts) == {"crown", "belly", "beak", "body"} and parts["body"]["n"] > 300
    assert parts["body"]["pairwise"] > 0.9


def test_shipped_model_is_what_train_pretrained_makes(tmp_path):
    """scripts/train_pretrained.sh trains `--preset toybirds-pretrained` of both trainers and nothing else: the
    shipped runs' resolved configs (config.json of the GAN, damsm_config.json of its DAMSM) are the presets' as
    `--dry-run` resolves them today, every field but the paths (a preset edited after shipping, e.g. a new default
    or seed, would make the script train another model)."""
    from click.testing import CliRunner

    from t2icli.cli import main
    from t2icli.data.toybirds import prepare_toybirds
    from t2icli.pretrained import shipped_model
    from t2icli.training.config import CONFIGS

    model = shipped_model()
    if not model:
        pytest.skip("this checkout ships no pretrained model")
    data = str(tmp_path / "tb64")  # the shipped model's image side: 3 stages need 64 px (16 / 32 / 64)
    prepare_toybirds(data, size=64, n_train=20, n_test=4, captions_per_image=1, workers=1)
    _, damsm = make_tiny_models(data, str(tmp_path / "models"))
    for kind, fname, extra, paths in (("attngan", "config.json", ["--damsm", damsm], {"data", "damsm", "out"}),
                                      ("damsm", "damsm_config.json", [], {"data", "out"})):
        with open(os.path.join(model, fname), encoding="utf-8") as f:
            shipped = json.load(f)
        res = CliRunner().invoke(main, ["train", kind, "--preset", "toybirds-pretrained", "--data", data,
                                        *extra, "--out", str(tmp_path / kind), "--dry-run"])
        assert res.exit_code == 0, res.output
        preset = json.loads(res.stdout)["config"]
        # a field added to t2i after the model shipped is absent from its config; it must keep its default there
        # (the behaviour the shipped run had)
        default = {f.name: f.default for f in dataclasses.fields(CONFIGS[kind])}
        added = set(preset) - set(shipped)
        assert {k: preset[k] for k in added} == {k: default[k] for k in added}, kind
        assert set(shipped) <= set(preset), kind
        assert ({k: v for k, v in preset.items() if k not in paths | added}
                == {k: v for k, v in shipped.items() if k not in paths}), kind


def test_shipped_generator_draws_what_its_captions_say(default_prep, tmp_path):
    """The shipped generator on a fresh default prep (`t2i eval --metric all` without --model: 300 test captions,
    the shipped evaluators and DAMSM): attribute accuracy near the n=2000 figure of its eval.json, body and wing
    colours nearly always, R-precision above the issue's 0.9 and data-FID well below colour shapes'. The model shipped
    now (the 0.999 average at step 9000): 0.865 / body 0.97 / wing 0.96 / R-precision 0.970 / data-FID 243.5 at n=300
    (the same run's 0.9995 average at step 12000, shipped before, 0.866 / 0.97 / 0.94 / 0.983 / 223.2, its 0.99
    average 0.859 / 0.97 / 0.97 / 0.973 / 265.8; the demo's colour shapes 480-560 at n=2000, more at 300)."""
    import shutil

    from t2icli.pretrained import shipped_model

    model = shipped_model()
    if not model:
        pytest.skip("this checkout ships no pretrained model")
    with open(os.path.join(model, "eval.json"), encoding="utf-8") as f:
        shipped = json.load(f)["metrics"]
    data = str(tmp_path / "toybirds")  # a copy: the evaluation caches the evaluators in DATA/cache
    shutil.copytree(default_prep, data, ignore=shutil.ignore_patterns("cache"))
    res = CliRunner().invoke(main, ["eval", "--metric", "all", "--data", data, "--n-samples", "300", "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)["metrics"]
    attr = m["attr"]
    assert attr["model"] == model and attr["classifier_shipped"]
    # ~1000 mentions: a standard error of about 0.011
    assert attr["accuracy"] > shipped["attr"]["accuracy"] - 0.04
    assert min(attr["per_attribute"][k] for k in ("body", "wing")) > 0.9
    assert m["rprecision"]["mean"] > 0.9
    assert m["fid"]["backbone"] == "data" and m["fid"]["value"] < 300


def test_shipped_evaluators_match_a_fresh_default_prep(default_prep, monkeypatch):
    """The networks in t2icli/pretrained/evaluators/ are the default `t2i prep toybirds` folder's: a fresh default
    prep loads both without training, and they read the real test birds as their recorded accuracy says."""
    import t2icli.pretrained as pretrained
    from t2icli.data import PreparedDataset
    from t2icli.metrics import attributes, data_fid

    if not all(os.path.isfile(pretrained.evaluator_path(f)) for f in pretrained.EVALUATORS):
        pytest.skip("this checkout ships no evaluation networks")
    data = default_prep
    monkeypatch.setattr(attributes, "train_attribute_classifier", lambda *a, **k: pytest.fail("trained"))
    clf, info = attributes.load_or_train_classifier(data)
    net, ninfo = data_fid.load_or_train_feature_network(data)
    assert info["shipped"] and ninfo["shipped"]
    test = PreparedDataset(data, "test", train=False)
    pred = attributes.predict_attributes(clf, test.images_uint8, info["size"])
    assert (pred == test.attributes).mean() == pytest.approx(info["real_test"]["overall"])  # micro average
    assert info["real_test"]["overall"] > 0.95 and min(ninfo["real_test_accuracy"].values()) > 0.9
