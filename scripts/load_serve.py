"""A bounded load test of `t2i serve` on loopback: R requests from C concurrent clients; prints one JSON object.

Starts `t2i serve --model RUN --port 0` itself, records the server's resident memory once it answers (before) and
after the last request (after), and checks that repeated requests (same captions, n, seed) got identical images.

    python scripts/load_serve.py --model runs/attngan --requests 200 --concurrency 8 --n 4
"""

import argparse
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from serve_helpers import Server  # noqa: E402

CAPTIONS = ["a small red bird with blue wings", "a large yellow bird with a black crown",
            "a green bird with a long beak", "this bird is white with gray wings and an orange belly"]


def rss_mb(pid):
    """Resident memory of process pid in MiB (Linux /proc; psutil elsewhere when installed), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:  # noqa: BLE001 - no way to measure here
        return None


def one(url, body):
    """POST body; returns (status, seconds, sha1 of the images or the error message)."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as exc:
        return exc.code, time.perf_counter() - t0, exc.read().decode(errors="replace")[:200]
    except OSError as exc:
        return None, time.perf_counter() - t0, str(exc)
    dt = time.perf_counter() - t0
    res = json.loads(raw)
    digest = hashlib.sha1(json.dumps([r["stages"] for r in res["results"]]).encode()).hexdigest()
    return status, dt, digest


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, metavar="RUN")
    ap.add_argument("--requests", type=int, default=200, metavar="R")
    ap.add_argument("--concurrency", type=int, default=8, metavar="C")
    ap.add_argument("--n", type=int, default=4, metavar="N", help="images per caption per request")
    ap.add_argument("--seeds", type=int, default=5, metavar="K", help="request i uses seed i mod K (repeats compared)")
    ap.add_argument("--device", default="cpu", metavar="DEV")
    args = ap.parse_args()

    bodies = [{"captions": [CAPTIONS[i % len(CAPTIONS)]], "n": args.n, "seed": i % args.seeds}
              for i in range(args.requests)]
    with Server("--model", args.model, "--device", args.device) as server:
        url = server.url + "api/sample"
        before = rss_mb(server.proc.pid)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            answers = list(pool.map(lambda b: one(url, b), bodies))
        wall = time.perf_counter() - t0
        after = rss_mb(server.proc.pid)
    ok = [a for a in answers if a[0] == 200]
    lat = np.array([a[1] for a in ok]) * 1000.0
    seen, mismatches = {}, 0
    for body, (status, _, digest) in zip(bodies, answers):
        if status == 200:
            key = json.dumps(body, sort_keys=True)
            mismatches += int(seen.setdefault(key, digest) != digest)
    statuses = {}
    for a in answers:
        statuses[str(a[0])] = statuses.get(str(a[0]), 0) + 1
    pct = (lambda q: round(float(np.percentile(lat, q)), 1)) if len(lat) else (lambda q: None)
    print(json.dumps({
        "requests": args.requests, "concurrency": args.concurrency, "n": args.n, "model": os.path.abspath(args.model),
        "device": args.device, "answered": len(ok), "errors": len(answers) - len(ok), "status_counts": statuses,
        "first_errors": [a[2] for a in answers if a[0] != 200][:3],
        "latency_ms": {"p50": pct(50), "p95": pct(95), "max": round(float(lat.max()), 1) if len(lat) else None,
                       "mean": round(float(lat.mean()), 1) if len(lat) else None},
        "wall_s": round(wall, 2), "requests_per_s": round(len(ok) / wall, 2) if wall else None,
        "rss_mb": {"before": None if before is None else round(before, 1),
                   "after": None if after is None else round(after, 1)},
        "distinct_requests": len(seen), "mismatches": mismatches,
    }))
    return 0 if len(ok) == len(answers) and mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
