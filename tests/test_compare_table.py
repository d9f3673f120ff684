"""scripts/compare_table.py (the table of scripts/compare.sh, docs/RESULTS.md) on a work folder written by hand: each
column read from where the runs and `t2i eval --metric all --json` write it."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(out, name, weight, rp, attr, fid):
    """One run folder as t2i writes it (run.json: what was built; config.json: the resolved flags; stats.jsonl) and
    its evaluation (OUT/eval/NAME-s0.json)."""
    run = out / "runs" / f"{name}-s0"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"kind": "attngan", "sizes": [16, 32, 64]}))
    (run / "config.json").write_text(json.dumps({"damsm_weight": weight, "steps": 1000000}))
    (run / "stats.jsonl").write_text(json.dumps({"step": 1200, "final": True, "train_seconds": 240.0}) + "\n")
    (out / "eval").mkdir(exist_ok=True)
    metrics = {"rprecision": {"mean": rp, "negatives": 99, "real": {"mean": 0.9}},
               "attr": {"accuracy": attr, "real": {"accuracy": 0.99}},
               "fid": {"value": fid, "floor": 16.0}}
    (out / "eval" / f"{name}-s0.json").write_text(json.dumps({"metrics": metrics}))


def test_table_reads_the_damsm_weight_and_scores_data_fid_lower_is_better(tmp_path):
    out = tmp_path / "cmp"
    _run(out, "attngan3", 5.0, 0.70, 0.42, 500.0)
    _run(out, "attngan3-nodamsm", 0.0, 0.09, 0.27, 900.0)
    results = tmp_path / "RESULTS.md"
    res = subprocess.run([sys.executable, "scripts/compare_table.py", "--out", str(out), "--results", str(results),
                          "--minutes", "4", "--seeds", "0", "--models", "attngan3 attngan3-nodamsm"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    text = results.read_text()
    rows = {line.split(" | ")[0]: line.split(" | ") for line in text.splitlines() if line.startswith("| AttnGAN")}
    # the weight is a training flag: config.json, not run.json (the table once read 0 for every model)
    assert rows["| AttnGAN, 3 stages"][2] == "5"
    assert rows["| AttnGAN, 3 stages, no DAMSM loss"][2] == "0"
    assert rows["| AttnGAN, 3 stages"][7] == "500.0 (1 seed)"
    claim = next(line for line in text.splitlines() if line.startswith("- **The DAMSM term helps"))
    # the lower data-FID wins: 500 against 900 holds, with the signed difference as measured
    assert "holds: data-FID 500.0 vs 900.0 (difference -400.0" in claim
    assert "holds: R-precision 0.700 vs 0.090" in claim
