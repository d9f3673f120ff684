"""What the two baseline trainers (GAN-INT-CLS, StackGAN v1) share: data/text set-up, snapshots and the step loop.

`setup()` loads the data, the frozen DAMSM text encoder (and image encoder, for the generated-image R-precision) and,
with --text-embeddings, StackGAN's char-CNN-RNN embeddings mapped to the training split; `Context.condition(batch)`
gives the sentence feature t of each row: the DAMSM e_bar of the caption the loader drew, or the char-CNN-RNN
embedding of the same caption (row k of the image's E embeddings, k mod E).

`Loop` runs optimiser steps over epochs of the deterministic loader with the run-folder contract of the AttnGAN
trainer (training/attngan.py): stats.jsonl every log_every steps, fakes<step>.png + quick R-precision every
snapshot_every, checkpoints, a rich progress bar on stderr, --max-minutes, a TrainError on a non-finite loss.
Determinism as there: the global torch RNG is reseeded every step from (seed, rank, step) and the per-sample noise
of a step is drawn for the whole global batch from a generator seeded with (seed, step), so a resumed run continues
exactly.

Distributed (torchrun, see training/distributed.py), as the AttnGAN trainer: `batch_size` is the global batch and
rank r trains on its rows [r::world] (the loader's), with the noise those rows get in one process (`global_noise`);
the trainers synchronise BatchNorm, pair the global batch's mismatched captions (`mismatched`), average gradients
with distributed.sync_grads and losses with distributed.all_mean, so N processes compute the losses of one process
at the same global batch. The loop stops all ranks together; only rank 0 snapshots, logs and writes.
"""

import dataclasses
import math
import os
import time

import torch

from t2icli.training import distributed
from t2icli.training.attngan import (TrainError, _fixed_captions, encode_prompts, generated_rprecision,
                                     load_damsm_and_splits)

__all__ = ["Context", "setup", "Loop", "check_positive", "global_noise", "mismatched", "step_stats", "start",
           "compiled", "sync_step"]


def check_positive(**values):
    """Raise TrainError naming the flag of any value that is given and not > 0."""
    for name, v in values.items():
        if v is not None and not v > 0:
            raise TrainError(f"--{name.replace('_', '-')} must be > 0, got {v}")


@dataclasses.dataclass
class Context:
    """The loaded inputs of a baseline run (see setup())."""

    meta: dict
    image_size: int
    train_ds: object
    test_ds: object
    vocab: list
    text_encoder: object
    image_encoder: object
    damsm_config: object
    device: str
    text_source: str  # "damsm" | "char-cnn-rnn"
    text_dim: int
    embeddings: object = None  # float32 tensor [n_train, E, D] (char-cnn-rnn) or None

    @torch.no_grad()
    def condition(self, batch):
        """t [b, text_dim] of a loader batch: DAMSM sentence features or the drawn caption's char-CNN-RNN row."""
        if self.embeddings is None:
            return self.text_encoder(batch["tokens"].to(self.device), batch["lengths"])[1]  # [b, D]
        E = self.embeddings.shape[1]
        return self.embeddings[batch["indices"], batch["captions"] % E].to(self.device)  # [b, 1024]

    @torch.no_grad()
    def prompts(self, n, extra=None):
        """Fixed snapshot captions: (t [n', text_dim], texts). DAMSM: `extra` strings then the first n test
        captions; char-CNN-RNN: the first n training images' first embeddings (no encoder for new text)."""
        if self.embeddings is None:
            tokens, lengths, _, texts = _fixed_captions(self.test_ds, n)
            if extra:
                x_tokens, x_lengths, x_texts = encode_prompts(self.test_ds, extra)
                tokens, lengths, texts = torch.cat([x_tokens, tokens]), torch.cat([x_lengths, lengths]), x_texts + texts
            return self.text_encoder(tokens.to(self.device), lengths)[1], texts
        k = min(max(int(n), 1), len(self.train_ds))
        texts = [self.train_ds.caption_texts(i)[0] for i in range(k)]
        return self.embeddings[:k, 0].to(self.device), texts


def setup(data, damsm, device, seed, resolutions, text_embeddings=None, log=None):
    """Load everything a baseline run needs. resolutions: the training images' sides (e.g. [16, 64]).

    Returns a Context. Raises TrainError / DataError naming the flag (--damsm vocabulary, --text-embeddings counts).
    """
    from t2icli.data import load_meta

    meta = load_meta(data)
    text_encoder, image_encoder, dcfg, train_ds, test_ds = load_damsm_and_splits(data, meta, damsm, device, seed,
                                                                                 resolutions)
    vocab = list(train_ds.vocab)
    for m in (text_encoder, image_encoder):
        m.eval().requires_grad_(False)
    emb, source, text_dim = None, "damsm", int(dcfg.dim)
    if text_embeddings is not None:
        from t2icli.data.embeddings import embeddings_for_split

        emb = torch.from_numpy(embeddings_for_split(text_embeddings, data, "train", log=log))  # [n, E, D]
        source, text_dim = "char-cnn-rnn", int(emb.shape[2])
    return Context(meta=meta, image_size=int(meta["image_size"]), train_ds=train_ds, test_ds=test_ds, vocab=vocab,
                   text_encoder=text_encoder, image_encoder=image_encoder, damsm_config=dcfg, device=device,
                   text_source=source, text_dim=text_dim, embeddings=emb)


def start(train_fn, device, batch_size, precision, args):
    """Run train_fn(env, **args) inside distributed.init/cleanup (the AttnGAN trainer's wrapper): joins the torchrun
    job if any, checks that the global batch splits over the ranks and that the device and precision exist.
    Raises TrainError naming the flag."""
    if precision not in ("fp32", "bf16"):
        raise TrainError(f"--precision {precision!r}: choose fp32 or bf16")
    if torch.device(device).type != "cpu" and not torch.cuda.is_available():
        raise TrainError(f"--device {device}: no CUDA device is available")
    return distributed.launch(train_fn, device, batch_size, args, TrainError)


def global_noise(gen, b, *dims):
    """This rank's rows of noise drawn for the whole global batch (b * world rows), one tensor per dim in dims, in
    the order given: [b, d] each, on the CPU. One process draws exactly these tensors."""
    B = b * distributed.current().world
    return [distributed.local_rows(torch.randn(B, d, generator=gen)) for d in dims]


def mismatched(t):
    """The wrong captions of this rank's rows: rows of the global batch's roll (losses.mismatched in one process).
    t [b, D] -> [b, D]."""
    from t2icli import losses

    if distributed.current().world == 1:
        return losses.mismatched(t)
    return distributed.local_rows(losses.mismatched(distributed.all_gather(t)))


def step_stats(losses_by_name):
    """{name: scalar tensor} of this rank -> {name: float} averaged over ranks (one all-reduce)."""
    names = list(losses_by_name)
    stats = torch.stack([losses_by_name[k].detach().float().reshape(()) for k in names])
    return dict(zip(names, distributed.all_mean(stats).tolist()))


def compiled(module, on):
    """torch.compile(module) when `on` (what the step calls; keep the module for parameters and state dicts)."""
    return torch.compile(module) if on else module


def sync_step(opt):
    """Average the gradients of an optimiser's parameters over ranks, then step it."""
    distributed.sync_grads([p for group in opt.param_groups for p in group["params"]])
    opt.step()


class eval_mode:
    """Context: `net` and all its submodules in eval mode, each module's own train/eval flag restored after (a
    frozen Stage-I inside a training StackGAN stays frozen)."""

    def __init__(self, net):
        self.modes = [(m, m.training) for m in net.modules()]
        self.net = net

    def __enter__(self):
        self.net.eval()
        return self.net

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode
        return False


@torch.no_grad()
def snapshot_images(net, t, z, eps):
    """Every stage's images of `net` (eval mode) for t [n, D], z [n, z_dim], eps [n, cond_dim]: [x_i uint8]."""
    from t2icli.viz import to_uint8

    with eval_mode(net):
        return [to_uint8(x) for x in net(z, t, None, None, eps=eps)["images"]]


def quick_rprecision(net, ctx, n, runs, seed):
    """Generated-image R-precision (DAMSM encoders) of `net` on the first n test captions; None when it can't be
    measured (char-CNN-RNN conditioning has no features for test captions, or too few captions)."""
    if ctx.embeddings is not None or n < 2:
        return None
    tokens, lengths, class_ids, _ = _fixed_captions(ctx.test_ds, n)
    with eval_mode(net):
        return generated_rprecision(net, ctx.text_encoder, ctx.image_encoder, tokens, lengths, class_ids, runs=runs,
                                    seed=seed)


class Loop:
    """The optimiser-step loop with counters (step, epoch, batch) that checkpoints carry.

    run: the open Run; keys: the loss names step_fn returns (logged as running means); snapshot(): writes a
    grid and returns the stats record; checkpoint(): writes the full state.
    """

    def __init__(self, run, kind, ctx, batch_size, seed, num_workers=0, snapshot_every=1000, checkpoint_every=None,
                 log_every=None, progress=True, keys=("d", "g"), total=1):
        self.run, self.kind, self.ctx = run, kind, ctx
        self.batch_size, self.seed, self.num_workers = int(batch_size), int(seed), int(num_workers)
        self.snapshot_every = int(snapshot_every)
        self.checkpoint_every = int(checkpoint_every or snapshot_every)
        self.log_every = int(log_every or max(1, min(100, total // 20)))
        self.keys = tuple(keys)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.per_epoch = len(ctx.train_ds) // self.batch_size
        self.train_seconds, self.images_seen = 0.0, 0
        self.t_start, self.cpu_start = time.perf_counter(), time.process_time()
        self.env = distributed.current()
        self.progress = progress and self.env.is_main
        self.bar = self.task = None
        self.last = None

    def counters(self):
        return {"step": self.step, "epoch": self.epoch, "batch": self.batch_in_epoch}

    def load_counters(self, ckpt):
        self.step, self.epoch, self.batch_in_epoch = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch"])

    def start_bar(self, total):
        if not self.progress:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        console = Console(stderr=True)
        self.bar = Progress(TextColumn(f"[bold]{self.kind}[/]"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn(), console=console)
        self.run.console = console
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=min(self.step, total), info="")

    def stop_bar(self):
        if self.bar is not None:
            self.bar.stop()
            self.run.console = None
            self.bar = None

    def check(self, vals):
        """TrainError on a non-finite loss (called by step_fn before any backward of that step)."""
        bad = {k: v for k, v in vals.items() if not math.isfinite(v)}
        if bad:
            raise TrainError(f"non-finite loss at step {self.step + 1} ({bad}); stopped without saving: the last "
                             f"checkpoint in {self.run.path('checkpoints')} is intact. Try lower --lr-g/--lr-d.")

    def run_until(self, until, step_fn, deadline=None, snapshot=None, checkpoint=None, label=""):
        """Train until step == `until` or time.perf_counter() >= deadline. step_fn(batch, gen) -> {key: float}, where
        gen is the step's noise generator (the same on every rank: draw for the global batch, see global_noise).
        Snapshots (rank 0) and checkpoints every N steps (not at the stopping step); every rank stops at the same
        step. Returns "steps" or "time"."""
        from t2icli.data import make_loader

        device, env = self.ctx.device, self.env
        running = {k: 0.0 for k in self.keys}
        running_n = 0
        if self.step >= until:
            return "steps"
        while True:
            loader = make_loader(self.ctx.train_ds, self.batch_size, shuffle=True, drop_last=True, seed=self.seed,
                                 epoch=self.epoch, start_batch=self.batch_in_epoch, num_workers=self.num_workers,
                                 rank=env.rank, world=env.world)
            rng = torch.get_rng_state()
            batches = iter(loader)  # DataLoader draws a base seed from the global RNG; keep the stream intact
            torch.set_rng_state(rng)
            t0 = time.perf_counter()
            stop = None
            for batch in batches:
                batch["images"] = [x.to(device) for x in batch["images"]]
                torch.manual_seed(distributed.seed_for(self.seed, env.rank, self.step))  # rank-private randomness
                gen = torch.Generator().manual_seed(distributed.seed_for(self.seed, None, self.step))
                vals = step_fn(batch, gen)
                self.step += 1
                self.batch_in_epoch += 1
                self.images_seen += len(batch["tokens"]) * env.world  # the global batch
                self.last = vals
                for k in self.keys:
                    running[k] += vals[k]
                running_n += 1
                now = time.perf_counter()
                ips = self.images_seen / max(self.train_seconds + now - t0, 1e-9)
                if self.bar is not None:
                    info = " ".join(f"{k} {vals[k]:.2f}" for k in self.keys)
                    self.bar.update(self.task, completed=self.step, info=f"{label}{info} {ips:.1f} img/s")
                if self.step % self.log_every == 0:
                    rec = {"step": self.step, "epoch": self.epoch, "images_per_s": ips,
                           "cpu_seconds": time.process_time() - self.cpu_start,
                           "wall_seconds": time.perf_counter() - self.t_start,
                           "train": {k: running[k] / running_n for k in self.keys}}
                    if label:
                        rec["phase"] = label.strip()
                    self.run.append_stats(rec)
                    if self.bar is None:
                        self.run.log(f"{label}step {self.step} " + " ".join(f"{k} {rec['train'][k]:.3f}"
                                                                            for k in self.keys) + f" {ips:.1f} img/s")
                    running, running_n = {k: 0.0 for k in self.keys}, 0
                if self.step >= until:
                    stop = "steps"
                elif deadline is not None and distributed.any_rank(now >= deadline):  # every rank stops together
                    stop = "time"
                if self.batch_in_epoch >= self.per_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                if stop is None and snapshot is not None and self.step % self.snapshot_every == 0 and env.is_main:
                    self.train_seconds += time.perf_counter() - t0
                    snapshot()
                    t0 = time.perf_counter()
                if stop is None and checkpoint is not None and self.step % self.checkpoint_every == 0:
                    checkpoint()
                if stop or self.batch_in_epoch == 0:
                    break
            self.train_seconds += time.perf_counter() - t0
            if stop:
                return stop

    def record_snapshot(self, grid, rp, seconds, extra=None):
        """Append a snapshot record to stats.jsonl (and log the R-precision)."""
        rec = {"step": self.step, "epoch": self.epoch, "snapshot": os.path.basename(grid),
               "gen_rprecision": None if rp is None else {k: rp[k] for k in ("mean", "std", "n_negatives", "n")},
               "snapshot_seconds": seconds}
        rec.update(extra or {})
        self.run.append_stats(rec)
        if rp is not None:
            self.run.log(f"step {self.step}: generated-image R-precision {rp['mean']:.3f}±{rp['std']:.3f} "
                         f"({rp['n']} test captions, 1+{rp['n_negatives']}) -> {os.path.basename(grid)}")
        return rec

    def final_extra(self):
        """The extra fields of the final stats record: {"final", "train_seconds", "last", "images_per_s"}."""
        return {"final": True, "train_seconds": self.train_seconds, "last": self.last,
                "images_per_s": self.images_seen / self.train_seconds if self.train_seconds > 0 else None}

    def result(self, stop, export, rp, grid):
        """The dict the trainers return (same keys as training/attngan.py's)."""
        return {"run_dir": self.run.dir, "export": export, "step": self.step, "epoch": self.epoch, "stop": stop,
                "images_per_s": self.final_extra()["images_per_s"], "train_seconds": self.train_seconds, "seconds": time.perf_counter() - self.t_start,
                "cpu_seconds": time.process_time() - self.cpu_start, "rprecision": rp, "snapshot": grid,
                "attention": None, "is_main": self.env.is_main, "world": self.env.world}


def fixed_noise(seed, n, z_dim, cond_dim):
    """Snapshot noise from a private generator (never touches the training stream): (z [n, z_dim], eps [n, c])."""
    gen = torch.Generator().manual_seed(int(seed) + 104729)
    return torch.randn(n, z_dim, generator=gen), torch.randn(n, cond_dim, generator=gen)
