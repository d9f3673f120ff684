"""--tensorboard on every trainer: the stats.jsonl scalars and the snapshot pictures, read back from the event file."""

import glob
import os
import sys

import pytest
from click.testing import CliRunner

from t2icli.cli import main

if os.environ.get("CI") != "true":  # CI must run these (scripts/test.sh installs the extra); elsewhere they may skip
    pytest.importorskip("tensorboard", reason="the optional tensorboard extra is not installed")

TINY = {
    "damsm": ["--batch-size", "8", "--small-width", "4", "--steps", "5"],
    "attngan": ["--stages", "2", "--steps", "2", "--snapshot-every", "1", "--gf-dim", "4", "--df-dim", "4"],
    "stackgan2": ["--stages", "1", "--steps", "2", "--snapshot-every", "1", "--gf-dim", "4", "--df-dim", "4"],
    "gancls": ["--steps", "2", "--snapshot-every", "1", "--gf-dim", "4", "--df-dim", "4"],
    "stackgan": ["--stage1-steps", "1", "--stage2-steps", "1", "--snapshot-every", "1", "--gf-dim", "4", "--df-dim",
                 "4", "--res-blocks", "1"],
}
GAN = ["--batch-size", "4", "--z-dim", "8", "--log-every", "1"]
EXPECT = {  # scalars and images each kind must log
    "damsm": ({"test/loss", "test_rprecision/mean", "train/loss", "lr"}, {"attention"}),
    "attngan": ({"train/d", "train/g", "train/damsm", "gen_rprecision/mean", "images_per_s", "lr/opt_G"},
                {"fakes", "attention"}),
    "stackgan2": ({"train/d", "train/cc", "gen_rprecision/mean", "lr/opt_D"}, {"fakes"}),
    "gancls": ({"train/d", "train/g_int", "gen_rprecision/mean", "lr/opt_G"}, {"fakes"}),
    "stackgan": ({"train/kl", "gen_rprecision/mean", "lr/opt_G[1]"}, {"fakes"}),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_gan_setup):
    return tiny_gan_setup(tmp_path_factory.mktemp("tb"))


@pytest.mark.long
@pytest.mark.parametrize("kind", list(TINY))
def test_tensorboard_event_file_holds_scalars_and_pictures(tiny, tmp_path, kind):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / kind
    args = ["train", kind, "--data", tiny["data"], "--out", str(out), "--tensorboard", "--no-progress", "--device",
            "cpu", *TINY[kind]]
    if kind != "damsm":
        args += ["--damsm", tiny["damsm"], *GAN] + (["--cond-dim", "8"] if kind != "gancls" else [])
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    events = glob.glob(str(out / "tensorboard" / "events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars, images = set(acc.Tags()["scalars"]), set(acc.Tags()["images"])
    want_scalars, want_images = EXPECT[kind]
    assert want_scalars <= scalars, (kind, sorted(scalars))
    assert want_images <= images, (kind, sorted(images))
    last = acc.Scalars(sorted(want_scalars)[0])[-1]
    assert last.step >= 1
    if "fakes" in images:  # a grid at step 0 and at the end, at least
        assert len(acc.Images("fakes")) >= 2 and acc.Images("fakes")[-1].width > 0


def test_tensorboard_missing_is_a_clear_error_before_training(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["train", "damsm", "--data", tiny["data"], "--out", str(out), "--tensorboard",
                                  "--no-progress"])
    assert r.exit_code == 2 and "--tensorboard needs the tensorboard package" in r.output
    assert "pip install -e .[tensorboard]" in r.output and not os.path.exists(out)
