"""The `t2i` command line: help of every command, `env`, toybirds prep end to end, bad input."""

import filecmp
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from t2icli.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_top_level_help_lists_commands():
    res = run("--help")
    assert res.exit_code == 0
    for name in ("prep", "train", "sample", "eval", "env", "serve"):
        assert f"  {name} " in res.output


def test_help_is_instant_and_does_not_import_torch():
    code = "import sys; from t2icli.cli import main; sys.argv=['t2i','--help']\ntry: main()\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_python_dash_m_works():
    res = subprocess.run([sys.executable, "-m", "t2icli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "prep" in res.stdout


@pytest.mark.parametrize("cmd", [["prep"], ["prep", "toybirds"], ["prep", "cub"], ["prep", "flowers"],
                                 ["prep", "coco"], ["prep", "folder"], ["env"], ["sample"], ["eval"], ["train"],
                                 ["serve"]])
def test_every_command_has_help(cmd):
    res = run(*cmd, "--help")
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output


def test_every_option_has_metavar_type_and_default():
    """House style: each option of each leaf command shows a metavar/type and a default (flags excepted)."""
    import click

    def leaves(cmd, ctx):
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                yield from leaves(cmd.get_command(ctx, name), ctx)
        else:
            yield cmd

    ctx = click.Context(main)
    for cmd in leaves(main, ctx):
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.is_flag or p.name in ("help",):
                continue
            assert p.metavar or isinstance(p.type, click.Choice), f"{cmd.name} {p.opts}: no metavar"
            no_default = p.default is None or str(p.default).endswith("UNSET")  # click >= 8.3 uses a sentinel
            assert p.required or p.show_default or no_default, f"{cmd.name} {p.opts}: default not shown"


def test_env_json():
    res = run("env", "--json")
    assert res.exit_code == 0
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"python", "torch", "t2icli", "kernels", "devices"} <= set(info)
    assert info["kernels"]["backend"] in ("ext", "ref")


def test_prep_toybirds_twice_gives_identical_folders(tmp_path):
    for name in ("a", "b"):
        res = run("prep", "toybirds", "--out", tmp_path / name, "--n-train", 40, "--n-test", 10, "--size", 32)
        assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["splits"]["train"]["images"] == 40
    cmp = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    for sub in cmp.subdirs.values():
        assert not sub.diff_files and not sub.left_only and not sub.right_only
    for split in ("train", "test"):
        for f in os.listdir(tmp_path / "a" / split):
            assert filecmp.cmp(tmp_path / "a" / split / f, tmp_path / "b" / split / f, shallow=False), f
    meta = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert meta["source"] == "toybirds" and meta["word_limit"] == 18 and meta["image_size"] == 32
    attrs = np.load(tmp_path / "a" / "train" / "attributes.npy")
    assert attrs.shape[0] == 40


def test_prep_toybirds_bad_inputs(tmp_path):
    res = CliRunner().invoke(main, ["prep", "toybirds", "--out", str(tmp_path / "x"), "--size", "0"])
    assert res.exit_code == 2 and "--size" in res.output
    res = CliRunner().invoke(main, ["prep", "toybirds", "--out", str(tmp_path / "x"), "--n-train", "-5"])
    assert res.exit_code == 2 and "--n-train" in res.output
    res = CliRunner().invoke(main, ["prep", "toybirds"])
    assert res.exit_code == 2 and "--out" in res.output
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    res = CliRunner().invoke(main, ["prep", "toybirds", "--out", str(tmp_path / "mine"), "--n-train", "5", "--n-test", "5"])
    assert res.exit_code != 0 and "mine" in res.output and "not empty" in res.output
    assert os.listdir(tmp_path / "mine") == ["thesis.tex"]
