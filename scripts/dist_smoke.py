"""Smoke test of t2i's multi-GPU path on NCCL, run under torchrun with one process per GPU; rank 0 prints one JSON object.

    torchrun --standalone --nproc_per_node=1 scripts/dist_smoke.py --data DATA --damsm DAMSM_RUN --out DIR --json
    torchrun --standalone --nproc_per_node=2 scripts/dist_smoke.py --device cpu ...   # gloo: a CPU rehearsal

t2i's trainers create no process group in a world of one (WORLD_SIZE=1 is a plain single-process run), so on a
machine with one GPU `torchrun -m t2icli train ...` would never touch NCCL. This script therefore creates the
group itself (NCCL on cuda:LOCAL_RANK; gloo with --device cpu), even for one process, and checks:
  collectives   all_reduce, all_gather_into_tensor, broadcast and barrier give the exact expected values;
  sync_bn       (CUDA) torch's SyncBatchNorm CUDA path, statistics gathered over NCCL, forward and backward
                against plain BatchNorm on the global batch (uses torch's internal SyncBatchNorm function; reported
                as not run, with a note, if this torch has moved it);
  train         `t2icli.training.attngan.train` for a few steps inside that group (with N > 1 processes: the
                global batch split over ranks, synchronised BatchNorm, gathered DAMSM features, averaged gradients).
Exit status 0 when every check passed.
"""

import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _collectives(rank, world, dev):
    """Exact-value checks of the four collectives the trainers use; returns {name: bool}."""
    x = torch.full((1000,), float(rank + 1), device=dev)
    dist.all_reduce(x)
    out = {"all_reduce": bool(torch.all(x == world * (world + 1) / 2))}
    mine = torch.arange(6, device=dev, dtype=torch.float32) + 100 * rank  # [6]
    gathered = torch.empty(world * 6, device=dev)
    dist.all_gather_into_tensor(gathered, mine)
    want = torch.cat([torch.arange(6, device=dev, dtype=torch.float32) + 100 * r for r in range(world)])
    out["all_gather"] = bool(torch.equal(gathered, want))
    b = torch.full((3,), float(rank), device=dev)
    dist.broadcast(b, src=0)
    out["broadcast"] = bool(torch.all(b == 0))
    dist.barrier()
    out["barrier"] = True
    return out


def _sync_bn(rank, world, dev):
    """SyncBatchNorm's CUDA kernels over NCCL vs BatchNorm on the global batch: max |difference| of the output and
    the input gradient, or a note when torch's internal function is not where this torch version kept it."""
    try:
        from torch.nn.modules._functions import SyncBatchNorm as SyncBNFunction
    except ImportError as exc:
        return {"ok": None, "note": f"torch.nn.modules._functions.SyncBatchNorm not importable ({exc})"}
    g = torch.Generator().manual_seed(0)
    x_all = torch.randn(4 * world, 8, 5, 5, generator=g).to(dev)  # [global batch, C, H, W]
    weight, bias = torch.rand(8, generator=g).to(dev) + 0.5, torch.randn(8, generator=g).to(dev)
    cot_all = torch.randn(x_all.shape, generator=g).to(dev)
    x = x_all[rank::world].clone().requires_grad_(True)  # this rank's rows, as make_loader gives them
    rm, rv = torch.zeros(8, device=dev), torch.ones(8, device=dev)
    y = SyncBNFunction.apply(x, weight, bias, rm, rv, 1e-5, 0.1, dist.group.WORLD, world)
    (gx,) = torch.autograd.grad(y, x, cot_all[rank::world])
    xr = x_all.clone().requires_grad_(True)
    yr = torch.nn.functional.batch_norm(xr, None, None, weight, bias, training=True, eps=1e-5)
    (gr,) = torch.autograd.grad(yr, xr, cot_all)
    # the gradient of the global loss reaching one rank's rows: SyncBatchNorm sums the statistics' gradients
    err_y = float((y - yr[rank::world]).abs().max())
    err_g = float((gx - gr[rank::world]).abs().max())
    return {"ok": err_y < 1e-4 and err_g < 1e-4, "max_err_output": err_y, "max_err_grad": err_g}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, metavar="DIR", help="prepared toybirds folder (t2i prep toybirds)")
    p.add_argument("--damsm", required=True, metavar="RUN", help="DAMSM run folder trained on it")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder of the short training run")
    p.add_argument("--steps", type=int, default=20, metavar="N", help="training steps")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cuda: NCCL; cpu: gloo (a rehearsal)")
    p.add_argument("--json", action="store_true", help="rank 0 prints one JSON object on stdout")
    args = p.parse_args()
    if "LOCAL_RANK" not in os.environ:
        p.error("run it under torchrun (LOCAL_RANK is unset)")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device")
    local_rank = int(os.environ["LOCAL_RANK"])
    t0 = time.perf_counter()
    # One process too: the point is to run the collectives, which t2i's trainers skip in a world of one.
    if args.device == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", device_id=dev)
    else:
        dev = torch.device("cpu")
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    report = {"world": world, "backend": dist.get_backend(),
              "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
              "nccl_version": ".".join(map(str, torch.cuda.nccl.version())) if dev.type == "cuda" else None}
    report["collectives"] = _collectives(rank, world, dev)
    report["sync_bn"] = (_sync_bn(rank, world, dev) if dev.type == "cuda" else
                         {"ok": None, "note": "CUDA only (gloo runs t2i's own GlooSyncBatchNorm, tested in tests/)"})

    from t2icli.training import attngan, distributed
    from t2icli.training.config import AttnGANTrainConfig

    env = distributed.init(args.device)  # joins the group made above
    report["t2i_env"] = {"world": env.world, "backend": env.backend, "device": env.device}
    t1 = time.perf_counter()
    cfg = AttnGANTrainConfig(data=args.data, damsm=args.damsm, out=args.out, stages=2, steps=args.steps,
                             batch_size=8 * world, gf_dim=8, df_dim=8, z_dim=32, cond_dim=32, device=args.device,
                             snapshot_every=args.steps, snapshot_rprecision=0, final_rprecision=0, n_prompts=2)
    res = attngan.train(cfg, progress=False)
    distributed.cleanup()
    report["train"] = {"steps": res["step"], "world": res["world"], "seconds": round(time.perf_counter() - t1, 1),
                       "images_per_s": res["images_per_s"], "export": res["export"]}
    ok = (all(report["collectives"].values()) and report["sync_bn"]["ok"] is not False
          and report["t2i_env"]["backend"] == report["backend"] and res["step"] == args.steps)
    report["ok"] = bool(ok)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        if args.json:
            print(json.dumps(report))
        else:
            print(json.dumps(report, indent=2), file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
