"""Process-group, device and precision helpers every trainer shares: one code path for 1 and N processes.

Launch any trainer unchanged with `torchrun --standalone --nproc_per_node=N -m t2icli train ...`: `init()` reads the
env:// variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and joins the group (NCCL on CUDA,
gloo on CPU); without them it is a world of one and every helper here is a no-op.

Conventions the trainers follow (and a new trainer should):
  * `--batch-size` is the GLOBAL batch. `data.make_loader(..., rank=, world=)` gives rank r the rows [r::world] of
    every global batch, so N processes see exactly the samples one process sees (and resume at the same batch).
  * Gradients are averaged over ranks, either by `wrap(module)` (DDP: one forward per step through the wrapper) or
    by `sync_grads(params)` after backward (GANs: several forwards, methods other than forward, requires_grad
    toggled between the D and G steps — patterns DDP's reducer does not allow).
  * Each rank computes the mean loss of its local rows; averaged gradients are then those of the global mean.
    A loss that couples samples (DAMSM's in-batch negatives) gathers the features of every rank with
    `all_gather_with_grad` and computes the global loss on every rank, so it equals the 1-process loss.
  * BatchNorm is synchronised across ranks (`sync_batchnorm`): batch statistics are those of the global batch.
  * Randomness that belongs to a sample (noise z, eps) is drawn for the whole global batch from a generator seeded
    with `seed_for(seed, None, step)` and sliced [rank::world]; randomness private to a rank (dropout) comes from the
    global RNG reseeded with `seed_for(seed, rank, step)` every step. Both are pure functions of (seed, rank, step).
  * Only rank 0 prints, logs, writes stats, grids, checkpoints and exports (`print0`, `mute`, `env.is_main`).
"""

import contextlib
import copy
import dataclasses
import datetime
import gc
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["Env", "init", "launch", "open_run", "current", "cleanup", "print0", "barrier", "on_main", "mute", "wrap", "sync_grads",
           "all_gather_with_grad", "all_gather", "all_mean", "any_rank", "local_rows", "sync_batchnorm", "seed_for", "autocast",
           "check_batch_size", "cpu_bf16", "local_batchnorm"]


@dataclasses.dataclass(frozen=True)
class Env:
    """This process's place in the job: rank in [0, world), local_rank on its node, its device, and whether it
    is rank 0 (the one that prints and writes)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    is_main: bool = True
    backend: str = ""  # "nccl" | "gloo" | "" (world of one)

    def describe(self, batch_size):
        """', N processes x B/N (backend)' for a log line when the job has several processes, else ''."""
        return f", {self.world} processes x {batch_size // self.world} ({self.backend})" if self.world > 1 else ""


_env = Env()
_owned = False  # True when init() created the process group (and the last cleanup() should destroy it)
_depth = 0  # init() calls not yet matched by cleanup(): a trainer called inside an initialised job leaves it be


def init(device="cpu", timeout_minutes=60):
    """Join the process group torchrun describes (if any) and return this process's Env.

    device: what the user asked for ("cpu", "cuda", "cuda:0"). With WORLD_SIZE > 1, "cuda" becomes
    cuda:LOCAL_RANK and an explicit index is an error (ValueError naming --device). An already initialised
    default group (e.g. a test that spawned processes itself) is used as it is. Calls nest: each init() is
    matched by one cleanup(), and only the outermost cleanup() destroys a group init() created.
    """
    global _env, _owned, _depth
    dev = torch.device(device)
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    if not dist.is_available() or (world_env <= 1 and not dist.is_initialized()):
        _env = Env(device=str(dev))
        return _env
    _depth += 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        if dev.index is not None and world_env > 1:
            raise ValueError(f"--device {device}: with {world_env} processes give --device cuda; "
                             "each process uses cuda:LOCAL_RANK")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend, init_method="env://", timeout=datetime.timedelta(minutes=timeout_minutes),
                                **kwargs)
        _owned = True
    rank, world = dist.get_rank(), dist.get_world_size()
    _env = Env(rank=rank, world=world, local_rank=local_rank, device=str(dev), is_main=rank == 0,
               backend=str(dist.get_backend()))
    return _env


def current():
    """The Env of the last init() (a world of one before any)."""
    return _env


def cleanup(wait=True):
    """Match one init(): wait for every rank (wait=True); the outermost call destroys the group init() created."""
    global _env, _owned, _depth
    if _env.world == 1:
        return
    if wait:
        barrier()
    _depth = max(_depth - 1, 0)
    if _depth > 0:
        return
    if _owned and dist.is_initialized():
        gc.collect()  # DDP reducers that are no longer referenced must go before their process group
        dist.destroy_process_group()
    _owned = False
    _env = Env(device=_env.device)


def print0(*args, **kwargs):
    """print() on rank 0 only (to stderr unless file= says otherwise: stdout is for results)."""
    if _env.is_main:
        kwargs.setdefault("file", sys.stderr)
        print(*args, **kwargs)


def barrier():
    """Block until every rank gets here (no-op in a world of one)."""
    if _env.world > 1:
        dist.barrier()


def on_main(fn):
    """Call fn() on rank 0 only and give every rank its result; an exception raised there is raised on every rank.

    For set-up steps only rank 0 may do (creating the run folder) whose outcome every rank needs. The result
    must be picklable.
    """
    if _env.world == 1:
        return fn()
    payload = [None]
    error = None
    if _env.is_main:
        try:
            payload = [("ok", fn())]
        except Exception as exc:  # noqa: BLE001 - handed to every rank, re-raised below
            error = exc
            payload = [("error", exc)]
    dist.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    kind, value = payload[0]
    if kind == "error":
        raise value
    return value


def mute(obj, *methods):
    """obj on rank 0; elsewhere a shallow copy whose named methods do nothing (return None), e.g.
    mute(run, "log", "append_stats", "save_checkpoint") so that only rank 0 writes the run folder."""
    if _env.is_main:
        return obj
    quiet = copy.copy(obj)
    for name in methods:
        setattr(quiet, name, lambda *a, **k: None)
    return quiet


def wrap(module, **ddp_kwargs):
    """DistributedDataParallel(module) in a world of N > 1 (gradients averaged during backward), else the module.

    Call the wrapper exactly once per step (one forward, then backward); keep the bare module for state dicts.
    """
    if _env.world == 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    dev = torch.device(_env.device)
    ids = [dev] if dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, **ddp_kwargs)


def sync_grads(params):
    """Average the .grad of `params` over ranks in place (one flat all-reduce). No-op in a world of one.

    Parameters whose grad is None are skipped; every rank runs the same code, so they are the same on every rank.
    """
    if _env.world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= _env.world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


class _GatherRows(torch.autograd.Function):
    """all-gather in the global row order; backward sums the gradients of every rank and keeps this rank's rows."""

    @staticmethod
    def forward(ctx, x):
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.world = rank, world
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts, 1).flatten(0, 1)  # [b * world, ...]: row j * world + r is rank r's row j

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's loss may depend on this rank's rows
        return grad[ctx.rank :: ctx.world]


def all_gather_with_grad(x):
    """x [b, ...] (this rank's rows of the global batch) -> [world * b, ...], the global batch in the order one
    process would see it (global row g = j * world + r is rank r's row j, as make_loader's [r::world] slices).

    Differentiable: the gradient reaching x is the sum over ranks of d(loss_rank)/d(x). When every rank computes
    the same global loss L from the gathered tensor, that is world * dL/dx, and the averaging of `wrap` /
    `sync_grads` turns it into exactly dL/dtheta. Identity in a world of one. All ranks need equal b.
    """
    if _env.world == 1:
        return x
    return _GatherRows.apply(x)


@torch.no_grad()
def all_gather(x):
    """all_gather_with_grad without gradient (ids, lengths, frozen features): [b, ...] -> [world * b, ...]."""
    if _env.world == 1:
        return x
    return _GatherRows.apply(x.detach())


def local_rows(x):
    """This rank's rows [rank::world] of a global-batch tensor [B, ...] (the inverse of the gathers)."""
    return x if _env.world == 1 else x[_env.rank :: _env.world]


def all_mean(values):
    """Average a 1-D float tensor (e.g. this rank's losses, for logging) over ranks; returns a new tensor."""
    if _env.world == 1:
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / _env.world


def any_rank(flag):
    """True on every rank if `flag` is true on any (so that all ranks take a decision such as stopping together)."""
    if _env.world == 1:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_env.device if _env.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def open_run(out, config, resume=None, keep=3, notes=(), info=None):
    """training.run.open_run on rank 0 (its error, if any, raised on every rank); on the other ranks the run's
    log, stats and checkpoint writes do nothing. Every trainer opens its run folder this way (training/loop.fit).

    Then logs `notes` (lines gathered before the log existed) and, when config asks for bf16 on a CPU device,
    whether this CPU runs it (cpu_bf16) or ignores it."""
    from t2icli.training import run as runlib

    run = on_main(lambda: runlib.open_run(out, config, resume=resume, keep=keep, info=info))
    run = mute(run, "log", "append_stats", "save_checkpoint")
    for line in notes:
        run.log(line)
    if config.get("precision") == "bf16" and torch.device(config.get("device", "cpu")).type != "cuda":
        run.log("--precision bf16 on CPU: forward passes in bf16 (this CPU computes bf16 natively)" if cpu_bf16() else
                "--precision bf16 is ignored on this CPU (no native bf16: AVX512-BF16 or AMX): training in fp32")
    return run


def launch(train_fn, device, batch_size, error):
    """Run train_fn(env) inside init() / cleanup(): joins the torchrun job if there is one and checks that the
    global batch splits over its ranks. A ValueError from either is raised as `error` (the trainer's user-facing
    exception type). A failed rank does not wait for the others at cleanup (torchrun stops them)."""
    try:
        env = init(device)
    except ValueError as exc:
        raise error(str(exc)) from None
    try:
        check_batch_size(batch_size)
    except ValueError as exc:
        cleanup()  # every rank fails here alike
        raise error(str(exc)) from None
    ok = False
    try:
        result = train_fn(env)
        ok = True
        return result
    finally:
        cleanup(wait=ok)


def check_batch_size(batch_size, flag="--batch-size"):
    """Raise ValueError (naming the flag) unless the global batch splits evenly over the ranks."""
    if batch_size % _env.world:
        raise ValueError(f"{flag} {batch_size} is the global batch and must be divisible by the number of "
                         f"processes ({_env.world}); e.g. {flag} {max(_env.world, batch_size // _env.world * _env.world)}")


def seed_for(seed, rank, step):
    """A 63-bit seed that is a pure function of (seed, rank, step); rank=None gives the stream every rank shares."""
    key = [int(seed), int(step), 0 if rank is None else int(rank) + 1, 0x5EED]
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> np.uint64(1))


def cpu_bf16():
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles). There oneDNN's bf16 convolutions and
    matrix products run faster than fp32 (the toybirds-pretrained AttnGAN step 1.5x on a 2-core AMD EPYC with
    AVX512-BF16: scripts/profile_gan.py --variant base: --variant bf16:precision=bf16); elsewhere bf16 would be
    emulated in fp32 registers, slower than fp32, so --precision bf16 is ignored there."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def allocator():
    """The malloc this process allocates with: "tcmalloc" or "jemalloc" when its library is loaded into the process
    (LD_PRELOAD), else "system". A CPU training step allocates and frees hundreds of tensors; with tcmalloc the
    toybirds-cpu AttnGAN and DAMSM steps run 1.1-1.2x faster than with glibc's malloc, to the same bits
    (scripts/_tcmalloc.sh, which the training scripts use)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:  # not Linux
        return "system"
    return next((name for name in ("tcmalloc", "jemalloc") if f"lib{name}" in maps), "system")


def tcmalloc_library():
    """The soname of the system's tcmalloc (e.g. "libtcmalloc_minimal.so.4": LD_PRELOAD accepts it), or None."""
    import ctypes.util

    return ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")


def autocast(device, precision):
    """The one precision idiom: bf16 autocast for forward passes on CUDA, and on a CPU that computes bf16 natively
    (cpu_bf16); nothing otherwise. Losses, penalties, optimisers and EMA stay fp32 (the callers' contract)."""
    kind = torch.device(device).type
    if precision == "bf16" and (kind == "cuda" or (kind == "cpu" and cpu_bf16())):
        return torch.autocast(kind, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# -- synchronised BatchNorm ---------------------------------------------------------------------------
class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum that every rank uses is the sum of every rank's gradient."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch on any backend (torch's SyncBatchNorm needs CUDA): in training, the mean
    and variance of every channel are summed over ranks (two differentiable all-reduces); in eval, plain BN.

    Same parameters, buffers and state-dict keys as nn.BatchNorm1d/2d, so exports load into the plain model.
    """

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        C = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        shape = [1, C] + [1] * (x.dim() - 2)
        xf = x.float()
        n_local = torch.tensor([x.numel() // C], dtype=torch.float32, device=x.device)
        s = _AllReduceSum.apply(torch.cat([xf.sum(dims), n_local]))  # [C + 1]
        n = s[C].detach()
        mean = s[:C] / n  # [C]
        d = xf - mean.view(shape)
        var = _AllReduceSum.apply((d * d).sum(dims)) / n  # [C] biased, as BN normalises with
        y = d * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / max(float(n) - 1, 1.0), m)  # unbiased, as BatchNorm
        return y.to(x.dtype)


def sync_batchnorm(module):
    """Make every BatchNorm layer of `module` use the statistics of the global batch (in place; returns module).

    CUDA: torch.nn.SyncBatchNorm; CPU (gloo): GlooSyncBatchNorm. Identity in a world of one. Call it before
    copying the module (EMA) and before building optimisers over its parameters (the parameters are reused).
    """
    if _env.world == 1:
        return module
    if torch.device(_env.device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_gloo(module)


def local_batchnorm(module):
    """A deep copy of `module` whose synchronised BatchNorm layers (torch's SyncBatchNorm, GlooSyncBatchNorm) are
    plain ones with the same parameters and statistics: its training-mode forward passes use this process's batch
    alone (one rank computing standing statistics while the others wait must not all-reduce)."""
    import copy

    return _swap_batchnorm(copy.deepcopy(module), lambda m: isinstance(m, (nn.SyncBatchNorm, GlooSyncBatchNorm)),
                           _LocalBatchNorm)


class _LocalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Plain BatchNorm of any input rank (what local_batchnorm puts in place of a synchronised layer)."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")


def _convert_gloo(module):
    return _swap_batchnorm(module, lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm)
                           and not isinstance(m, GlooSyncBatchNorm), GlooSyncBatchNorm)


def _swap_batchnorm(module, match, cls):
    """Replace every BatchNorm layer of `module` that `match` accepts (the module itself included) by a `cls` layer
    sharing its parameters and statistics (the same tensors), in its train/eval mode. Returns the (new) root."""
    out = module
    if match(module):
        out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        new = _swap_batchnorm(child, match, cls)
        if new is not child:
            setattr(out, name, new)
    return out
