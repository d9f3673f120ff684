"""Write the comparison table of scripts/compare.sh (Markdown) from its work folder: eval JSON, run stats, commands.

    python scripts/compare_table.py --out compare --results docs/RESULTS.md --minutes 7 --seeds "0 1" ...

Reads OUT/eval/<model>-s<seed>.json (from `t2i eval --metric all --json`; or the older per-metric
<model>-s<seed>-{rprecision,attr}.json), OUT/runs/<model>-s<seed>/stats.jsonl
and run.json (sizes) and OUT/commands.txt; prints nothing on stdout but the path.
"""

import argparse
import datetime
import json
import os
import platform
import statistics

MODELS = {  # name -> (label, what it tests)
    "gancls": ("GAN-INT-CLS", "DCGAN, matching-aware D + manifold interpolation, 64 px"),
    "stackgan": ("StackGAN (v1)", "Stage-I 16 px, then Stage-II 64 px with Stage-I frozen"),
    "stackgan2": ("StackGAN++", "3-stage tree, no attention, colour consistency"),
    "attngan2": ("AttnGAN, 2 stages", "32/64 px, 1 attention stage"),
    "attngan3": ("AttnGAN, 3 stages", "16/32/64 px, 2 attention stages"),
    "attngan3-nodamsm": ("AttnGAN, 3 stages, no DAMSM loss", "--damsm-weight 0"),
}
CLAIM_METRICS = {  # summary key -> (label in the claims, lower is better, digits)
    "rp": ("R-precision", False, 3),
    "attr": ("attr accuracy", False, 3),
    "fid": ("data-FID", True, 1),
}


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def eval_results(out, name, seed):
    """{metric: result} of one run's evaluation: OUT/eval/NAME-sSEED.json (`--metric all`), else the per-metric files
    an older compare.sh wrote."""
    both = load_json(os.path.join(out, "eval", f"{name}-s{seed}.json"))
    if both and "metrics" in both:
        return {k: v for k, v in both["metrics"].items() if "skipped" not in v}
    found = {m: load_json(os.path.join(out, "eval", f"{name}-s{seed}-{m}.json")) for m in ("rprecision", "attr")}
    return {k: v for k, v in found.items() if v}


def run_info(run):
    """(run.json dict, config.json dict, final stats record) of a run folder (None where missing)."""
    cfg = load_json(os.path.join(run, "run.json"))  # what the run built: sizes, kind, world size
    train_cfg = load_json(os.path.join(run, "config.json"))  # how it trained: the resolved flags (damsm_weight, ...)
    final = None
    try:
        with open(os.path.join(run, "stats.jsonl"), encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("final"):
                    final = rec
    except OSError:
        pass
    return cfg, train_cfg, final


def mean_std(values, digits=3):
    """('m ± s' over seeds (sample std; 'm (1 seed)' for one value) or 'n/a', mean, std)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a", None, None
    m = statistics.mean(vals)
    s = statistics.stdev(vals) if len(vals) > 1 else 0.0
    text = f"{m:.{digits}f} ± {s:.{digits}f}" if len(vals) > 1 else f"{m:.{digits}f} (1 seed)"
    return text, m, s


def stages_of(name, cfg):
    if name == "gancls":
        return "1 (64)"
    if name == "stackgan":
        return "2 (16→64, sequential)"
    sizes = (cfg or {}).get("sizes")
    return f"{len(sizes)} ({'/'.join(str(s) for s in sizes)})" if sizes else "?"


def verdict(a, b, metric, lower_is_better=False, digits=3):
    """Does model a beat model b on `metric`? Compares the seed means against the seeds' spread; with
    lower_is_better (data-FID) a beats b when its mean is the lower one."""
    (ma, sa, na), (mb, sb, nb) = a, b
    if ma is None or mb is None:
        return "not measured"
    d = ma - mb
    gain = -d if lower_is_better else d
    spread = sa + sb
    few = " (one seed: no spread to compare with)" if min(na, nb) < 2 else ""
    if gain > spread:
        word = "holds"
    elif gain < -spread:
        word = "reversed"
    else:
        word = "not separated (difference within the seeds' spread)"
    f = f".{digits}f"
    return (f"{word}: {metric} {ma:{f}} vs {mb:{f}} (difference {d:+{f}}, spreads ±{sa:{f}} / ±{sb:{f}}){few}")


def machine():
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        tv = torch.__version__
    except ImportError:
        tv = "?"
    return f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, torch {tv}, {platform.system()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--models", default=" ".join(MODELS))
    ap.add_argument("--started", default="")
    ap.add_argument("--n-eval", type=int, default=0)
    ap.add_argument("--damsm-minutes", type=float, default=0)
    a = ap.parse_args()
    seeds = a.seeds.split()
    models = a.models.split()

    rows, summary = [], {}
    real_rp, real_attr, floors, negatives = [], [], [], set()
    for name in models:
        label, note = MODELS.get(name, (name, ""))
        rps, attrs, fids, steps, secs, cfg, train_cfg = [], [], [], [], [], None, None
        for s in seeds:
            run = os.path.join(a.out, "runs", f"{name}-s{s}")
            c, tc, final = run_info(run)
            cfg, train_cfg = cfg or c, train_cfg or tc
            ev = eval_results(a.out, name, s)
            rp, at, fid = ev.get("rprecision"), ev.get("attr"), ev.get("fid")
            rps.append(rp["mean"] if rp else None)
            attrs.append(at["accuracy"] if at else None)
            fids.append(fid["value"] if fid else None)
            if fid and fid.get("floor") is not None:
                floors.append(fid["floor"])
            if rp:
                negatives.add(rp.get("negatives"))
            if rp and rp.get("real"):
                real_rp.append(rp["real"]["mean"])
            if at and at.get("real"):
                real_attr.append(at["real"]["accuracy"])
            if final:
                steps.append(int(final["step"]))
                if final.get("train_seconds") is not None:
                    secs.append(float(final["train_seconds"]))
        texts = {}
        for key, vals in (("rp", rps), ("attr", attrs), ("fid", fids)):  # the claims' metrics (CLAIM_METRICS)
            texts[key], m, sd = mean_std(vals, digits=CLAIM_METRICS[key][2])
            summary.setdefault(name, {})[key] = (m, sd or 0.0, sum(v is not None for v in vals))
        weight = (train_cfg or {}).get("damsm_weight", 0.0) if name.startswith("attngan") else 0.0
        step_text = " / ".join(str(x) for x in steps) if steps else "n/a"
        sec_text = f"{statistics.mean(secs) / 60:.1f}" if secs else "n/a"
        rows.append(f"| {label} | {stages_of(name, cfg)} | {weight:g} | {step_text} | {sec_text} | {texts['rp']} | "
                    f"{texts['attr']} | {texts['fid']} | {note} |")

    def cmp(x, y, metric="rp"):
        if x not in summary or y not in summary:
            return "not run"
        label, lower_is_better, digits = CLAIM_METRICS[metric]
        return verdict(summary[x][metric], summary[y][metric], label, lower_is_better, digits)

    def all_three(x, y):
        return f"{cmp(x, y)}; {cmp(x, y, 'attr')}; {cmp(x, y, 'fid')}"

    claims = []
    for title, x, y in (("Attention helps (AttnGAN 3 stages > StackGAN++)", "attngan3", "stackgan2"),
                        ("Attention alone (AttnGAN 3 stages without DAMSM loss > StackGAN++)", "attngan3-nodamsm",
                         "stackgan2"),
                        ("More attention stages help (AttnGAN 3 stages > 2 stages)", "attngan3", "attngan2"),
                        ("The DAMSM term helps (AttnGAN 3 stages, weight 5 > weight 0)", "attngan3", "attngan3-nodamsm")):
        claims.append(f"- **{title}** — {all_three(x, y)}.")
    for name in models:
        if name != "gancls" and "gancls" in summary:
            claims.append(f"- **{MODELS.get(name, (name,))[0]} beats GAN-INT-CLS** — {all_three(name, 'gancls')}.")

    commands = []
    try:
        with open(os.path.join(a.out, "commands.txt"), encoding="utf-8") as f:
            commands = [line.rstrip("\n") for line in f if line.strip()]
    except OSError:
        pass
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    real_rp_text = f"{statistics.mean(real_rp):.3f}" if real_rp else "n/a"
    real_attr_text = f"{statistics.mean(real_attr):.3f}" if real_attr else "n/a"
    floor_text = f"{statistics.mean(floors):.1f} (floor: real train)" if floors else "n/a"
    meta = load_json(os.path.join(a.out, "toybirds", "dataset.json")) or {}
    counts = {k: {"images": v.get("images"), "captions": v.get("captions")}
              for k, v in (meta.get("splits") or {}).items()}
    lines = [
        "# Results: the papers' comparison on toybirds, one equal CPU budget per model",
        "",
        f"Measured by `bash scripts/compare.sh` (started {a.started or '?'}, table written {now}).",
        "",
        f"- **Budget**: {a.minutes:g} reference CPU-minutes per model and seed, as a step count per model: the steps "
        f"each model trained per CPU-minute (one torch thread, two runs side by side) in time-capped runs on the "
        f"reference machine (`STEPS_PER_MINUTE` in scripts/compare.sh, which names it), times the budget. The steps, "
        f"not the clock, end every run, so the table does not depend on the machine's speed; `train min` is this "
        f"machine's time ({a.jobs} runs in parallel, one torch thread each). Snapshots only at step 0 and at the end; "
        f"the final evaluation is not counted. Every model uses its `--preset toybirds-cpu` widths, batch and learning "
        f"rates.",
        f"- **Seeds**: {' '.join(seeds)} (mean ± sample std over seeds).",
        f"- **Data**: toybirds 64 px ({json.dumps(counts) if counts else 'see commands'}); one DAMSM trained "
        f"{a.damsm_minutes:g} reference minutes on both cores (its steps: see Commands), shared by every model (text "
        f"features, DAMSM loss and the R-precision scorer).",
        f"- **Metrics**: `t2i eval --metric rprecision` (DM-GAN protocol: true caption vs "
        f"{'/'.join(str(n) for n in sorted(negatives, key=str)) or '99'} other-class captions, "
        f"10 folds), `--metric attr` (accuracy of the attributes each caption mentions) and data-FID (`--metric fid "
        f"--fid-backbone data`: FID in the features of a network trained on toybirds' own real train images; its floor "
        f"is real train vs real test images at the same count), {a.n_eval} generated images each, from the test captions.",
        f"- **Machine**: {machine()}.",
        "",
        "| model | stages (px) | DAMSM loss weight | steps (per seed) | train min | R-precision | attr accuracy | data-FID | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        f"| real test images (ceiling) | | | | | {real_rp_text} | {real_attr_text} | {floor_text} | same captions, same scorers |",
        "",
        "## The papers' claims, tested",
        "",
        "A claim *holds* when the difference of the seed means exceeds the sum of the two seed spreads; *reversed* "
        "when it does so the other way; otherwise the budget and seeds cannot separate the two.",
        "",
        *claims,
        "",
        "Reading the table: R-precision is scored with the same DAMSM encoders that give the AttnGAN models their DAMSM loss, so it favours the models trained against that loss (AttnGAN with weight > 0); attribute accuracy comes from an independent classifier trained on real images and is the fairer of the two caption columns; data-FID (lower is better) asks whether the images look like the data set's, whatever the caption, in the features of a network trained on its real images. Budgets are short (a few CPU-minutes): the ranking says which model learns the caption fastest, not which is best when trained to convergence.",
        "",
        "## Commands",
        "",
        "```",
        *commands,
        "```",
        "",
    ]
    with open(a.results, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(a.results)


if __name__ == "__main__":
    main()
