"""Data benchmark: toybirds prep speed (images/s) and loader speed (samples/s); prints one JSON object.

    python scripts/bench_data.py --json
    python scripts/bench_data.py --n-train 8000 --n-test 1000 --batch-size 32 --resolutions 16,32,64 --workers 0,2
    python scripts/bench_data.py --grammar 1,2,1,2 --workers 0 --json   # prep time per caption grammar

Timings are wall-clock on whatever else the machine is doing: compare figures from one run. The prep also
reports its CPU seconds (this process and its drawing workers), which a busy machine disturbs less.
"""

import argparse
import json
import os
import sys
import tempfile
import time


def _cpu_seconds():
    """User + system CPU seconds of this process and of its finished child processes (prep's drawing pool)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=8000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--resolutions", default="16,32,64")
    ap.add_argument("--workers", default="0,2", help="loader worker counts to time, comma-separated")
    ap.add_argument("--batches", type=int, default=100, help="batches timed per loader setting")
    ap.add_argument("--data", help="an existing prepared dataset (skips the prep timing)")
    ap.add_argument("--grammar", default="2", help="toybirds caption grammar(s) to time the prep with, "
                                                  "comma-separated, in that order (repeat them to interleave)")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args()

    import torch

    from t2icli.data import PreparedDataset, make_loader

    out = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from t2icli.data.toybirds import prepare_toybirds

            data = os.path.join(tmp, "toybirds")
            out["prep"] = []
            for grammar in (int(g) for g in args.grammar.split(",")):
                t0, c0 = time.perf_counter(), _cpu_seconds()
                meta = prepare_toybirds(data, size=args.size, n_train=args.n_train, n_test=args.n_test, seed=0,
                                        grammar=grammar)
                dt, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
                n = args.n_train + args.n_test
                out["prep"].append({"grammar": grammar, "images": n, "size": args.size, "seconds": round(dt, 2),
                                    "cpu_seconds": round(cpu, 2), "images_per_s": round(n / dt, 1),
                                    "vocab_size": meta["vocab_size"]})
        res = tuple(int(r) for r in args.resolutions.split(","))
        ds = PreparedDataset(data, "train", resolutions=res, train=True, seed=0)
        out["loader"] = []
        for workers in (int(w) for w in args.workers.split(",")):
            loader = make_loader(ds, args.batch_size, num_workers=workers, seed=0, epoch=0)
            it = iter(loader)
            next(it)  # start-up (worker spawn) not counted
            t0 = time.perf_counter()
            n = 0
            for _, batch in zip(range(args.batches), it):
                n += len(batch["indices"])
            dt = time.perf_counter() - t0
            out["loader"].append({"workers": workers, "batch_size": args.batch_size, "resolutions": list(res),
                                  "samples": n, "samples_per_s": round(n / dt, 1)})
    print(json.dumps(out, sort_keys=True) if args.json else json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
