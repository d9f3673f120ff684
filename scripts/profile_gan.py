"""Where one AttnGAN training step spends its time: the step's phases and the operator families inside them.

Builds the trainer exactly as `t2i train attngan` does (same config fields, networks, optimisers, EMA, loader and
per-step random streams: t2icli.training.attngan.TreeTrainer), times --steps steps with a wall clock (img/s), then
records --profile-steps more with torch.profiler: the named regions of train_step (text encoder, G forward, D step
with its R1 penalty and backward, G adversarial forward, DAMSM term, G backward + Adam) and self CPU time by operator
family. Prints one JSON object on stdout; progress on stderr.

    python scripts/profile_gan.py --data data/toybirds --damsm runs/damsm [--preset toybirds-cpu] [--steps 40]
        [--set r1_gamma=0 --set batch_size=32 ...] [--threads 2]
    python scripts/profile_gan.py --data ... --damsm ... --variant base: --variant lazy-r1:r1_every=4 [--rounds 3]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch

from t2icli.data import make_loader
from t2icli.ops import backend_info
from t2icli.training import distributed
from t2icli.training.attngan import TreeTrainer
from t2icli.training.config import PRESETS, AttnGANTrainConfig

FAMILIES = [  # first match wins; self CPU time of the rest is "other"
    ("attention (t2i kernel)", ("word_region_attention",)),
    ("word scores (t2i kernel)", ("damsm_word_scores",)),
    ("convolution backward", ("convolution_backward", "ConvolutionBackward")),
    ("convolution", ("conv", "mkldnn_convolution")),
    ("batch_norm", ("batch_norm", "BatchNorm")),
    ("lstm", ("lstm", "rnn")),
    ("grid_sample (DAMSM augment)", ("grid_sampler", "GridSampler")),
    ("upsample", ("upsample", "Upsample")),
    ("matmul/linear", ("mm", "addmm", "linear", "matmul", "bmm")),
    ("optimizer", ("adam", "Adam", "_foreach")),
    ("elementwise", ("add", "mul", "sub", "div", "relu", "leaky", "tanh", "sigmoid", "exp", "pow", "glu", "copy",
                     "fill", "clamp", "where", "sum", "mean", "cat", "stack")),
]
REGIONS = ("t2i/text", "t2i/G forward", "t2i/D step", "t2i/G adversarial", "t2i/DAMSM term", "t2i/G backward")


def _family(name):
    for fam, keys in FAMILIES:
        if any(k in name for k in keys):
            return fam
    return "other"


def _value(text):
    """'2' -> 2, '2e-3' -> 0.002, 'true' -> True, else the string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


class _Loop:
    """What a trainer's step needs of the loop: the step counter and the non-finite check (a no-op here)."""

    step = 0

    @staticmethod
    def check_finite(vals):
        pass


def build(args, overrides=()):
    """(trainer, config) as `t2i train attngan --preset ... --set ...` builds them (overrides: more FIELD=VALUE)."""
    fields = {k: v for k, v in PRESETS["attngan"].get(args.preset, {}).items() if k != "description"}
    for item in list(args.set) + list(overrides):
        name, _, value = item.partition("=")
        fields[name] = _value(value)
    cfg = AttnGANTrainConfig(data=args.data, damsm=args.damsm, out=tempfile.mkdtemp(prefix="profile_gan_"),
                             preset=args.preset, **fields).validate()
    trainer = TreeTrainer(cfg, distributed.current())
    torch.manual_seed(cfg.seed)
    trainer.build(None)
    trainer.loop = _Loop()
    return trainer, cfg


class Runner:
    """One trainer stepping through its own loader with the loop's per-step random streams."""

    def __init__(self, args, overrides=()):
        self.trainer, self.cfg = build(args, overrides)
        self.step_no, self._it = 0, self._batches()

    def _batches(self):
        epoch = 0
        while True:
            yield from make_loader(self.trainer.train_ds, self.cfg.batch_size, shuffle=True, drop_last=True,
                                   seed=self.cfg.seed, epoch=epoch, class_pairs=self.cfg.class_pairs)
            epoch += 1

    def step(self):
        batch, cfg = next(self._it), self.cfg
        torch.manual_seed(distributed.seed_for(cfg.seed, 0, self.step_no))
        gen = torch.Generator().manual_seed(distributed.seed_for(cfg.seed, None, self.step_no))
        self.trainer.loop.step = self.step_no
        self.trainer.step(batch, gen)
        self.step_no += 1

    def timed(self, steps, label=""):
        """Seconds of `steps` steps (wall clock)."""
        t0 = time.perf_counter()
        for k in range(steps):
            self.step()
            if (k + 1) % 20 == 0:
                print(f"{label}step {k + 1}/{steps}", file=sys.stderr, flush=True)
        return time.perf_counter() - t0


def compare(args):
    """--variant mode: img/s of each variant, timed in interleaved rounds in this one process (so that a machine
    whose speed drifts charges every variant alike); the median over rounds, and its ratio to the first variant."""
    variants = []
    for spec in args.variant:
        name, _, sets = spec.partition(":")
        variants.append((name, [s for s in sets.split(",") if s]))
    runners = [Runner(args, sets) for _, sets in variants]
    for r in runners:
        for _ in range(3):  # warm-up (allocator, oneDNN primitive caches, compilation)
            r.step()
    ips = [[] for _ in runners]
    for rnd in range(args.rounds):
        for (name, _), r, out in zip(variants, runners, ips):
            out.append(args.steps * r.cfg.batch_size / r.timed(args.steps, f"round {rnd + 1} {name}: "))
    med = [statistics.median(v) for v in ips]
    print(json.dumps({
        "what": "AttnGAN training speed (img/s, wall clock) of each variant of one preset, timed in interleaved "
                "rounds in one process on this machine",
        "preset": args.preset, "set": args.set, "threads": torch.get_num_threads(),
        "ops_backend": backend_info()["backend"], "torch": torch.__version__, "sgemm_gflops": round(_sgemm(), 1),
        "steps_per_round": args.steps, "rounds": args.rounds,
        "variants": [{"name": name, "set": sets, "images_per_s": round(m, 1), "rounds": [round(x, 1) for x in v],
                      "ratio_to_first": round(m / med[0], 3)} for (name, sets), m, v in zip(variants, med, ips)],
    }, indent=1))


def _sgemm(n=2048, repeat=5):
    """GFLOP/s of a float32 n^3 matmul on the CPU (the best of `repeat`), the machine-speed figure to quote."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="prepared dataset folder")
    ap.add_argument("--damsm", required=True, help="DAMSM run folder trained on --data")
    ap.add_argument("--preset", default="toybirds-cpu", help="an attngan preset ('' for the defaults)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a config field (as the flag would), e.g. --set r1_gamma=0")
    ap.add_argument("--steps", type=int, default=40, help="steps timed with a wall clock (after 3 warm-up steps); "
                                                          "with --variant, per variant and round")
    ap.add_argument("--profile-steps", type=int, default=8, help="steps recorded by torch.profiler")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:FIELD=VALUE[,FIELD=VALUE]",
                    help="compare speeds instead of profiling: one trainer per variant (e.g. 'base:' "
                         "'lazy-r1:r1_every=4'), timed in --rounds interleaved rounds")
    ap.add_argument("--rounds", type=int, default=3, help="--variant: timing rounds")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant:
        return compare(args)
    runner = Runner(args)
    trainer, cfg = runner.trainer, runner.cfg
    for _ in range(3):  # warm-up (allocator, oneDNN primitive caches; compilation with --set compile=true)
        runner.step()
    wall = runner.timed(args.steps)

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.profile_steps):
            runner.step()
    regions, fams, total_self = {}, {}, 0.0
    for ev in prof.key_averages():
        if ev.key in REGIONS:
            regions[ev.key] = ev.cpu_time_total
            continue
        fams[_family(ev.key)] = fams.get(_family(ev.key), 0.0) + ev.self_cpu_time_total
        total_self += ev.self_cpu_time_total
    region_total = sum(regions.values()) or 1.0
    print(json.dumps({
        "what": "one AttnGAN training step as `t2i train attngan` runs it: wall-clock speed, named regions of "
                "train_step and self CPU time by operator family (backward ops are charged to the region whose "
                "backward() runs them)",
        "config": {k: getattr(cfg, k) for k in ("preset", "stages", "gf_dim", "df_dim", "batch_size", "r1_gamma",
                                                 "r1_every", "damsm_augment", "damsm_weight", "compile", "precision")},
        "threads": torch.get_num_threads(), "ops_backend": backend_info()["backend"], "torch": torch.__version__,
        "sgemm_gflops": round(_sgemm(), 1),
        "steps": args.steps, "seconds": round(wall, 3), "images_per_s": round(args.steps * cfg.batch_size / wall, 1),
        "ms_per_step": round(1000 * wall / args.steps, 1), "profiler_steps": args.profile_steps,
        "region_share": {k[4:]: round(v / region_total, 3) for k, v in sorted(regions.items(), key=lambda kv: -kv[1])},
        "op_family_share": {k: round(v / total_self, 3) for k, v in sorted(fams.items(), key=lambda kv: -kv[1])},
    }, indent=1))


if __name__ == "__main__":
    main()
