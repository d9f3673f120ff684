"""The networks at the papers' configurations against the reference code, and the one deliberate difference.

Every constant below is a parameter count of the reference network, counted outside this repository by
importing the reference's own model.py (AttnGAN, StackGAN-v2, StackGAN-Pytorch; torchvision 0.28's
inception_v3 for CNN_ENCODER) with the named config loaded, or, for GAN-INT-CLS, layer by layer from
main_cls_int.lua. The networks are built on the meta device: no memory, no time.
"""

import pytest
import torch

from t2icli.models import parameter_count
from t2icli.models.attngan import (Generator, GeneratorConfig, StageDiscriminator, build_discriminators,
                                   tiled_condition_conv3x3)
from t2icli.models.config import ModelConfigError
from t2icli.models.export import load_generator, read_generator, save_generator
from t2icli.models.damsm import DAMSMConfig, build_damsm

# AttnGAN's released vocabularies (its captions.pickle; text_encoder200.pth / text_encoder100.pth embed them).
CUB_VOCAB, COCO_VOCAB = 5450, 27297

# The reference counts (where each was counted: the tests below that check the models against them).
ATTNGAN_CUB = [7084592, 6313730, 19424002, 71858946]  # G, D_NET64, D_NET128, D_NET256 at bird_attn2.yml
ATTNGAN_COCO = [13811456, 13304450, 42800258, 160774274]  # at coco_attn2.yml
TEXT_ENCODER = {CUB_VOCAB: 2075320, COCO_VOCAB: 8629420}  # RNN_ENCODER at nhidden 256
IMAGE_ENCODER, IMAGE_ENCODER_TRAINED = 22506720, 721152  # CNN_ENCODER, and its two trained heads
STACKGAN2_CUB = [21239696, 5723906, 18834178, 71269122]  # G_NET, D_NET64/128/256 at birds_3stages.yml
STACKGAN_CUB = [10301248, 26290080, 5715713, 71269122]  # Stage-I (CA + G), Stage-II (CA + G), STAGE1_D, STAGE2_D
STACKGAN_COCO = [20020832, 37130480, 12407425, 159889538]  # at coco_s1.yml / coco_s2.yml
GANCLS_CUB = [18909699 - 4227, 4032321 - 2241]  # netG, netD of main_cls_int.lua less their zeroed conv biases
# main_cls.lua's netG and netD at scripts/train_coco.sh (ngf = ndf = 196, nt 128, large 0), counted layer by layer
# (lines 93-251): 41107551 and 36190301 parameters, of which 6471 and 6861 are the conv biases it zeroes before
# every pass (:321-322, 376-377).
GANCLS_COCO = [41107551 - 6471, 36190301 - 6861]


def _meta(build):
    with torch.device("meta"):
        return build()


def _counts_attngan(**cfg):
    gcfg = GeneratorConfig(image_size=256, stages=3, z_dim=100, cond_dim=100, text_dim=256, **cfg)
    G = _meta(lambda: Generator(gcfg))
    Ds = _meta(lambda: build_discriminators(gcfg))
    return [parameter_count(G)] + [parameter_count(D) for D in Ds]


@pytest.mark.parametrize("name,cfg,expected", [
    # taoxugit/AttnGAN code/model.py G_NET (397-447), D_NET64 (566-580), D_NET128 (584-603), D_NET256 (607-629)
    # at code/cfg/bird_attn2.yml:31-38 (DF_DIM 64, GF_DIM 32, Z_DIM 100, R_NUM 2, EMBEDDING_DIM 256) with
    # miscc/config.py:54 (CONDITION_DIM 100) ...
    ("cub", dict(gf_dim=32, df_dim=64, res_blocks=2), ATTNGAN_CUB),
    # ... and at code/cfg/coco_attn2.yml:31-38 (DF_DIM 96, GF_DIM 48, R_NUM 3).
    ("coco", dict(gf_dim=48, df_dim=96, res_blocks=3), ATTNGAN_COCO),
])
def test_attngan_generator_and_discriminators_match_the_reference(name, cfg, expected):
    assert _counts_attngan(**cfg) == expected


@pytest.mark.parametrize("vocab,text_expected", list(TEXT_ENCODER.items()))
def test_damsm_encoders_match_the_reference(vocab, text_expected):
    """AttnGAN code/model.py RNN_ENCODER (75-159) and CNN_ENCODER (162-267) as pretrain_DAMSM.py:168-169 builds
    them (nhidden = EMBEDDING_DIM 256, DAMSM/bird.yml:30 and DAMSM/coco.yml:29); CNN_ENCODER holds Inception-v3
    without AuxLogits and fc (22506720), of which its two heads train (721152)."""
    damsm = _meta(lambda: build_damsm(DAMSMConfig(vocab_size=vocab, image_encoder="inception_v3")))
    assert parameter_count(damsm.text_encoder) == text_expected
    assert parameter_count(damsm.image_encoder) == IMAGE_ENCODER
    trainable = sum(p.numel() for p in damsm.image_encoder.parameters() if p.requires_grad)
    assert trainable == IMAGE_ENCODER_TRAINED


def test_stackgan2_generator_and_discriminators_match_the_reference():
    """hanzhanggit/StackGAN-v2 code/model.py G_NET (234-283: widths halve along the tree, NEXT_STAGE_G's 3x3
    jointConv back to ngf) and D_NET64/128/256 (329-469, conditioned on mu: efg = EMBEDDING_DIM) at
    code/cfg/birds_3stages.yml:27-36 (EMBEDDING_DIM 128, DF_DIM 64, GF_DIM 64, Z_DIM 100, R_NUM 2, TEXT 1024)."""
    gcfg = GeneratorConfig(image_size=256, stages=3, gf_dim=64, df_dim=64, z_dim=100, cond_dim=128, text_dim=1024,
                           attention=False)
    assert gcfg.widths == [64, 32, 16]
    G = _meta(lambda: Generator(gcfg))
    Ds = _meta(lambda: build_discriminators(gcfg, condition_dim=gcfg.cond_dim))
    assert [parameter_count(G)] + [parameter_count(D) for D in Ds] == STACKGAN2_CUB


def test_stackgan2_unconditional_mode_matches_the_reference():
    """StackGAN-v2 with GAN.B_CONDITION False (code/model.py:140-143, 184-187, 260-264, 345-369; the rest of
    birds_3stages.yml): G from z alone, z tiled where c would be; Ds with one unconditional head."""
    gcfg = GeneratorConfig(image_size=256, stages=3, gf_dim=64, df_dim=64, z_dim=100, cond_dim=128, text_dim=1024,
                           attention=False, conditional=False)
    G = _meta(lambda: Generator(gcfg))
    Ds = _meta(lambda: build_discriminators(gcfg))
    assert [parameter_count(G)] + [parameter_count(D) for D in Ds] == [16472208, 2765569, 15875841, 68310785]
    small = GeneratorConfig(image_size=32, stages=2, gf_dim=4, df_dim=2, z_dim=5, text_dim=6, attention=False,
                            conditional=False)
    out = Generator(small)(torch.randn(3, 5), None, None, None)
    assert [tuple(x.shape) for x in out["images"]] == [(3, 3, 16, 16), (3, 3, 32, 32)] and out["mu"] is None
    D = build_discriminators(small)[1]
    assert D.logits(D(out["images"][1])).shape == (3,)
    with pytest.raises(ValueError, match="no conditional head"):
        D.logits(D(out["images"][1]), torch.randn(3, 6))
    with pytest.raises(ModelConfigError, match="no words to attend to"):
        GeneratorConfig(conditional=False).validate()


@pytest.mark.parametrize("cfg,expected", [
    # hanzhanggit/StackGAN-Pytorch code/model.py CA_NET (43-71), STAGE1_G (107-152), STAGE2_G (192-260; its own
    # layers, without the frozen Stage-I it holds), STAGE1_D (155-188), STAGE2_D (263-304) at the defaults of
    # code/miscc/config.py:26,48-54 (DATASET_NAME 'birds': CONDITION_DIM 128, DF_DIM 64, GF_DIM 128, R_NUM 4) ...
    (dict(gf_dim=128, df_dim=64, res_blocks=4), STACKGAN_CUB),
    # ... and at code/cfg/coco_s1.yml / coco_s2.yml:23-27 (DF_DIM 96, GF_DIM 192, R_NUM 2).
    (dict(gf_dim=192, df_dim=96, res_blocks=2), STACKGAN_COCO),
])
def test_stackgan_v1_matches_the_reference(cfg, expected):
    from t2icli.models.stackgan import StackGAN, StackGANConfig
    from t2icli.models.stackgan import build_discriminators as stackgan_ds

    scfg = StackGANConfig(image_size=256, z_dim=100, cond_dim=128, text_dim=1024, **cfg)
    G = _meta(lambda: StackGAN(scfg))
    D1, D2 = _meta(lambda: stackgan_ds(scfg))
    stage1 = parameter_count(G.ca1) + parameter_count(G.g1)
    stage2 = parameter_count(G.ca2) + parameter_count(G.g2)
    assert [stage1, stage2, parameter_count(D1), parameter_count(D2)] == expected
    assert parameter_count(G.ca1) == 1024 * 256 + 256  # CA_NET: FC(2 x 128) + ReLU
    assert D1.uncond is None and D2.uncond is not None  # get_uncond_logits: None in STAGE1_D, a head in STAGE2_D


def test_gancls_matches_the_reference():
    """reedscot/icml2016 main_cls_int.lua netG (99-168) and netD (171-226) with its opts (11-53: txtSize 1024,
    nt 128, nz 100, ngf 128, ndf 64). Torch7 gives every convolution a bias, but the script zeroes all of them
    before each forward pass (309-310, 394-395), so they compute nothing: the reference's 18909699 (G) and
    4032321 (D) parameters less those 4227 and 2241 zeroed conv biases."""
    from t2icli.models.gancls import CondDiscriminator, GanClsConfig, GanClsGenerator

    cfg = GanClsConfig(image_size=64, z_dim=100, text_dim=1024, proj_dim=128)
    assert cfg.gf_dim == 128 and cfg.df_dim == 64 and cfg.layout == "reference"
    G = _meta(lambda: GanClsGenerator(cfg))
    D = _meta(lambda: CondDiscriminator(64, 64, 1024, 128))
    assert [parameter_count(G), parameter_count(D)] == GANCLS_CUB


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_gancls_reference_layers_run_and_train_at_small_sizes():
    from t2icli.models.gancls import CondDiscriminator, GanClsConfig, GanClsGenerator

    for size in (16, 32, 64):
        G = GanClsGenerator(GanClsConfig(image_size=size, gf_dim=8, df_dim=4, z_dim=6, text_dim=10, proj_dim=5))
        D = CondDiscriminator(size, 4, 10, 5)
        x = G(torch.randn(3, 6), torch.randn(3, 10))["images"][0]
        assert x.shape == (3, 3, size, size)
        D.logits(D(x), torch.randn(3, 10)).sum().backward()
        assert all(p.grad is not None for p in G.parameters())


def test_exports_made_before_the_layouts_still_load(tmp_path):
    """Configs without the new fields come from exports made before them: they rebuild the networks of the
    time (StackGAN++ at constant width, StackGAN's GLU conditioning augmentation, GAN-INT-CLS's resize-convs)."""
    from t2icli.models.gancls import GanClsConfig, GanClsGenerator
    from t2icli.models.stackgan import StackGAN, StackGANConfig

    old = dict(image_size=32, stages=2, gf_dim=4, df_dim=4, z_dim=5, cond_dim=3, text_dim=6, attention=False,
               res_blocks=1)
    G = Generator(old)
    assert G.config.layout == "legacy" and G.config.widths == [4, 4] and G.f[0].joint[0].out_channels == 16
    assert Generator(dict(old, layout="reference")).config.widths == [4, 2]
    sg = StackGANConfig.from_dict(dict(image_size=32, gf_dim=4, df_dim=4, z_dim=5, cond_dim=3, text_dim=6,
                                       res_blocks=1))
    assert sg.ca == "glu" and StackGAN(sg).ca1.fc.out_features == 12
    gc = GanClsConfig.from_dict(dict(image_size=16, gf_dim=4, df_dim=4, z_dim=5, text_dim=6, proj_dim=3, cond_dim=0))
    assert gc.layout == "legacy" and any(isinstance(m, torch.nn.Upsample) for m in GanClsGenerator(gc).modules())
    # A round trip through the export keeps the layout (and the weights).
    from t2icli.models.text_encoder import TextEncoder

    G = Generator(GeneratorConfig(image_size=32, stages=2, gf_dim=4, df_dim=4, z_dim=5, cond_dim=3, text_dim=8,
                                  attention=False))
    dcfg = DAMSMConfig(vocab_size=3, hidden=4, embedding_dim=4)
    save_generator(tmp_path / "g.pt", "stackgan2", G, TextEncoder(3, 4, 4), dcfg, ["<end>", "a", "b"])
    assert read_generator(tmp_path / "g.pt")["config"]["layout"] == "reference"
    G2, _, config, _, _ = load_generator(tmp_path / "g.pt")
    assert config["layout"] == "reference" and all(torch.equal(a, b) for a, b in
                                                   zip(G.state_dict().values(), G2.state_dict().values()))


def test_stage_discriminators_of_toybirds_sizes():
    """Below 64 px (toybirds' first stages) the D's widths never reach 8df: one 3x3 block raises them to the
    8df code, as before; from 64 px up the path is the reference's D_NET64/128/256."""
    cfg = GeneratorConfig(image_size=64, stages=3, gf_dim=4, df_dim=2, text_dim=6)
    Ds = build_discriminators(cfg)
    convs = [[m.out_channels for m in D.encode if isinstance(m, torch.nn.Conv2d)] for D in Ds]
    assert convs == [[2, 4, 16], [2, 4, 8, 16], [2, 4, 8, 16]]  # 16 px, 32 px, 64 px (no 3x3 block at 64)
    for D, s in zip(Ds, cfg.sizes):
        code = D(torch.randn(2, 3, s, s))
        assert code.shape == (2, 16, 4, 4) and D.logits(code).shape == D.logits(code, torch.randn(2, 6)).shape == (2,)


def _reference_cond_logit(D, code, e_bar):
    """D_GET_LOGITS of taoxugit/AttnGAN code/model.py:536-562 (Block3x3_leakRelu :495) written out: the sentence tiled over the 4x4 code,
    concatenated after it, Block3x3_leakRelu (3x3 conv, BN, LeakyReLU), then the 4x4 conv to one logit."""
    conv, bn, act = D.joint
    tiled = e_bar[:, :, None, None].expand(-1, -1, code.shape[2], code.shape[3])
    h = act(bn(torch.nn.functional.conv2d(torch.cat([code, tiled], 1), conv.weight, padding=1)))
    return torch.nn.functional.conv2d(h, D.cond.weight, D.cond.bias, stride=4).view(-1)


@pytest.mark.parametrize("df_dim, cond_dim", [(2, 6), (4, 3)])
def test_discriminator_heads_equal_the_tiled_concatenation(df_dim, cond_dim):
    """StageDiscriminator.logits never tiles the sentence: the joint 3x3 conv is split into the code's share and
    the condition's (tiled_condition_conv3x3: per-tap products summed over the taps inside the 4x4 map), a list of
    conditions shares the code's share, and the 4x4 heads run as linear layers. Values and gradients (code, every
    weight) equal the reference's concatenation in float64, with BN in training mode (each condition's batch its
    own statistics, as one call per condition), and the unconditional head equals the 4x4 conv."""
    torch.manual_seed(0)
    D = StageDiscriminator(64, df_dim, cond_dim).double().train()
    with torch.no_grad():  # random BN affine and head bias, so that every term counts
        for p in D.parameters():
            p.normal_()
    code = torch.randn(5, 8 * df_dim, 4, 4, dtype=torch.float64, requires_grad=True)
    conds = [torch.randn(5, cond_dim, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    params = [code, *conds, D.joint[0].weight, D.joint[1].weight, D.cond.weight, D.cond.bias, D.uncond.weight]
    ref = [_reference_cond_logit(D, code, e) for e in conds] + [
        torch.nn.functional.conv2d(code, D.uncond.weight, D.uncond.bias, stride=4).view(-1)]
    ours = D.logits(code, conds) + [D.logits(code)]
    assert D.logits(code, conds[1]).shape == (5,) and torch.allclose(D.logits(code, conds[1]), ours[1])
    weights = torch.randn(3, 5, dtype=torch.float64)  # a loss that weighs every logit differently
    g_ref = torch.autograd.grad(sum((w * l).sum() for w, l in zip(weights, ref)), params)
    g_ours = torch.autograd.grad(sum((w * l).sum() for w, l in zip(weights, ours)), params)
    for a, b in zip(ref + list(g_ref), ours + list(g_ours)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
    # the tiled share alone, on a map that is not square: a plain convolution of the tiled condition
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    cond = torch.randn(2, 3, dtype=torch.float64)
    tiled = torch.nn.functional.conv2d(cond[:, :, None, None].expand(-1, -1, 3, 5), w, padding=1)
    assert torch.allclose(tiled_condition_conv3x3(cond, w, (3, 5)), tiled, rtol=1e-12, atol=1e-12)


# -- the deliberate difference: the attention mask ----------------------------------------------------
def _reference_masked_softmax(attn, mask):
    """What taoxugit/AttnGAN code/GlobalAttention.py:104-109 does: attn [B*queryL, sourceL] (rows ordered
    sample by sample), mask [B, sourceL] -> mask.repeat(queryL, 1) [queryL*B, sourceL] whose rows cycle
    through the samples, filled with -inf, softmax. Written here from the reference's description."""
    B, T = mask.shape
    query_len = attn.shape[0] // B
    rows = mask.repeat(query_len, 1)  # row r is sample r % B's mask, but attn's row r belongs to sample r // query_len
    return torch.softmax(attn.masked_fill(rows, float("-inf")), dim=1)


def test_reference_mask_repeat_attends_to_another_samples_padding():
    """The reference's mask.repeat(queryL, 1) gives attention row r (sample r // N, region r % N) the mask of
    sample r % B: with a 3-word and a 1-word caption, the 1-word caption's regions get the 3-word caption's mask
    on every other row and put weight on its own padding words. t2i's attention (ops.word_region_attention)
    masks each sample's own padding."""
    from t2icli import ops

    torch.manual_seed(0)
    B, C, T, N = 2, 4, 3, 4  # 2 samples, 3 word slots, 2 x 2 regions
    mask = torch.tensor([[False, False, False], [False, True, True]])  # sample 1 has 1 word + 2 padding
    h, e = torch.randn(B, C, N), torch.randn(B, C, T)
    scores = torch.einsum("bcn,bct->bnt", h, e).reshape(B * N, T)  # [B*N, T], rows ordered (b, n)
    ref = _reference_masked_softmax(scores, mask).reshape(B, N, T)
    padding_weight = ref[1][:, 1:].sum(1)  # sample 1's attention on its padding words, per region
    assert (padding_weight > 0.05).any()  # the reference attends to padding ...
    _, beta = ops.word_region_attention(h, e, mask, return_attn=True)  # beta [B, T, N]
    assert torch.all(beta[1, 1:] == 0) and torch.allclose(beta.sum(1), torch.ones(B, N))  # ... t2i never does
    assert torch.allclose(beta[1, 0], torch.ones(N))  # one real word: it gets all the weight


# -- the presets: `t2i train KIND --preset cub-paper|coco-paper --dry-run` builds the reference's networks --------
def _dry_run(*args):
    import json

    from click.testing import CliRunner

    from t2icli.cli import main

    r = CliRunner().invoke(main, ["train", *args, "--dry-run"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)  # exactly one JSON object on stdout


@pytest.mark.parametrize("kind,preset,expected", [
    ("damsm", "cub-paper", {"text_encoder": TEXT_ENCODER[CUB_VOCAB], "image_encoder": IMAGE_ENCODER}),
    ("damsm", "coco-paper", {"text_encoder": TEXT_ENCODER[COCO_VOCAB], "image_encoder": IMAGE_ENCODER}),
    ("attngan", "cub-paper", dict(zip(["G", "D64", "D128", "D256"], ATTNGAN_CUB), text_encoder=TEXT_ENCODER[CUB_VOCAB],
                                  image_encoder=IMAGE_ENCODER)),
    ("attngan", "coco-paper", dict(zip(["G", "D64", "D128", "D256"], ATTNGAN_COCO),
                                   text_encoder=TEXT_ENCODER[COCO_VOCAB], image_encoder=IMAGE_ENCODER)),
    ("stackgan2", "cub-paper", dict(zip(["G", "D64", "D128", "D256"], STACKGAN2_CUB))),
    ("stackgan", "cub-paper", dict(zip(["G_stage1", "G_stage2", "D64", "D256"], STACKGAN_CUB),
                                   G=STACKGAN_CUB[0] + STACKGAN_CUB[1])),
    ("stackgan", "coco-paper", dict(zip(["G_stage1", "G_stage2", "D64", "D256"], STACKGAN_COCO),
                                    G=STACKGAN_COCO[0] + STACKGAN_COCO[1])),
    ("gancls", "cub-paper", dict(zip(["G", "D"], GANCLS_CUB))),
    ("gancls", "coco-paper", dict(zip(["G", "D"], GANCLS_COCO))),
])
def test_dry_run_of_the_paper_presets_counts_the_reference_networks(kind, preset, expected):
    """With a paper preset, --dry-run needs neither --data nor --damsm: the preset's image size, vocabulary size and
    text dimension stand in, and every network's count equals the reference's."""
    out = _dry_run(kind, "--preset", preset)
    assert out["parameters"] == expected
    assert out["kind"] == kind and out["dry_run"] is True and out["config"]["preset"] == preset
    if kind == "damsm":
        assert out["trainable"]["image_encoder"] == IMAGE_ENCODER_TRAINED and out["model"]["image_size"] == 299


def test_gancls_coco_layout_is_main_cls_lua():
    """main_cls.lua's D (COCO) has a LeakyReLU after its third conv and no BatchNorm in its text projection."""
    from t2icli.models.gancls import CondDiscriminator

    ref, coco = CondDiscriminator(64, 4, 10, 5), CondDiscriminator(64, 4, 10, 5, layout="coco")
    acts = [sum(isinstance(m, torch.nn.LeakyReLU) for m in d.encode[:-1]) for d in (ref, coco)]
    assert acts == [2, 3]
    assert isinstance(ref.proj[1], torch.nn.BatchNorm1d) and not any(isinstance(m, torch.nn.BatchNorm1d)
                                                                    for m in coco.proj)
