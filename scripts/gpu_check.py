"""Runs every check of the GPU path in turn within one time budget and writes one JSON report; called by gpu_check.sh.

    python scripts/gpu_check.py --out docs/gpu/DATE-GPU.json          # what scripts/gpu_check.sh runs on a GPU
    python scripts/gpu_check.py --device cpu --quick --out /tmp/r.json  # a rehearsal of the plumbing on a CPU

Sections, in this order (each a subprocess with its own log under --work; a section that would not fit in what
is left of the budget is skipped and says so):
  system          nvidia-smi, versions of python/torch/CUDA/cuDNN/NCCL/triton/nvcc, `t2i env --json`
  selfcheck       the kernels' first-use self-check on every device, float32 and float64
  tests           the CUDA tests of the suite: `pytest -m "not slow" -k cuda` (CPU rehearsal: `-k cpu` in the
                  self-check and precision tests); passes only when some ran and none failed
  bench_ops       scripts/bench_ops.py --device cuda; targets (docs: DESIGN.md): DAMSM M=48 forward+backward
                  >= 20x the original loop and >= 2x the vectorised reference; attention faster than the
                  reference with less peak memory
  bench_train     scripts/bench_train.py --device cuda, the paper's CUB configuration, fp32 and bf16, fused
                  and reference ops
  toybirds_run    t2i prep toybirds -> train damsm -> train attngan (the CPU preset's networks, 300 steps) on the
                  GPU -> t2i eval --metric rprecision: the generated-image R-precision
  distributed     torchrun, one process per GPU (at most 2), scripts/dist_smoke.py: NCCL collectives, SyncBatchNorm's
                  CUDA path, a short AttnGAN run inside the NCCL group
  bench_compile   scripts/bench_train.py --compile: torch.compile of the same steps (last: compilation is slow)
The report: {"ok", "exit_status", "gpu", "date", "budget_s", "seconds", "sections": {name: {"status":
pass|fail|timeout|skipped, "seconds", "log", ...figures}}, "targets": {name: {"value", "target", "met"}}}.
Exit status: 0 every section passed and every target was met; 2 every section passed but a performance
target was missed; 1 a section failed, timed out or was skipped. Only the standard library is imported here:
whatever breaks in torch breaks in a section's subprocess, and the report still gets written.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

# DESIGN.md's "Numbers this project is held to" on a GPU, and the attention targets.
TARGET_DAMSM_VS_LOOP, TARGET_DAMSM_VS_REFERENCE = 20.0, 2.0


class Budget:
    """The wall-clock budget of the whole check (counted from `start`, so gpu_check.sh's install counts too)."""

    def __init__(self, start, seconds):
        self.start, self.seconds = start, seconds

    def left(self):
        return self.seconds - (time.time() - self.start)


class Check:
    """Runs sections' commands with timeouts and keeps their logs and results."""

    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.work)
        os.makedirs(self.work, exist_ok=True)
        self.budget = Budget(args.started_at or time.time(), args.budget_min * 60)
        self.sections = {}
        self.targets = {}
        self.device = args.device
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def run(self, log, cmd, timeout, env=None):
        """Runs cmd (list) in ROOT in its own process group, stdout captured, stderr appended to log; on timeout
        the whole group is killed. Returns (returncode or None on timeout, stdout text)."""
        path = os.path.join(self.work, log)
        with open(path, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=f, text=True,
                                    env={**self.env, **(env or {})}, start_new_session=True)
            try:
                out, _ = proc.communicate(timeout=max(timeout, 1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # torchrun and bench_train have children of their own
                out, _ = proc.communicate()
                f.write(f"\n[gpu_check: killed after {timeout:.0f} s]\n")
                return None, out
        with open(path, "a") as f:
            f.write(out[-20000:] if out else "")
        return proc.returncode, out

    def section(self, name, cap, fn, reserve=0.0):
        """Runs fn(timeout) -> dict (with "status") as section `name`, given min(cap, budget left - reserve)."""
        timeout = min(cap, self.budget.left() - reserve)
        t0 = time.time()
        if timeout < 10:
            res = {"status": "skipped", "why": f"out of time: {self.budget.left():.0f} s of the budget left"}
        else:
            print(f"gpu_check: {name} (up to {timeout:.0f} s) ...", file=sys.stderr, flush=True)
            try:
                res = fn(timeout)
            except Exception as exc:  # noqa: BLE001 - a broken section is reported, the others still run
                res = {"status": "fail", "why": f"{type(exc).__name__}: {exc}"}
        res["seconds"] = round(time.time() - t0, 1)
        res.setdefault("log", os.path.join(self.work, f"{name}.log"))
        self.sections[name] = res
        print(f"gpu_check: {name}: {res['status']} ({res['seconds']} s){' - ' + res['why'] if res.get('why') else ''}",
              file=sys.stderr, flush=True)
        return res

    def json_of(self, name, cmd, timeout, env=None):
        """Runs a command that prints one JSON object last on stdout; returns (status dict, parsed or None)."""
        rc, out = self.run(f"{name}.log", cmd, timeout, env)
        if rc is None:
            return {"status": "timeout", "why": f"killed after {timeout:.0f} s"}, None
        try:
            data = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            data = None
        if rc != 0 or data is None:
            return {"status": "fail", "why": f"exit status {rc}" + ("" if data is not None else ", no JSON on stdout")}, data
        return {"status": "pass"}, data

    def target(self, name, value, target, met):
        self.targets[name] = {"value": value, "target": target, "met": bool(met)}


# -- sections -------------------------------------------------------------------------------------------------------


def system(chk, timeout):
    """nvidia-smi, versions, t2i env."""
    res = {"status": "pass", "python": platform.python_version(), "platform": platform.platform()}
    if shutil.which("nvidia-smi"):
        rc, out = chk.run("system.log", ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap,"
                                         "clocks.max.sm,power.limit", "--format=csv,noheader"], timeout / 4)
        res["nvidia_smi"] = [line.strip() for line in (out or "").splitlines() if line.strip()]
        rc2, out2 = chk.run("system.log", ["nvidia-smi"], timeout / 4)
        res["nvidia_smi_table"] = out2
    code = ("import json, torch\n"
            "v = {'torch': torch.__version__, 'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(),\n"
            "     'cuda_available': torch.cuda.is_available(),\n"
            "     'gpus': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],\n"
            "     'capability': [list(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())],\n"
            "     'nccl': '.'.join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None}\n"
            "try:\n    import triton; v['triton'] = triton.__version__\nexcept Exception: v['triton'] = None\n"
            "print(json.dumps(v))")
    st, versions = chk.json_of("system", [PY, "-c", code], timeout / 4)
    res["versions"] = versions
    if shutil.which("nvcc"):
        _, out = chk.run("system.log", ["nvcc", "--version"], 30)
        m = re.search(r"release ([\d.]+)", out or "")
        res["nvcc"] = m.group(1) if m else None
    st2, env = chk.json_of("system", [PY, "-m", "t2icli", "env", "--json"], timeout / 4)
    res["t2i_env"] = env
    v, k = versions or {}, (env or {}).get("kernels", {})
    res["summary"] = (f"{'; '.join(res.get('nvidia_smi', [])) or 'no nvidia-smi'}; torch {v.get('torch')}, CUDA "
                      f"{v.get('cuda')}, cuDNN {v.get('cudnn')}, NCCL {v.get('nccl')}, triton {v.get('triton')}, nvcc "
                      f"{res.get('nvcc')}; t2i kernels {k.get('backend')} {k.get('device_kernels')}")
    if st["status"] != "pass" or st2["status"] != "pass":
        res.update(status="fail", why=st.get("why") or st2.get("why"))
    elif chk.device == "cuda" and not (versions or {}).get("cuda_available"):
        res.update(status="fail", why="torch sees no CUDA device")
    elif chk.device == "cuda" and "cuda" not in (env or {}).get("kernels", {}).get("device_kernels", []):
        res.update(status="fail", why=f"the t2i extension has no CUDA kernels: {(env or {}).get('kernels')}")
    return res


def selfcheck(chk, timeout):
    code = ("import json, torch, t2icli.ops as ops\n"
            "devs = ['cpu'] + [f'cuda:{i}' for i in range(torch.cuda.device_count())]\n"
            "print(json.dumps({'backend': ops.backend_info(), 'results': ops.selfcheck(devs, (torch.float32, torch.float64))}))")
    st, data = chk.json_of("selfcheck", [PY, "-c", code], timeout, env={"T2I_OPS_SELFCHECK": "1"})
    res = dict(st, results=(data or {}).get("results"))
    if st["status"] == "pass":
        recs = data["results"]
        bad = [f"{r['op']} on {r['device']} ({r['dtype']})" for r in recs if not r["ok"]]
        if bad:
            res.update(status="fail", why="failed: " + ", ".join(bad))
        elif chk.device == "cuda" and not any(r["device"].startswith("cuda") for r in recs):
            res.update(status="fail", why="no CUDA device was checked")
        else:
            res["summary"] = (f"{len(recs)} ok, max error "
                              f"{max(r['error'] for r in recs):.1e} (tolerance float32 1e-4, float64 1e-10)")
    return res


def tests(chk, timeout):
    xml = os.path.join(chk.work, "tests.xml")
    if chk.device == "cuda":
        select = ["-m", "not slow", "-k", "cuda"]
    else:  # rehearsal: the same machinery on a small CPU selection
        select = ["-m", "not slow", "-k", "cpu", "tests/test_selfcheck.py", "tests/test_precision.py"]
    cmd = [PY, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", f"--junitxml={xml}", *select]
    if chk.device == "cuda":
        cmd.append("tests")
    rc, out = chk.run("tests.log", cmd, timeout)
    if rc is None:
        return {"status": "timeout", "why": f"killed after {timeout:.0f} s"}
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed = []
    if os.path.exists(xml):
        root = ET.parse(xml).getroot()
        for suite in ([root] if root.tag == "testsuite" else root.findall("testsuite")):
            for k in counts:
                counts[k] += int(suite.get(k, 0))
            for case in suite.iter("testcase"):
                if case.find("failure") is not None or case.find("error") is not None:
                    failed.append(f"{case.get('classname')}::{case.get('name')}")
    ran = counts["tests"] - counts["skipped"]
    res = {"status": "pass", "selection": " ".join(select), **counts, "passed": ran - counts["failures"] - counts["errors"],
           "failed_tests": failed, "summary": (out or "").strip().splitlines()[-1:] }
    if rc != 0 or failed:
        res.update(status="fail", why=f"pytest exit status {rc}: {len(failed)} failed")
    elif ran == 0:
        res.update(status="fail", why="no test ran (all deselected or skipped)")
    return res


def bench_ops(chk, timeout):
    cmd = [PY, "scripts/bench_ops.py", "--device", chk.device, "--json"]
    if chk.args.quick:
        cmd += ["--cases", "damsm_M48", "attn_64x64", "--repeat", "1"]
    st, data = chk.json_of("bench_ops", cmd, timeout)
    res = dict(st, result=data)
    if data:
        cases = data["cases"]
        res["summary"] = {name: {k: v["fwd_bwd"] for k, v in c["ratios"].items()} for name, c in cases.items()}
        for t in ops_targets(cases):
            chk.target(*t)
    return res


def ops_targets(cases):
    """bench_ops.py's "cases" -> [(target name, measured ratio, target, met)]: DAMSM M=48 forward+backward >= 20x the
    original loop and >= 2x the vectorised reference; every attention case faster than the reference (forward +
    backward) with less peak memory."""
    out = []
    if "damsm_M48" in cases:
        r = cases["damsm_M48"]["ratios"]
        out.append(("damsm_M48 fwd+bwd vs original loop", r["loop/ext"]["fwd_bwd"], f">= {TARGET_DAMSM_VS_LOOP}x",
                    r["loop/ext"]["fwd_bwd"] >= TARGET_DAMSM_VS_LOOP))
        out.append(("damsm_M48 fwd+bwd vs vectorised reference", r["reference/ext"]["fwd_bwd"],
                    f">= {TARGET_DAMSM_VS_REFERENCE}x", r["reference/ext"]["fwd_bwd"] >= TARGET_DAMSM_VS_REFERENCE))
    for name, c in cases.items():
        if c["kind"] == "attn":
            r = c["ratios"]["reference/ext"]
            out.append((f"{name} fwd+bwd vs reference", r["fwd_bwd"], "> 1x", r["fwd_bwd"] > 1))
            out.append((f"{name} peak memory reference/ext", r["peak_mb"], "> 1x", r["peak_mb"] > 1))
    return out


def _bench_train(chk, name, timeout, compile):
    """bench_train.py per model (so a timeout keeps the models already measured)."""
    configs = "toybirds" if chk.args.quick else "cub"
    iters, warmup = ("1", "1") if chk.args.quick else ("5", "2")
    rows, ratios, res = [], {}, {"status": "pass"}
    t_end = time.time() + timeout
    for model in ("attngan", "damsm"):
        cmd = [PY, "scripts/bench_train.py", "--device", chk.device, "--configs", configs, "--models", model,
               "--iters", iters, "--warmup", warmup, "--json"]
        cmd += ["--compile", "--backends", "ext"] if compile else ["--backends", "ext,ref"]
        st, data = chk.json_of(name, cmd, t_end - time.time())
        if data:
            rows += data["cases"]
            ratios.update(data["ratios"])
        if st["status"] != "pass":
            res = dict(st, why=f"{model}: {st.get('why')}")
            break
    res.update(cases=rows, ratios=ratios)
    res["summary"] = {f"{r['config']}/{r['model']}/{r['precision']}/{r['backend']}{'/compiled' if r['compile'] else ''}":
                      f"{r['images_per_s']} img/s, peak {r['peak_mb']} MB" + (
                          f", first step {r['first_step_s']} s" if r["compile"] else "") for r in rows}
    if compile and "bench_train" in chk.sections:  # compiled vs eager, same case
        eager = {(r["config"], r["model"], r["precision"]): r for r in chk.sections["bench_train"].get("cases", [])
                 if r["backend"] == "ext"}
        res["speedup_vs_eager"] = {f"{r['config']}/{r['model']}/{r['precision']}":
                                   round(r["images_per_s"] / eager[k]["images_per_s"], 2)
                                   for r in rows if (k := (r["config"], r["model"], r["precision"])) in eager}
        for key, x in res["speedup_vs_eager"].items():
            res["summary"][key + "/ext/compiled"] += f", {x}x eager"
    return res


def toybirds_run(chk, timeout):
    """prep -> damsm -> attngan 300 steps -> eval rprecision, on the device."""
    w = os.path.join(chk.work, "toybirds")
    shutil.rmtree(w, ignore_errors=True)
    q = chk.args.quick
    t2i = [PY, "-m", "t2icli"]
    t_end = time.time() + timeout
    steps = 20 if q else 300
    plan = [
        ("prep", t2i + ["prep", "toybirds", "--out", f"{w}/data"] +
         (["--size", "32", "--n-train", "200", "--n-test", "100", "--captions-per-image", "2"] if q else
          ["--n-train", "4000", "--n-test", "1000", "--captions-per-image", "5"])),
        ("damsm", t2i + ["train", "damsm", "--data", f"{w}/data", "--out", f"{w}/damsm", "--device", chk.device,
                         "--no-progress"] + (["--steps", "10"] if q else
                                             ["--steps", "2000", "--max-minutes", "1", "--workers", "4"])),
        ("attngan", t2i + ["train", "attngan", "--data", f"{w}/data", "--damsm", f"{w}/damsm", "--out", f"{w}/attngan",
                           "--preset", "toybirds-cpu", "--steps", str(steps), "--snapshot-every", str(steps),
                           "--device", chk.device, "--no-progress"] + (["--stages", "1"] if q else ["--workers", "4"])),
    ]
    res = {"status": "pass", "steps": steps, "stages_s": {}}
    for stage, cmd in plan:
        t0 = time.time()
        rc, _ = chk.run("toybirds_run.log", cmd, t_end - time.time())
        res["stages_s"][stage] = round(time.time() - t0, 1)
        if rc != 0:
            return dict(res, status="timeout" if rc is None else "fail", why=f"{stage}: exit status {rc}")
    n = "100" if q else "1000"
    st, rp = chk.json_of("toybirds_run", t2i + ["eval", "--metric", "rprecision", "--model", f"{w}/attngan", "--data",
                                                f"{w}/data", "--n-samples", n, "--device", chk.device, "--json"],
                         t_end - time.time())
    res["rprecision"] = rp
    res["data"], res["damsm"] = f"{w}/data", f"{w}/damsm"
    stats = os.path.join(w, "attngan", "stats.jsonl")
    if os.path.exists(stats):
        recs = [json.loads(line) for line in open(stats) if line.strip()]
        res["train_stats_last"] = recs[-1] if recs else None
    if st["status"] != "pass":
        return dict(res, **st)
    res["summary"] = f"generated R-precision {rp['mean']:.3f} ± {rp['std']:.3f} after {steps} steps (n={rp.get('n')})"
    return res


def distributed(chk, timeout):
    run = chk.sections.get("toybirds_run", {})
    if run.get("status") != "pass":
        return {"status": "skipped", "why": "needs the toybirds run's data and DAMSM"}
    if chk.device == "cuda":
        code = "import torch; print(torch.cuda.device_count())"
        _, out = chk.run("distributed.log", [PY, "-c", code], 60)
        nproc = max(1, min(2, int((out or "1").strip().splitlines()[-1])))
    else:
        nproc = 2
    cmd = [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "scripts/dist_smoke.py",
           "--data", run["data"], "--damsm", run["damsm"], "--out", os.path.join(chk.work, "dist_run"),
           "--device", chk.device, "--json"]
    shutil.rmtree(os.path.join(chk.work, "dist_run"), ignore_errors=True)
    st, data = chk.json_of("distributed", cmd, timeout)
    res = dict(st, nproc=nproc, result=data)
    if data:
        res["summary"] = (f"{data['backend']} x {data['world']}: collectives {all(data['collectives'].values())}, "
                          f"sync_bn {data['sync_bn'].get('ok')}, {data['train']['steps']} training steps")
    return res


# -- report ---------------------------------------------------------------------------------------------------------


def _line(name, s):
    figs = s.get("summary") or s.get("why") or ""
    if isinstance(figs, dict):
        figs = "; ".join(f"{k}: {v}" for k, v in figs.items())
    elif isinstance(figs, list):
        figs = " ".join(figs)
    return f"{name:<15} {s['status']:<8} {s['seconds']:>7.1f}  {figs}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the JSON report")
    p.add_argument("--work", default=os.environ.get("T2I_GPU_CHECK_DIR", "/tmp/t2i_gpu_check"), metavar="DIR",
                   help="logs, data and runs of the sections")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: a rehearsal of the plumbing")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU rehearsal)")
    p.add_argument("--budget-min", type=float, default=8.0, metavar="MIN", help="the whole check's time budget")
    p.add_argument("--started-at", type=float, default=None, metavar="EPOCH", help="when the budget started")
    p.add_argument("--install-seconds", type=float, default=None, metavar="S", help="gpu_check.sh's install time")
    p.add_argument("--only", default=None, metavar="LIST", help="comma-separated sections to run (default: all)")
    args = p.parse_args()
    chk = Check(args)
    plan = [("system", 120, system), ("selfcheck", 120, selfcheck), ("tests", 300, tests),
            ("bench_ops", 180, bench_ops), ("bench_train", 240, lambda c, t: _bench_train(c, "bench_train", t, False)),
            ("toybirds_run", 300, toybirds_run), ("distributed", 150, distributed),
            ("bench_compile", 420, lambda c, t: _bench_train(c, "bench_compile", t, True))]
    only = None if args.only is None else {s.strip() for s in args.only.split(",") if s.strip()}
    if only is not None and not only <= {name for name, _, _ in plan}:
        p.error(f"--only {args.only}: choose from {', '.join(name for name, _, _ in plan)}")
    scale = 1 if args.device == "cuda" else 3  # the CPU rehearsal's sections are slower than a GPU's
    for name, cap, fn in plan:
        if only is None or name in only:
            chk.section(name, cap * scale, lambda t, fn=fn: fn(chk, t))
    sections_ok = all(s["status"] == "pass" for s in chk.sections.values())
    targets_ok = all(t["met"] for t in chk.targets.values())
    status = 0 if sections_ok and targets_ok else (2 if sections_ok else 1)
    sysinfo = chk.sections.get("system", {})
    versions = sysinfo.get("versions") or {}
    report = {
        "t2i_gpu_check": 1, "ok": status == 0, "exit_status": status, "gpu": args.device == "cuda",
        "gpu_name": (versions.get("gpus") or [None])[0], "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "budget_s": args.budget_min * 60, "install_s": args.install_seconds,
        "seconds": round(time.time() - chk.budget.start, 1), "quick": args.quick, "work": chk.work,
        "versions": versions, "sections": chk.sections, "targets": chk.targets,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1, default=str)
    os.replace(tmp, args.out)
    # the table (stdout): what a person reads at the end of the run
    head = (f"t2i gpu_check on {report['gpu_name'] or args.device}: torch {versions.get('torch')}, CUDA "
            f"{versions.get('cuda')}, {report['seconds']:.0f} s of a {report['budget_s']:.0f} s budget"
            + (f" (install {args.install_seconds:.0f} s)" if args.install_seconds is not None else ""))
    print(head)
    print(f"{'section':<15} {'status':<8} {'seconds':>7}  figures")
    for name, s in chk.sections.items():
        print(_line(name, s))
    for name, t in chk.targets.items():
        print(f"  target {name}: {t['value']} ({t['target']}): {'met' if t['met'] else 'MISSED'}")
    print(f"{'OK' if status == 0 else 'FAILED' if status == 1 else 'targets missed'}; report: {args.out}")
    sys.exit(status)


if __name__ == "__main__":
    main()
