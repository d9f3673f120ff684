"""Benchmarks one training step of DAMSM and AttnGAN (images/s, peak memory) on synthetic batches; prints one JSON object.

    python scripts/bench_train.py --json                               # CPU: toybirds + one CUB step
    python scripts/bench_train.py --device cuda --json                 # GPU: fp32 and bf16
    python scripts/bench_train.py --configs toybirds --iters 5 --warmup 1
    python scripts/bench_train.py --device cuda --compile --backends ext --json   # torch.compile, as --compile

Configurations (models and batches are built directly, with random weights and synthetic tensors: no data files):
  cub       the AttnGAN paper's CUB setting: 256 px, 3 stages 64/128/256, batch 20, gf_dim 32, df_dim 64, z/cond 100,
            DAMSM with the Inception-v3 image encoder (random weights), captions of <= 18 words, vocabulary 5000.
  toybirds  the CPU preset PRESETS["toybirds-cpu"] (3 stages 16/32/64, gf/df 8, batch 16, z/cond 64) and the DAMSM
            trainer's default on toybirds (small image encoder width 16 at 64 px, batch 48).
One step is what the trainers do: DAMSM = both encoders + all-pairs loss + backward + clip + Adam
(t2icli.training.damsm.train_loss); AttnGAN = G forward, D step, G step with the DAMSM term, EMA update
(t2icli.training.attngan.train_step); images/s = batch / the median measured step time. Each (config, model, backend, precision) runs in a fresh subprocess:
backend "ext" = compiled t2i kernels, "ref" = T2I_OPS=ref (pure-PyTorch reference ops); precision bf16 (CUDA only)
autocasts the forward passes as `--precision bf16` does. --compile wraps what the trainers' `--compile` wraps (DAMSM:
the image encoder; AttnGAN: G and every D) in torch.compile; the first warm-up step then includes the compilation,
reported as first_step_s (and the case needs --warmup >= 1, or the measured steps would time the compiler).

Peak memory: CUDA: torch.cuda.max_memory_allocated over the measured steps minus the memory allocated before them
(models, optimiser state after warm-up, batch). CPU: growth of the process's resident-set high-water mark (VmHWM,
reset through /proc/self/clear_refs after the models and batch are built) over warm-up + measured steps, so on CPU
it includes the gradients and Adam state allocated by the first step when --warmup is 0.
Progress and a table go to stderr; stdout gets only the JSON (with --json).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIGS = {
    "cub": {
        "damsm": dict(batch=20, image_size=256, encoder="inception_v3", vocab=5000, T=18),
        "attngan": dict(batch=20, image_size=256, stages=3, gf_dim=32, df_dim=64, z_dim=100, cond_dim=100,
                        damsm_encoder="inception_v3", vocab=5000, T=18),
    },
    "toybirds": {
        "damsm": dict(batch=48, image_size=64, encoder="small", small_width=16, vocab=64, T=18),
        "attngan": None,  # filled from PRESETS["toybirds-cpu"] in _config()
    },
}


def _config(name, model):
    cfg = CONFIGS[name][model]
    if cfg is None:  # the CPU preset, as `t2i train attngan --preset toybirds-cpu` trains it
        from t2icli.training.config import PRESETS

        p = PRESETS["attngan"]["toybirds-cpu"]
        cfg = dict(batch=p["batch_size"], image_size=64, stages=p["stages"], gf_dim=p["gf_dim"], df_dim=p["df_dim"],
                   z_dim=p["z_dim"], cond_dim=p["cond_dim"], damsm_encoder="small", small_width=16, vocab=64, T=18)
    return dict(cfg)


def _captions(B, T, vocab, device, g):
    """Synthetic captions: lengths uniform in 5..T, ids in 1..vocab-1, zero padding. Returns tokens [B, T], lengths [B]."""
    lengths = torch.randint(5, T + 1, (B,), generator=g)
    tokens = torch.randint(1, vocab, (B, T), generator=g) * (torch.arange(T)[None, :] < lengths[:, None])
    return tokens.to(device), lengths


def _build_damsm(c, device, g, compile=False):
    from t2icli.models.damsm import DAMSMConfig, build_damsm
    from t2icli.training.damsm import train_loss

    cfg = DAMSMConfig(vocab_size=c["vocab"], word_limit=c["T"], image_size=c["image_size"], image_encoder=c["encoder"],
                      small_width=c.get("small_width", 16), small_pool="avgmax")
    model = build_damsm(cfg).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-3, betas=(0.5, 0.999))
    B = c["batch"]
    images = (torch.rand(B, 3, c["image_size"], c["image_size"], generator=g) * 2 - 1).to(device)
    tokens, lengths = _captions(B, c["T"], c["vocab"], device, g)
    class_ids = torch.arange(B)

    image_fwd = torch.compile(model.image_encoder) if compile else model.image_encoder  # as `train damsm --compile`

    def step(amp):
        out = train_loss(model.text_encoder, image_fwd, images, tokens, lengths, class_ids, cfg, amp)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.text_encoder.parameters(), 0.25)
        opt.step()
        return out["loss"].item()

    return step, B, sum(p.numel() for p in params)


def _build_attngan(c, device, g, compile=False):
    from t2icli.models.attngan import GeneratorConfig, Generator, build_discriminators, init_weights, stage_sizes
    from t2icli.models.damsm import DAMSMConfig, build_damsm
    from t2icli.training.attngan import train_step
    from t2icli.training.ema import EMA

    dcfg = DAMSMConfig(vocab_size=c["vocab"], word_limit=c["T"], image_size=c["image_size"],
                       image_encoder=c["damsm_encoder"], small_width=c.get("small_width", 16), small_pool="avgmax")
    damsm = build_damsm(dcfg).to(device).eval().requires_grad_(False)  # frozen, as loaded from a DAMSM run
    gcfg = GeneratorConfig(image_size=c["image_size"], stages=c["stages"], gf_dim=c["gf_dim"], df_dim=c["df_dim"],
                           z_dim=c["z_dim"], cond_dim=c["cond_dim"], text_dim=dcfg.dim, attention=True)
    G = init_weights(Generator(gcfg)).to(device)
    Ds = init_weights(build_discriminators(gcfg)).to(device)
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(Ds.parameters(), lr=2e-4, betas=(0.5, 0.999))
    ema = EMA(G, 0.999)
    B = c["batch"]
    reals = [(torch.rand(B, 3, s, s, generator=g) * 2 - 1).to(device) for s in stage_sizes(c["image_size"], c["stages"])]
    tokens, lengths = _captions(B, c["T"], c["vocab"], device, g)
    class_ids = torch.arange(B)
    z = torch.randn(B, c["z_dim"], generator=g).to(device)
    eps = torch.randn(B, c["cond_dim"], generator=g).to(device)

    # as `train attngan --compile`: G and every D compiled, the modules kept for parameters
    G_fwd, D_fwd = (torch.compile(G), [torch.compile(D) for D in Ds]) if compile else (G, list(Ds))

    def step(amp):
        vals = train_step(G_fwd, D_fwd, G, Ds, opt_G, opt_D, damsm.text_encoder, damsm.image_encoder, reals, tokens,
                          lengths, class_ids, z, eps, amp=amp, kl_weight=1.0, damsm_weight=5.0, damsm_config=dcfg)
        ema.update(G)
        return vals["g"]

    n = sum(p.numel() for p in G.parameters()) + sum(p.numel() for p in Ds.parameters())
    return step, B, n


def _rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def child(config, model, backend, precision, device, iters, warmup, compile=False):
    """Measure one case in this (fresh) process; returns a JSON-able dict."""
    import t2icli.ops as ops
    from t2icli.training.distributed import autocast

    info = ops.backend_info()
    if info["backend"] != backend:
        raise RuntimeError(f"asked for backend {backend}, got {info['backend']} ({info['reason']})")
    c = _config(config, model)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    step, B, n_params = (_build_damsm if model == "damsm" else _build_attngan)(c, device, g, compile)
    amp = autocast(device, precision)
    cpu_mem = device == "cpu" and os.path.exists("/proc/self/clear_refs")
    if cpu_mem:
        with open("/proc/self/clear_refs", "w") as f:  # reset the RSS high-water mark
            f.write("5")
        base_kb = _rss_kb("VmRSS")
    first_step_s = None
    for i in range(warmup):
        t0 = time.perf_counter()
        step(amp)
        _sync(device)
        if i == 0:
            first_step_s = time.perf_counter() - t0  # with --compile: tracing + compilation + one step
    _sync(device)
    if device == "cuda":
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times, loss = [], None
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        loss = step(amp)
        _sync(device)
        times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    elif cpu_mem:
        peak = (_rss_kb("VmHWM") - base_kb) / 1024
    else:
        peak = None
    mean = sorted(times)[len(times) // 2]  # the median step: robust to a busy machine
    return {"config": config, "model": model, "backend": backend, "precision": precision, "compile": bool(compile),
            "first_step_s": None if first_step_s is None else round(first_step_s, 2), "batch": B,
            "params_m": round(n_params / 1e6, 2), "iters": iters, "warmup": warmup,
            "step_ms": round(mean * 1e3, 1), "step_ms_min": round(min(times) * 1e3, 1),
            "step_ms_max": round(max(times) * 1e3, 1),
            "images_per_s": round(B / mean, 2), "peak_mb": None if peak is None else round(peak, 1),
            "loss": loss, "shape": c}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--configs", default="toybirds,cub", metavar="LIST", help="comma-separated: toybirds, cub")
    p.add_argument("--models", default="damsm,attngan", metavar="LIST", help="comma-separated: damsm, attngan")
    p.add_argument("--backends", default="ext,ref", metavar="LIST", help="comma-separated: ext (fused ops), ref")
    p.add_argument("--iters", type=int, default=None, metavar="N",
                   help="measured steps (default: 10 on cuda; on cpu 3 for toybirds, 1 for cub)")
    p.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="unmeasured steps first (default: 3 on cuda; on cpu 1 for toybirds, 0 for cub)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch.set_num_threads(N) in every case")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile what the trainers' --compile does (DAMSM image encoder; AttnGAN G and Ds)")
    p.add_argument("--_child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._child:
        config, model, backend, precision, device = args._child
        res = child(config, model, backend, precision, device, args.iters, args.warmup, args.compile)
        print(json.dumps(res))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device")

    def parse(value, allowed, flag):
        items = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            p.error(f"{flag} {value!r}: choose from {', '.join(allowed)}")
        return items

    configs = parse(args.configs, list(CONFIGS), "--configs")
    models = parse(args.models, ["damsm", "attngan"], "--models")
    backends = parse(args.backends, ["ext", "ref"], "--backends")
    if args.iters is not None and args.iters < 1:
        p.error("--iters must be >= 1")
    if args.warmup is not None and args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.compile and args.warmup == 0:
        p.error("--compile needs --warmup >= 1 (the first step compiles)")
    precisions = ["fp32", "bf16"] if args.device == "cuda" else ["fp32"]
    import t2icli.ops as ops

    info = ops.backend_info()
    if "ext" in backends and info["backend"] != "ext":
        p.error(f"the t2i extension is not loaded ({info['reason']}); build it or pass --backends ref")
    result = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda"
        else f"{os.uname().machine}, {args.threads or torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "backend_ext": info,
        "memory_method": "cuda: torch.cuda.max_memory_allocated over the measured steps minus memory allocated before "
                         "them" if args.device == "cuda" else
                         "cpu: growth of the resident-set high-water mark (VmHWM, reset via /proc/self/clear_refs after "
                         "building models and batch) over warm-up + measured steps, in a fresh process per case",
        "compile": bool(args.compile),
        "cases": [],
        "ratios": {},
    }
    for config in configs:
        cpu_cub = args.device == "cpu" and config == "cub"
        iters = args.iters if args.iters is not None else (10 if args.device == "cuda" else (1 if cpu_cub else 3))
        warmup = args.warmup if args.warmup is not None else (3 if args.device == "cuda" else (0 if cpu_cub else 1))
        warmup = max(warmup, 1) if args.compile else warmup
        for model in models:
            for precision in precisions:
                for backend in backends:
                    print(f"{config} {model} {precision} {backend}{' compiled' if args.compile else ''}: "
                          f"{warmup} warm-up + {iters} steps ...",
                          file=sys.stderr, flush=True)
                    env = {**os.environ, "T2I_OPS": backend}
                    cmd = [sys.executable, os.path.abspath(__file__), "--_child", config, model, backend, precision,
                           args.device, "--iters", str(iters), "--warmup", str(warmup)]
                    if args.threads:
                        cmd += ["--threads", str(args.threads)]
                    if args.compile:
                        cmd += ["--compile"]
                    t0 = time.perf_counter()
                    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if res.returncode != 0:
                        raise SystemExit(f"{config} {model} {precision} {backend} failed:\n{res.stderr[-3000:]}")
                    row = json.loads(res.stdout.strip().splitlines()[-1])
                    row["wall_s"] = round(time.perf_counter() - t0, 1)
                    result["cases"].append(row)
                    print(f"  {row['images_per_s']:>9.2f} img/s  {row['step_ms']:>10.1f} ms/step  "
                          f"peak {row['peak_mb']} MB  first step {row['first_step_s']} s", file=sys.stderr, flush=True)
            for precision in precisions:
                rows = {r["backend"]: r for r in result["cases"]
                        if (r["config"], r["model"], r["precision"]) == (config, model, precision)}
                if "ext" in rows and "ref" in rows:
                    result["ratios"][f"{config}/{model}/{precision} ext vs ref"] = {
                        "speedup": round(rows["ext"]["images_per_s"] / rows["ref"]["images_per_s"], 2),
                        "peak_mb_ratio": None if not rows["ext"]["peak_mb"] or rows["ref"]["peak_mb"] is None
                        else round(rows["ref"]["peak_mb"] / max(rows["ext"]["peak_mb"], 1e-3), 2),
                    }
            if "bf16" in precisions:
                for backend in backends:
                    rows = {r["precision"]: r for r in result["cases"]
                            if (r["config"], r["model"], r["backend"]) == (config, model, backend)}
                    result["ratios"][f"{config}/{model}/{backend} bf16 vs fp32"] = {
                        "speedup": round(rows["bf16"]["images_per_s"] / rows["fp32"]["images_per_s"], 2),
                        "peak_mb_ratio": round(rows["fp32"]["peak_mb"] / max(rows["bf16"]["peak_mb"], 1e-3), 2),
                    }
    for k, v in result["ratios"].items():
        print(f"{k}: {v['speedup']}x images/s, peak memory ref/ext or fp32/bf16 {v['peak_mb_ratio']}x", file=sys.stderr)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
