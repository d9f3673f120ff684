"""The training engine: one config per trainer (CLI options = config fields, config.json = the config, --config
reruns a run), the same run twice gives identical weights, and the shared loop's cadence and errors."""

import dataclasses
import json
import os

import click
import pytest
import torch
from click.testing import CliRunner

from t2icli.cli import main
from t2icli.errors import ConfigError
from t2icli.training.config import CONFIGS, PRESETS
from t2icli.training.run import find_latest_checkpoint, load_checkpoint

KINDS = ["damsm", "attngan", "stackgan2", "gancls", "stackgan"]
INVOCATION = {"config", "resume", "progress", "dry_run"}  # options that say how to run, not what: not config fields


def _command(kind):
    from t2icli.cli.train import train

    return train.get_command(click.Context(train), kind)


@pytest.mark.parametrize("kind", KINDS)
def test_every_option_is_a_config_field_with_its_default(kind):
    cls = CONFIGS[kind]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for p in _command(kind).params:
        if p.name in INVOCATION or p.name == "help":
            continue
        assert p.name in fields, f"--{p.name} of `t2i train {kind}` is not a field of {cls.__name__}"
        f = fields[p.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if p.name == "device":
            assert p.default == "auto"  # resolved to cpu/cuda by the CLI
        elif isinstance(default, list):
            assert p.multiple and default == [], p.name  # a repeatable flag: none given is the empty list
        else:
            assert p.default == default, (kind, p.name, p.default, default)


def test_same_flag_same_field_name_in_every_trainer():
    by_flag = {}
    for kind in KINDS:
        for p in _command(kind).params:
            for opt in p.opts:
                by_flag.setdefault(opt, set()).add(p.name)
    renamed = {flag: names for flag, names in by_flag.items() if len(names) > 1}
    assert not renamed, renamed
    assert by_flag["--steps"] == {"steps"} and by_flag["--keep"] == {"keep"} and by_flag["--compile"] == {"compile"}


def test_validation_names_the_flag(tmp_path):
    base = dict(data=str(tmp_path), damsm=str(tmp_path), out=str(tmp_path / "r"))
    (tmp_path / "w.pth").write_bytes(b"")
    bad = [("attngan", dict(batch_size=1), "--batch-size 1: must be >= 2"),
           ("attngan", dict(steps=3, epochs=2), "not both"),
           ("gancls", dict(interp_beta=1.5), "--interp-beta 1.5: must be <= 1"),
           ("damsm", dict(precision="fp16"), "--precision 'fp16': choose from fp32, bf16"),
           ("damsm", dict(inception_weights=str(tmp_path / "w.pth")), "only used with --image-encoder inception_v3"),
           ("damsm", dict(image_encoder="inception_v3", inception_weights=str(tmp_path)), "is a folder, not a file"),
           ("stackgan", dict(damsm=str(tmp_path / "nowhere")), "--damsm " + str(tmp_path / "nowhere")),
           ("attngan", dict(preset="cub-huge"), "--preset 'cub-huge'"),
           ("gancls", dict(prompts=["a red bird"], text_embeddings=str(tmp_path / "w.pth")), "--prompt needs"),
           ("stackgan", dict(prompts=["a red bird"], text_embeddings=str(tmp_path / "w.pth")), "--prompt needs"),
           ("stackgan2", dict(prompts=["a red bird"], text_embeddings=str(tmp_path / "w.pth")), "--prompt needs")]
    for kind, change, words in bad:
        cfg = CONFIGS[kind](**{k: v for k, v in dict(base, **change).items() if k in CONFIGS[kind].field_names()})
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
            cfg.validate()
    cfg = CONFIGS["attngan"](**base).validate()  # paths become absolute; lists stay lists
    assert os.path.isabs(cfg.out) and cfg.prompts == [] and cfg.kind == "attngan"


def test_config_file_of_another_trainer_or_version_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"kind": "gancls", "steps": 3}))
    r = CliRunner().invoke(main, ["train", "attngan", "--config", str(tmp_path / "config.json")])
    assert r.exit_code == 2 and "a gancls run's config" in r.output and "t2i train gancls" in r.output
    (tmp_path / "config.json").write_text(json.dumps({"kind": "attngan", "warp_drive": 9}))
    r = CliRunner().invoke(main, ["train", "attngan", "--config", str(tmp_path)])
    assert r.exit_code == 2 and "unknown option(s) warp_drive" in r.output


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_gan_setup):
    return tiny_gan_setup(tmp_path_factory.mktemp("engine"))


GAN = ["--stages", "2", "--steps", "3", "--batch-size", "4", "--gf-dim", "4", "--df-dim", "4", "--z-dim", "8",
       "--cond-dim", "8", "--snapshot-every", "2", "--no-progress", "--device", "cpu", "--damsm-augment", "--r1-gamma",
       "1"]


def _weights(run_dir):
    ckpt = load_checkpoint(find_latest_checkpoint(run_dir))
    return {f"{part}.{k}": v for part in ("G", "Ds", "G_ema") for k, v in ckpt[part].items()}


@pytest.mark.long
def test_same_run_twice_and_config_rerun_give_identical_weights(tiny, tmp_path):
    runs = {name: str(tmp_path / name) for name in ("a", "b", "c")}
    base = ["train", "attngan", "--data", tiny["data"], "--damsm", tiny["damsm"]]
    for name in ("a", "b"):
        r = CliRunner().invoke(main, base + ["--out", runs[name]] + GAN)
        assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["train", "attngan", "--config", os.path.join(runs["a"], "config.json"),
                                  "--out", runs["c"], "--no-progress"])
    assert r.exit_code == 0, r.output
    a, b, c = (_weights(runs[n]) for n in "abc")
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]), k
    cfg_a, cfg_c = (json.loads(open(os.path.join(runs[n], "config.json")).read()) for n in "ac")
    assert {k: v for k, v in cfg_a.items() if k != "out"} == {k: v for k, v in cfg_c.items() if k != "out"}
    assert set(cfg_a) == set(CONFIGS["attngan"].field_names())  # config.json is exactly the config's fields
    info = json.loads(open(os.path.join(runs["a"], "run.json")).read())
    assert info["kind"] == "attngan" and info["sizes"] == [16, 32] and info["world_size"] == 1
    stats = [json.loads(line) for line in open(os.path.join(runs["a"], "stats.jsonl"))]
    assert [r["step"] for r in stats if "snapshot" in r] == [0, 2, 3]  # step 0, every 2, the end
    assert [r["step"] for r in stats if "train" in r] == [1, 2, 3]


@pytest.mark.long
def test_config_rerun_with_flags_overriding(tiny, tmp_path):
    a = str(tmp_path / "a")
    r = CliRunner().invoke(main, ["train", "stackgan2", "--data", tiny["data"], "--damsm", tiny["damsm"], "--out", a,
                                  "--preset", "toybirds-cpu", "--steps", "1", "--batch-size", "4", "--snapshot-every",
                                  "1000", "--no-progress", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    cfg = json.loads(open(os.path.join(a, "config.json")).read())
    preset = PRESETS["stackgan2"]["toybirds-cpu"]
    assert cfg["stages"] == preset["stages"] and cfg["lr_g"] == preset["lr_g"] and cfg["prompts"] == preset["prompts"]
    assert cfg["steps"] == 1 and cfg["batch_size"] == 4 and cfg["preset"] == "toybirds-cpu"  # explicit flags win
    b = str(tmp_path / "b")
    r = CliRunner().invoke(main, ["train", "stackgan2", "--config", a, "--out", b, "--epochs", "1", "--seed", "3",
                                  "--no-progress"])
    assert r.exit_code == 0, r.output
    cfg_b = json.loads(open(os.path.join(b, "config.json")).read())
    # --epochs replaces the file's --steps (the two exclude each other); everything else comes from the file
    assert cfg_b["epochs"] == 1 and cfg_b["steps"] is None and cfg_b["seed"] == 3
    assert {k: v for k, v in cfg_b.items() if k not in ("out", "epochs", "steps", "seed")} == \
        {k: v for k, v in cfg.items() if k not in ("out", "epochs", "steps", "seed")}
    assert load_checkpoint(find_latest_checkpoint(b))["step"] == 40 // 4  # one epoch of 40 images


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_resume_logs_changed_settings(tiny, tmp_path):
    out = str(tmp_path / "r")
    args = ["train", "stackgan2", "--data", tiny["data"], "--damsm", tiny["damsm"], "--out", out, "--stages", "1",
            "--batch-size", "4", "--gf-dim", "4", "--df-dim", "4", "--z-dim", "8", "--cond-dim", "8", "--no-progress",
            "--device", "cpu"]
    assert CliRunner().invoke(main, args + ["--steps", "1"]).exit_code == 0
    r = CliRunner().invoke(main, args + ["--steps", "2", "--resume", "latest"])
    assert r.exit_code == 0, r.output
    log = open(os.path.join(out, "log.txt")).read()
    assert "resumed with other settings than config.json: steps: 1 -> 2" in log
    assert json.loads(open(os.path.join(out, "config.json")).read())["steps"] == 1  # the run's original config stays


def test_describe_changes_names_fields_an_older_config_lacks():
    """A run resumed from a config.json written before a field existed: the field is reported when it is set to
    other than its default (the old run could not have had it), not when it keeps the default."""
    from t2icli.training.config import AttnGANTrainConfig

    cfg = AttnGANTrainConfig(steps=2, color_consistency=True)
    old = cfg.to_dict()
    old["steps"] = 1
    del old["color_consistency"], old["cc_detach"]
    assert cfg.describe_changes(old) == ["steps: 1 -> 2", "color_consistency: not in config.json -> True"]
