"""scripts/gpu_check.py, the GPU proving run, exercised on the CPU: its report, its exit status, its targets."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_check.py")


def _gpu_check(tmp_path, *args, timeout=600):
    out = tmp_path / "report.json"
    res = subprocess.run([sys.executable, SCRIPT, "--device", "cpu", "--quick", "--out", str(out),
                          "--work", str(tmp_path / "work"), *args], capture_output=True, text=True, timeout=timeout)
    return res, (json.loads(out.read_text()) if out.exists() else None)


def _ratios(loop, ref, attn_time, attn_mem):
    return {"damsm_M48": {"kind": "damsm", "ratios": {"loop/ext": {"fwd_bwd": loop}, "reference/ext": {"fwd_bwd": ref}}},
            "attn_64x64": {"kind": "attn", "ratios": {"reference/ext": {"fwd_bwd": attn_time, "peak_mb": attn_mem}}}}


def test_bench_ops_targets():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gc)
    met = {name: ok for name, _, _, ok in gc.ops_targets(_ratios(25.0, 2.5, 1.3, 4.0))}
    assert len(met) == 4 and all(met.values())
    missed = {name: (value, ok) for name, value, _, ok in gc.ops_targets(_ratios(19.9, 2.0, 0.9, 1.0))}
    assert missed["damsm_M48 fwd+bwd vs original loop"] == (19.9, False)
    assert missed["damsm_M48 fwd+bwd vs vectorised reference"] == (2.0, True)  # ">= 2x"
    assert missed["attn_64x64 fwd+bwd vs reference"] == (0.9, False)
    assert missed["attn_64x64 peak memory reference/ext"] == (1.0, False)  # "less memory": strictly


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_a_section_passes_and_the_report_says_so(tmp_path):
    res, report = _gpu_check(tmp_path, "--only", "selfcheck")
    assert res.returncode == 0, res.stderr[-3000:]
    assert report["ok"] is True and report["exit_status"] == 0 and report["gpu"] is False
    sc = report["sections"]["selfcheck"]
    assert sc["status"] == "pass" and {r["op"] for r in sc["results"]} == {"word_region_attention", "damsm_word_scores"}
    assert os.path.exists(sc["log"])
    assert "selfcheck       pass" in res.stdout and "OK; report:" in res.stdout


def test_a_section_that_does_not_fit_the_budget_fails_the_run(tmp_path):
    res, report = _gpu_check(tmp_path, "--only", "selfcheck", "--budget-min", "0.1")
    assert res.returncode == 1
    assert report["sections"]["selfcheck"]["status"] == "skipped"
    assert "out of time" in report["sections"]["selfcheck"]["why"] and report["ok"] is False


def test_unknown_section_is_an_error(tmp_path):
    res, report = _gpu_check(tmp_path, "--only", "selfcheck,warp_drive")
    assert res.returncode == 2 and report is None
    assert "--only selfcheck,warp_drive: choose from system, selfcheck" in res.stderr


@pytest.mark.slow  # the whole rehearsal: about 15 minutes on 2 busy cores
def test_full_cpu_rehearsal(tmp_path):
    res, report = _gpu_check(tmp_path, "--budget-min", "40", timeout=2700)
    assert set(report["sections"]) == {"system", "selfcheck", "tests", "bench_ops", "bench_train", "toybirds_run",
                                       "distributed", "bench_compile"}
    assert all(s["status"] == "pass" for s in report["sections"].values()), {
        k: (s["status"], s.get("why")) for k, s in report["sections"].items()}
