"""The one-command demo at toy scale: `bash scripts/demo.sh --quick` runs every step and prints the results table."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.long  # left out by scripts/test.sh --fast


# About 65 s on a quiet 2-core CPU (install check, prep, damsm, attngan, sample, eval): part of CI,
# as the issue asks of the quick demo.
def test_demo_quick(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, T2I_DEMO_DIR=str(tmp_path / "demo"), PYTHON=sys.executable)
    res = subprocess.run(["bash", "scripts/demo.sh", "--quick"], cwd=root, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "R-precision (DM-GAN protocol" in res.stdout and "attribute accuracy" in res.stdout
    assert "demo finished in" in res.stdout
    samples = tmp_path / "demo" / "samples"
    pngs = sorted(os.listdir(samples))
    assert len(pngs) == 6 and sum(p.endswith("-attn.png") for p in pngs) == 3
    assert (tmp_path / "demo" / "real_vs_generated.png").stat().st_size > 1000
