"""Tests of `t2i sample`: one PNG per caption, noise fixed per image index, stages, attention pictures, interpolation, bad input."""

import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from t2icli.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from t2icli.data.toybirds import prepare_toybirds
    from test_eval import make_tiny_models

    root = tmp_path_factory.mktemp("tiny_sample")
    data = str(root / "tb")
    prepare_toybirds(data, size=32, n_train=20, n_test=5, captions_per_image=2, workers=1)
    gan, damsm = make_tiny_models(data, str(root))
    plain, _ = make_tiny_models(data, str(root / "plain"), attention=False)
    return {"data": data, "gan": gan, "plain": plain, "root": root}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_image_k_does_not_depend_on_n_or_batch(tiny):
    from t2icli.metrics.generate import load_model

    model = load_model(tiny["gan"])
    ids, _ = model.encode("a small red bird")
    tok = torch.tensor([ids])
    a = model.generate(tok.expand(2, -1), torch.tensor([len(ids)] * 2), np.arange(2), seed=3)["images"][-1]
    b = model.generate(tok.expand(5, -1), torch.tensor([len(ids)] * 5), np.arange(5), seed=3, batch_size=2)["images"][-1]
    assert torch.allclose(a, b[:2], atol=1e-5)
    c = model.generate(tok.expand(2, -1), torch.tensor([len(ids)] * 2), np.arange(2), seed=4)["images"][-1]
    assert not torch.allclose(a, c)


def test_sample_one_png_per_caption_with_attention(tiny, tmp_path):
    out = tmp_path / "pics"
    res = run("sample", "a small red bird", "a blue bird with a long beak", "--model", tiny["gan"], "--out", out,
              "--n", 3, "--save-attn", "--device", "cpu")
    assert res.exit_code == 0, res.output
    files = sorted(os.listdir(out))
    assert files == ["00-a_small_red_bird-attn.png", "00-a_small_red_bird.png",
                     "01-a_blue_bird_with_a_long_beak-attn.png", "01-a_blue_bird_with_a_long_beak.png"]
    assert set(res.stdout.split()) == {str(out / f) for f in files}
    attn = Image.open(out / "00-a_small_red_bird-attn.png")
    assert attn.size[0] > 4 * 64  # the image plus one column per word ("a small red bird")


def test_sample_stage_all_is_taller_and_single_file(tiny, tmp_path):
    last, every = tmp_path / "last.png", tmp_path / "all.png"
    assert run("sample", "a red bird", "--model", tiny["gan"], "--out", last, "--n", 2).exit_code == 0
    assert run("sample", "a red bird", "--model", tiny["gan"], "--out", every, "--n", 2, "--stage", "all").exit_code == 0
    assert Image.open(every).size[1] > Image.open(last).size[1]
    two = run("sample", "a red bird", "a blue bird", "--model", tiny["gan"], "--out", tmp_path / "x.png", "--n", 1)
    assert two.exit_code == 0 and os.path.isfile(tmp_path / "x-00.png") and os.path.isfile(tmp_path / "x-01.png")


def test_interpolation_ends_are_the_two_captions(tiny, tmp_path):
    from t2icli.metrics.generate import load_model, to_uint8
    from t2icli.sample import interpolate

    model = load_model(tiny["gan"])
    res = interpolate(model, "a small red bird", "a large blue bird with a long beak", tmp_path / "line.png",
                      steps=4, n=2, seed=1)
    assert res["images"].shape[:2] == (4, 2) and os.path.isfile(res["png"])
    for col, text in ((0, "a small red bird"), (-1, "a large blue bird with a long beak")):
        ids, _ = model.encode(text)
        x = model.generate(torch.tensor([ids] * 2), torch.tensor([len(ids)] * 2), np.arange(2), seed=1)["images"][-1]
        assert np.abs(res["images"][col].astype(int) - to_uint8(x).astype(int)).max() <= 1
    cli = run("sample", "--interpolate", "a red bird", "a blue bird", "--steps", 3, "--model", tiny["gan"],
              "--out", tmp_path / "cli.png")
    assert cli.exit_code == 0 and os.path.isfile(tmp_path / "cli.png")


def test_sample_works_for_stackgan2_models(tiny, tmp_path):
    res = run("sample", "a red bird", "--model", tiny["plain"], "--out", tmp_path / "p.png", "--n", 2, "--stage", "all")
    assert res.exit_code == 0, res.output
    res = run("sample", "a red bird", "--model", tiny["plain"], "--out", tmp_path / "q.png", "--save-attn")
    assert res.exit_code == 1 and "attention" in res.output


def test_sample_oov_warns_and_bad_captions_exit_2(tiny, tmp_path):
    res = run("sample", "a red zorblax bird", "--model", tiny["gan"], "--out", tmp_path / "o.png", "--n", 1)
    assert res.exit_code == 0 and "zorblax" in res.stderr and "zorblax" not in res.stdout
    assert os.path.isfile(tmp_path / "o.png")
    for caption in ("", "   ", "zorblax quux"):
        res = run("sample", caption, "--model", tiny["gan"], "--out", tmp_path / "e.png")
        assert res.exit_code == 2, (caption, res.output)
        assert not os.path.exists(tmp_path / "e.png")
    assert run("sample", "--model", tiny["gan"], "--out", tmp_path / "n.png").exit_code == 2
    assert run("sample", "a bird", "--interpolate", "a", "b", "--model", tiny["gan"], "--out", tmp_path / "b.png").exit_code == 2
    assert run("sample", "a bird", "--model", tmp_path, "--out", tmp_path / "m.png").exit_code == 1
    assert run("sample", "a bird", "--model", tiny["gan"], "--out", tmp_path / "m.png", "--n", 0).exit_code == 2


def test_sample_without_model_uses_the_shipped_pretrained_model(tiny, tmp_path, monkeypatch):
    import shutil

    import t2icli.pretrained

    monkeypatch.setattr(t2icli.pretrained, "ROOT", str(tmp_path / "pretrained"))
    assert t2icli.pretrained.shipped_model() is None
    res = run("sample", "a red bird", "--out", tmp_path / "none.png")
    assert res.exit_code == 2 and "no --model given" in res.output and "--model RUN" in res.output
    assert not os.path.exists(tmp_path / "none.png")

    shutil.copytree(tiny["gan"], tmp_path / "pretrained" / "toybirds")
    assert t2icli.pretrained.shipped_model() == str(tmp_path / "pretrained" / "toybirds")
    res = run("sample", "a red bird", "--out", tmp_path / "red.png", "--n", 2, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "shipped pretrained toybirds model" in res.stderr and str(tmp_path / "pretrained" / "toybirds") in res.stderr
    assert res.stdout.split() == [str(tmp_path / "red.png")]  # stdout holds only the written paths
    given = run("sample", "a red bird", "--model", tiny["gan"], "--out", tmp_path / "given.png", "--n", 2)
    assert given.exit_code == 0 and "pretrained" not in given.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "red.png")), np.asarray(Image.open(tmp_path / "given.png")))


def test_grid_column_titles_stay_over_their_columns():
    """A column title wider than its tile is cut to the tile (ending ".."), so it never runs into the next column's
    title (scripts/real_vs_generated.py's --label "shipped (ema 0.99)" over 64 px tiles overwrote "#1"); a short
    title is drawn whole."""
    import numpy as np
    from PIL import Image, ImageDraw

    from t2icli.viz.grid import fit_text, image_grid

    tiles = [[np.zeros((64, 64, 3), np.uint8)] * 3]
    long = "a_column_title_far_wider_than_its_tile"
    band = lambda g: np.asarray(g)[:14]  # noqa: E731  the title band [14, W, 3]
    cut = band(image_grid(tiles, col_labels=[long, "", ""], pad=2))
    # the second column's part of the band (x from 2 + 66) is white: nothing spilled over
    assert (cut[:, 2 + 66:] == 255).all() and (cut[:, :66] < 255).any()
    uncut = band(image_grid(tiles, col_labels=["#1", "", ""]))
    assert (uncut[:, 2 + 66:] == 255).all() and (uncut[:, :66] < 255).any()
    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    assert fit_text(draw, "#1", 62) == "#1"
    short = fit_text(draw, long, 62)
    assert short.endswith("..") and draw.textlength(short) <= 62 and long.startswith(short[:-2])
