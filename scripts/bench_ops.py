"""Benchmarks the t2i kernels against the original loop and the vectorised eager reference; prints one JSON object.

    python scripts/bench_ops.py --json                 # CPU
    python scripts/bench_ops.py --device cuda --json
    python scripts/bench_ops.py --cases damsm_M48 --repeat 3

For each case and variant (loop = the original per-caption algorithm, DAMSM only; reference =
vectorised eager PyTorch; ext = the compiled kernel as t2icli.ops runs it, which for the DAMSM score on the
CPU with gradients keeps its softmaxes for the backward where they fit in ops.SAVE_MAX_BYTES; ext_saved = the
CPU op that keeps them whatever their size): median ms of forward (no grad) and of
forward+backward, peak memory of one forward+backward above the inputs (CUDA: allocator peak;
CPU: peak RSS growth measured in a fresh subprocess), achieved GFLOP/s on the useful flops,
efficiency = GFLOP/s / the sgemm GFLOP/s of a 2048^3 matmul measured in the same run, and the
ratios loop/ext and reference/ext. Useful flops: 2 contractions of 2*M*N*D*sum(lengths) forward,
6 forward+backward (attention: B, C, N and the unmasked words in place of M, D, N, lengths): the algorithm's, also
where the CPU kernel needs fewer (the DAMSM score by the regions' Gram matrix, damsm_toy: efficiency can pass 1).
Progress and a readable table go to stderr; stdout gets only the JSON (with --json).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import t2icli.ops as ops  # noqa: E402
from t2icli.ops import reference as ref  # noqa: E402

G1, G2 = 4.0, 5.0
CASES = {
    "damsm_M48": dict(kind="damsm", M=48, D=256, T=18, N=289),
    "damsm_M96": dict(kind="damsm", M=96, D=256, T=18, N=289),
    "damsm_toy": dict(kind="damsm", M=48, D=256, T=18, N=64),  # toybirds' DAMSM batch: 8x8 regions (the CPU's Gram way)
    "attn_64x64": dict(kind="attn", B=20, C=32, T=18, N=64 * 64),
    "attn_128x128": dict(kind="attn", B=20, C=32, T=18, N=128 * 128),
}


def make_inputs(case, device, seed=0):
    """Random inputs of a case; lengths uniform in 5..T as in CUB captions."""
    g = torch.Generator().manual_seed(seed)
    if case["kind"] == "damsm":
        M, D, T, N = case["M"], case["D"], case["T"], case["N"]
        lengths = torch.randint(5, T + 1, (M,), generator=g)
        img, words = torch.randn(M, D, N, generator=g), torch.randn(M, D, T, generator=g)
        cot = torch.randn(M, M, generator=g)
        return dict(img=img.to(device), words=words.to(device), lengths=lengths.to(device), cot=cot.to(device))
    B, C, T, N = case["B"], case["C"], case["T"], case["N"]
    lengths = torch.randint(5, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] >= lengths[:, None]
    h, e = torch.randn(B, C, N, generator=g), torch.randn(B, C, T, generator=g)
    cot = torch.randn(B, C, N, generator=g)
    return dict(h=h.to(device), e=e.to(device), mask=mask.to(device), lengths=lengths, cot=cot.to(device))


def variants(kind, device="cpu"):
    """name -> fn(inputs dict, x, y) -> output tensor; x, y are the differentiable inputs."""
    if kind == "damsm":
        out = {
            "loop": lambda a, x, y: ref.damsm_word_scores_loop(x, y, a["lengths"], G1, G2),
            "reference": lambda a, x, y: ref.damsm_word_scores(x, y, a["lengths"], G1, G2),
            "ext": lambda a, x, y: ops.damsm_word_scores(x, y, a["lengths"], G1, G2),  # the kernel as t2i runs it
        }
        if device == "cpu":  # the CPU op that keeps its softmaxes whatever their size, for comparison
            out["ext_saved"] = lambda a, x, y: torch.ops.t2i.damsm_word_scores_save(x, y, a["lengths"], G1, G2)[0]
        return out
    return {
        "reference": lambda a, x, y: ref.word_region_attention(x, y, a["mask"]),
        "ext": lambda a, x, y: torch.ops.t2i.word_region_attention(x, y, a["mask"], False)[0],
    }


def diff_inputs(kind, a):
    return (a["img"], a["words"]) if kind == "damsm" else (a["h"], a["e"])


def useful_gflop(case, a):
    """(forward, forward+backward) useful GFLOP."""
    n = int(a["lengths"].sum())
    if case["kind"] == "damsm":
        one = 2.0 * case["M"] * case["N"] * case["D"] * n
    else:
        one = 2.0 * case["C"] * case["N"] * n
    return 2 * one / 1e9, 6 * one / 1e9


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def run_once(fn, a, kind, backward):
    x, y = (t.detach().requires_grad_(backward) for t in diff_inputs(kind, a))
    if not backward:
        with torch.no_grad():
            return fn(a, x, y)
    out = fn(a, x, y)
    out.backward(a["cot"])
    return out


def median_ms(fn, a, kind, backward, device, repeat):
    run_once(fn, a, kind, backward)  # warm-up
    times = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        run_once(fn, a, kind, backward)
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_mb(case_name, variant, device):
    """Peak memory (MB) of one forward+backward above what the inputs hold."""
    case = CASES[case_name]
    if device == "cuda":
        a = make_inputs(case, device)
        fn = variants(case["kind"], device)[variant]
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run_once(fn, a, case["kind"], True)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    # CPU: a fresh process, so the RSS high-water mark belongs to this variant alone.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--_mem", case_name, variant], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"memory probe failed: {res.stderr[-2000:]}")
    return float(res.stdout.strip().splitlines()[-1])


def _rss_kb(field):
    """VmRSS / VmHWM of this process in kB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _mem_probe(case_name, variant):
    """Child of peak_mb: prints the peak RSS growth (MB) of one forward+backward."""
    case = CASES[case_name]
    a = make_inputs(case, "cpu")
    ops.backend_info()
    fn = variants(case["kind"])[variant]  # the probe runs on the CPU
    x, y = (t.detach().requires_grad_(True) for t in diff_inputs(case["kind"], a))
    fn(a, x, y).backward(a["cot"])  # warm-up: libraries, thread pools, gradient buffers (counted as inputs)
    with open("/proc/self/clear_refs", "w") as f:  # reset the RSS high-water mark (VmHWM)
        f.write("5")
    base = _rss_kb("VmRSS")
    out = fn(a, x, y)
    out.backward(a["cot"])
    print((_rss_kb("VmHWM") - base) / 1024)


def sgemm_gflops(device, n=2048, repeat=5):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = []
    for i in range(repeat + 1):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--repeat", type=int, default=5, metavar="N", help="timed repeats per measurement (loop: at most 3)")
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES), metavar="CASE")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch.set_num_threads(N) (default: torch's)")
    p.add_argument("--flush-denormal", action="store_true",
                   help="torch.set_flush_denormal(True) for every variant (the ext kernels always flush subnormals on CPU)")
    p.add_argument("--_mem", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["T2I_BENCH_THREADS"] = str(args.threads)  # for the memory probes
    if os.environ.get("T2I_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["T2I_BENCH_THREADS"]))
    if args.flush_denormal:
        torch.set_flush_denormal(True)
        os.environ["T2I_BENCH_FLUSH_DENORMAL"] = "1"  # for the memory probes
    if os.environ.get("T2I_BENCH_FLUSH_DENORMAL") == "1":
        torch.set_flush_denormal(True)
    if args._mem:
        return _mem_probe(*args._mem)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device")
    info = ops.backend_info()
    if info["backend"] != "ext":
        p.error(f"the t2i extension is not loaded ({info['reason']}); build it with `pip install --no-build-isolation -e .`")
    device = args.device
    result = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else (os.uname().machine + f", {torch.get_num_threads()} threads"),
        "torch": torch.__version__,
        "backend": info,
        "flush_denormal": bool(args.flush_denormal),
        "sgemm_gflops": None,
        "cases": {},
    }
    result["sgemm_gflops"] = round(sgemm_gflops(device), 1)
    print(f"sgemm 2048^3: {result['sgemm_gflops']} GFLOP/s", file=sys.stderr)
    for name in args.cases:
        case = CASES[name]
        a = make_inputs(case, device)
        gf_fwd, gf_all = useful_gflop(case, a)
        rows = {}
        for vname, fn in variants(case["kind"], device).items():
            rep = min(args.repeat, 3) if vname == "loop" else args.repeat
            print(f"{name}: {vname} ...", file=sys.stderr)
            fwd = median_ms(fn, a, case["kind"], False, device, rep)
            both = median_ms(fn, a, case["kind"], True, device, rep)
            gflops = gf_all / (both / 1e3)
            rows[vname] = {
                "fwd_ms": round(fwd, 2),
                "fwd_bwd_ms": round(both, 2),
                "peak_mb": round(peak_mb(name, vname, device), 1),
                "gflops_fwd": round(gf_fwd / (fwd / 1e3), 1),
                "gflops_fwd_bwd": round(gflops, 1),
                "efficiency": round(gflops / result["sgemm_gflops"], 3),
            }
        ratios = {}
        for base in ("loop", "reference"):
            if base in rows:
                ratios[f"{base}/ext"] = {
                    "fwd": round(rows[base]["fwd_ms"] / rows["ext"]["fwd_ms"], 2),
                    "fwd_bwd": round(rows[base]["fwd_bwd_ms"] / rows["ext"]["fwd_bwd_ms"], 2),
                    "peak_mb": round(rows[base]["peak_mb"] / max(rows["ext"]["peak_mb"], 1e-3), 2),
                }
        shape = {k: v for k, v in case.items() if k != "kind"}
        shape["sum_lengths"] = int(a["lengths"].sum())
        result["cases"][name] = {"kind": case["kind"], "shape": shape, "useful_gflop": {"fwd": round(gf_fwd, 3), "fwd_bwd": round(gf_all, 3)},
                                 "variants": rows, "ratios": ratios}
        print(f"  {'variant':<10} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MB':>9} {'GFLOP/s':>8} {'eff':>6}", file=sys.stderr)
        for vname, r in rows.items():
            print(f"  {vname:<10} {r['fwd_ms']:>9.1f} {r['fwd_bwd_ms']:>11.1f} {r['peak_mb']:>9.1f} {r['gflops_fwd_bwd']:>8.1f} {r['efficiency']:>6.2f}",
                  file=sys.stderr)
        for k, r in ratios.items():
            print(f"  {k}: fwd {r['fwd']}x, fwd+bwd {r['fwd_bwd']}x, peak memory {r['peak_mb']}x", file=sys.stderr)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
