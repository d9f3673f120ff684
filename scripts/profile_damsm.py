"""Where one DAMSM training epoch spends its time: data loading, each forward part, backward, optimiser step.

Trains the DAMSM encoders exactly as `t2i train damsm` does (same model, loss, optimiser, clipping, loader)
for one epoch (or --steps) on a prepared dataset, timing each phase with wall clocks, and attributes the
backward pass to operator families with torch.profiler over a few extra steps. Prints one JSON object.

    python scripts/profile_damsm.py --data data/toybirds [--steps 50] [--batch-size 48] [--threads 2]
"""

import argparse
import json
import sys
import time

import torch

from t2icli import losses
from t2icli.data import PreparedDataset, load_meta, make_loader
from t2icli.models.damsm import DAMSMConfig, build_damsm
from t2icli.ops import backend_info
from t2icli.training.damsm import small_image_size

# Operator families for the profiler's per-op table (first match wins; the rest is "other").
FAMILIES = [
    ("word_scores (t2i kernel)", ("t2i::damsm_word_scores", "DamsmWordScores", "damsm_word_scores")),
    ("convolution", ("conv", "cudnn_convolution", "mkldnn_convolution")),
    ("lstm", ("lstm", "rnn", "LSTM")),
    ("batch_norm", ("batch_norm",)),
    ("pooling", ("pool",)),
    ("matmul/linear", ("mm", "addmm", "linear", "matmul", "bmm")),
    ("optimizer", ("adam", "Adam", "_foreach", "clip_grad", "norm")),
]


def _family(name):
    for fam, keys in FAMILIES:
        if any(k in name for k in keys):
            return fam
    return "other"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="prepared dataset folder (t2i prep toybirds --out ...)")
    ap.add_argument("--steps", type=int, default=0, help="steps to time (0 = one full epoch)")
    ap.add_argument("--profile-steps", type=int, default=10, help="extra steps recorded by torch.profiler (0: timing only)")
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    meta = load_meta(args.data)
    size = small_image_size(int(meta["image_size"]))
    ds = PreparedDataset(args.data, "train", resolutions=(size,), train=True, seed=args.seed)
    cfg = DAMSMConfig(vocab_size=len(ds.vocab), word_limit=int(meta["word_limit"]), image_size=size,
                      small_pool="avgmax")
    model = build_damsm(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=0.002, betas=(0.5, 0.999))
    per_epoch = len(ds) // args.batch_size
    steps = args.steps or per_epoch
    phases = dict.fromkeys(["data", "image_encoder", "text_encoder", "word_scores", "sentence_and_loss", "backward",
                            "clip_and_step"], 0.0)

    def one_step(batch, timed):
        t = time.perf_counter()

        def lap(key):
            nonlocal t
            now = time.perf_counter()
            if timed:
                phases[key] += now - t
            t = now

        images, tokens = batch["images"][0], batch["tokens"]
        lengths, class_ids = batch["lengths"], batch["class_ids"]
        f, f_bar = model.encode_images(images)  # [B, D, H', W'], [B, D]
        lap("image_encoder")
        e, e_bar = model.encode_text(tokens, lengths)  # [B, D, T], [B, D]
        lap("text_encoder")
        word, sent = losses.damsm_scores(f, e, lengths, f_bar, e_bar, cfg.gamma1, cfg.gamma2)  # [B, B] each
        lap("word_scores")
        loss = losses.damsm_loss(word, sent, class_ids, cfg.gamma3)["loss"]
        lap("sentence_and_loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        lap("backward")
        torch.nn.utils.clip_grad_norm_(model.text_encoder.parameters(), 0.25)
        opt.step()
        lap("clip_and_step")
        return float(loss)

    model.train()
    loader = make_loader(ds, args.batch_size, shuffle=True, drop_last=True, seed=args.seed, epoch=0)
    it = iter(loader)
    t_all = time.perf_counter()
    done = 0
    while done < steps:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(make_loader(ds, args.batch_size, shuffle=True, drop_last=True, seed=args.seed, epoch=1))
            batch = next(it)
        phases["data"] += time.perf_counter() - t0
        one_step(batch, timed=True)
        done += 1
        if done % 20 == 0:
            print(f"step {done}/{steps}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t_all

    # Backward and forward by operator family (self CPU time), over a few more steps.
    fams = {}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.profile_steps):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(make_loader(ds, args.batch_size, shuffle=True, drop_last=True, seed=args.seed, epoch=2))
                batch = next(it)
            one_step(batch, timed=False)
    total_self, kernel_total, kernel_self = 0.0, 0.0, 0.0
    for ev in prof.key_averages():
        fams[_family(ev.key)] = fams.get(_family(ev.key), 0.0) + ev.self_cpu_time_total
        total_self += ev.self_cpu_time_total
        if ev.key.startswith("t2i::"):  # the custom ops (forward, backward): they call GEMMs inside
            kernel_total += ev.cpu_time_total
            kernel_self += ev.self_cpu_time_total
    # Charge the GEMMs the kernels run inside them to the kernel, not to "matmul/linear".
    inner = kernel_total - kernel_self
    fams["word_scores (t2i kernel)"] = fams.get("word_scores (t2i kernel)", 0.0) + inner
    fams["matmul/linear"] = max(0.0, fams.get("matmul/linear", 0.0) - inner)
    result = {
        "what": "one DAMSM training epoch (small encoder), wall-clock phases + profiler op families",
        "data": args.data, "image_size": size, "batch_size": args.batch_size, "steps": steps,
        "threads": torch.get_num_threads(), "ops_backend": backend_info()["backend"], "torch": torch.__version__,
        "seconds": round(wall, 3), "samples_per_s": round(steps * args.batch_size / wall, 1),
        "phase_seconds": {k: round(v, 3) for k, v in phases.items()},
        "phase_share": {k: round(v / wall, 3) for k, v in phases.items()},
        "profiler_steps": args.profile_steps,
        "op_family_share": {k: round(v / total_self, 3) for k, v in sorted(fams.items(), key=lambda kv: -kv[1])}
        if total_self else None,  # --profile-steps 0: timing only
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
