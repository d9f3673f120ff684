"""The one training loop every trainer runs, and `fit()`, which opens the run folder, builds, resumes and exports.

A trainer (a subclass of `Trainer`) holds its set-up, its step function and its snapshot; the loop owns the rest:

  * steps, epochs and the batch within the epoch: epoch e is the deterministic loader of (seed, e), entered at the
    saved batch on resume; rank r of a torchrun job gets rows [r::world] of every global batch;
  * randomness as a pure function of (seed, rank, step): before step s the global torch RNG (dropout, anything
    private to a rank) is reseeded with seed_for(seed, rank, s), and the step gets a torch.Generator seeded with
    seed_for(seed, None, s) for the per-sample noise of the whole global batch. So a resumed run, and N processes,
    compute what one uninterrupted process does;
  * stats.jsonl (running means of the step's losses every log_every steps, snapshot records), log.txt, the rich
    progress bar on stderr, TensorBoard scalars and grids (--tensorboard), `--max-minutes` (every rank stops at the
    same step), the snapshot and checkpoint cadence, the stop on a non-finite loss (nothing is saved), and the final
    checkpoint + snapshot + export.
"""

import math
import time

import torch

from t2icli.training import distributed
from t2icli.training.run import RunError, load_checkpoint

__all__ = ["Trainer", "Loop", "fit"]


class Trainer:
    """What a trainer module defines (subclass it). The loop calls, in order: __init__(cfg, env, resume) (load data and
    frozen models, derive model configs: no RNG, no run folder yet), check_resume(ckpt, path), build(ckpt) right
    after torch.manual_seed(cfg.seed) (-> TrainState), describe(), then fit(loop) (-> stop reason), whose steps call
    step(batch, gen); snapshot(final) on rank 0 at the cadence; export() at the end (rank 0).
    """

    log_keys = ("loss",)  # the floats step() returns: running means in stats.jsonl, shown on the progress bar
    lr_flags = "--lr"  # named in the non-finite-loss message
    log_records = True  # write a stats record of running means every log_every steps (DAMSM: at evaluations only)
    checkpoint_at_epoch_end = False  # also checkpoint when an epoch ends (DAMSM)
    snapshot_at_start = True  # a snapshot of the untrained model at step 0 (DAMSM: its first evaluation ends epoch 1)

    def __init__(self, cfg, env, resume=None):
        self.cfg, self.env, self.device, self.resume = cfg, env, env.device, resume
        self.notes = []  # lines for log.txt gathered before the run folder exists
        self.loop = None  # set by fit()

    # -- set-up ------------------------------------------------------------------------------------------
    def info(self):
        """What the run resolved from its config (model config, sizes, data set, ...): RUN/run.json."""
        return {}

    def check_resume(self, ckpt, path):
        """Raise RunError if checkpoint `ckpt` cannot continue this run."""

    def build(self, ckpt):
        """Build networks, optimisers and EMA (the global RNG was just seeded). Returns a TrainState."""
        raise NotImplementedError

    def describe(self):
        """One log line: parameter counts, data, batch, steps."""
        return self.cfg.kind

    # -- training ----------------------------------------------------------------------------------------
    def total_steps(self, per_epoch):
        """Steps this run trains in all (the progress bar's total): --steps or --epochs (600 when neither is set),
        whichever comes first."""
        steps, epochs = self.cfg.steps, self.cfg.epochs
        if steps is None and epochs is None:
            epochs = 600
        return min(n for n in (steps, None if epochs is None else epochs * per_epoch) if n is not None)

    def stop_reason(self, step):
        """Why a run that reached `step` stops: "steps" (--steps) or "epochs"."""
        return "steps" if getattr(self.cfg, "steps", None) is not None and step >= self.cfg.steps else "epochs"

    def fit(self, loop):
        """Train to the end; returns the stop reason. One run of the loop unless the trainer has phases."""
        return loop.train(loop.total, self.step, loop.deadline())

    def on_epoch(self, epoch):
        """Called whenever the loop (re-)enters an epoch, before its first batch."""

    def step(self, batch, gen):
        """One optimiser step on this rank's rows; gen: the step's noise generator. Returns {key: float}."""
        raise NotImplementedError

    def snapshot_due(self, step, epoch, epoch_ended):
        return step % self.cfg.snapshot_every == 0

    def checkpoint_every(self):
        return self.cfg.checkpoint_every or self.cfg.snapshot_every

    def snapshot(self, final=False):
        """Grids / evaluation at the current step (rank 0). Returns the stats record (without step/epoch)."""
        return {}

    def describe_record(self, rec):
        """The log line of a snapshot record, or None."""
        return None

    def export(self):
        """Write the inference export (rank 0). Returns its path."""
        raise NotImplementedError

    def result(self):
        """Trainer-specific entries of fit()'s result."""
        return {}


class _Running:
    """Running means of the step losses since the last take()."""

    def __init__(self, keys):
        self.keys = tuple(keys)
        self.take()

    def add(self, vals):
        for k in self.keys:
            self.sums[k] += vals[k]
        self.n += 1

    def take(self):
        """{key: mean} since the last take (None when no step was added), and reset."""
        means = {k: v / self.n for k, v in self.sums.items()} if getattr(self, "n", 0) else None
        self.sums, self.n = {k: 0.0 for k in self.keys}, 0
        return means


class Loop:
    """Counters, cadence, logging and stopping of one run (see the module docstring). Built by fit()."""

    def __init__(self, cfg, env, run, trainer, state, progress):
        self.cfg, self.env, self.run, self.trainer, self.state = cfg, env, run, trainer, state
        self.step = self.epoch = self.batch = 0
        self.per_epoch = len(trainer.train_ds) // cfg.batch_size
        self.total = trainer.total_steps(self.per_epoch)
        self.log_every = cfg.log_every or max(1, min(100, self.total // 20))
        self.running = _Running(trainer.log_keys)
        self.train_seconds, self.images_seen, self.last = 0.0, 0, None
        self.t_start, self.cpu_start = time.perf_counter(), time.process_time()
        self.progress = progress and env.is_main
        self.bar = self.task = None
        self.tensorboard = None

    # -- counters -------------------------------------------------------------------------------------
    def counters(self):
        return {"step": self.step, "epoch": self.epoch, "batch": self.batch}

    def load_counters(self, ckpt):
        self.step, self.epoch, self.batch = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch"])

    def deadline(self, fraction=1.0):
        """time.perf_counter() at which --max-minutes (times `fraction`) is spent, counted from now; None if unset."""
        if self.cfg.max_minutes is None:
            return None
        return time.perf_counter() + 60.0 * self.cfg.max_minutes * fraction

    def images_per_s(self):
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else None

    # -- the loop -------------------------------------------------------------------------------------
    def train(self, until, step_fn, deadline=None, label=""):
        """Train until step == `until` (-> the trainer's stop reason) or time.perf_counter() >= deadline (-> "time").
        step_fn(batch, gen) -> {key: float}. Snapshots (rank 0) and checkpoints at the trainer's cadence, never at
        the stopping step (finish() writes those)."""
        from t2icli.data import make_loader

        cfg, env = self.cfg, self.env
        if self.step >= until:
            return self.trainer.stop_reason(self.step)
        while True:
            self.trainer.on_epoch(self.epoch)
            loader = make_loader(self.trainer.train_ds, cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed,
                                 epoch=self.epoch, start_batch=self.batch, num_workers=cfg.workers, rank=env.rank,
                                 world=env.world, class_pairs=cfg.class_pairs)
            rng = torch.get_rng_state()
            batches = iter(loader)  # DataLoader draws a base seed from the global RNG: keep the step streams intact
            torch.set_rng_state(rng)
            t0, stop = time.perf_counter(), None
            for batch in batches:
                batch["images"] = [x.to(self.trainer.device, non_blocking=True) for x in batch["images"]]
                torch.manual_seed(distributed.seed_for(cfg.seed, env.rank, self.step))  # rank-private randomness
                gen = torch.Generator().manual_seed(distributed.seed_for(cfg.seed, None, self.step))  # shared
                vals = step_fn(batch, gen)
                self.step += 1
                self.batch += 1
                self.images_seen += len(batch["tokens"]) * env.world  # the global batch
                self.last = vals
                self.running.add(vals)
                now = time.perf_counter()
                self._after_step(vals, self.images_seen / max(self.train_seconds + now - t0, 1e-9), label)
                if self.step >= until:
                    stop = self.trainer.stop_reason(self.step)
                elif deadline is not None and distributed.any_rank(now >= deadline):  # every rank stops together
                    stop = "time"
                epoch_ended = self.batch >= self.per_epoch
                if epoch_ended:
                    self.epoch, self.batch = self.epoch + 1, 0
                if stop is None and env.is_main and self.trainer.snapshot_due(self.step, self.epoch, epoch_ended):
                    self.train_seconds += time.perf_counter() - t0
                    self.snapshot()
                    t0 = time.perf_counter()
                every = self.trainer.checkpoint_every()
                if stop is None and ((every and self.step % every == 0)
                                     or (epoch_ended and self.trainer.checkpoint_at_epoch_end)):
                    self.checkpoint()
                if stop or epoch_ended:
                    break
            self.train_seconds += time.perf_counter() - t0
            if stop:
                return stop

    def _after_step(self, vals, ips, label):
        """Progress bar, and every log_every steps a stats record of the running means (+ a log line without bar)."""
        if self.bar is not None:
            info = " ".join(f"{k} {vals[k]:.3f}" for k in self.trainer.log_keys)
            self.bar.update(self.task, completed=min(self.step, self.total), epoch=self.epoch,
                            info=f"{label}{info} {ips:.1f} img/s")
        if self.step % self.log_every:
            return
        if self.trainer.log_records:
            rec = {"step": self.step, "epoch": self.epoch, "images_per_s": ips,
                   "cpu_seconds": time.process_time() - self.cpu_start,
                   "wall_seconds": time.perf_counter() - self.t_start, "train": self.running.take(),
                   "lr": self.state.learning_rates()}
            if label:
                rec["phase"] = label.strip()
            self.run.append_stats(rec)
            self._tensorboard(rec)
            vals = rec["train"]
        if self.bar is None:
            self.run.log(f"{label}step {self.step}/{self.total} epoch {self.epoch} "
                         + " ".join(f"{k} {vals[k]:.4f}" for k in self.trainer.log_keys) + f" {ips:.1f} img/s")

    def check_finite(self, vals):
        """Raise RunError when a loss is not finite (call it before the backward that would use it): the run
        stops without saving, its last checkpoint intact."""
        bad = {k: v for k, v in vals.items() if not math.isfinite(v)}
        if bad:
            shown = ", ".join(f"{k} {v}" for k, v in bad.items())
            raise RunError(f"non-finite loss at step {self.step + 1} (epoch {self.epoch}; {shown}); stopped without "
                           f"saving: the last checkpoint in {self.run.path('checkpoints')} is intact. Try a lower "
                           f"learning rate ({self.trainer.lr_flags}).")

    # -- snapshots, checkpoints, the end ------------------------------------------------------------------
    def snapshot(self, final=False):
        """Ask the trainer for its snapshot (rank 0) and append its record to stats.jsonl."""
        rec = dict(self.trainer.snapshot(final=final))
        rec.setdefault("step", self.step)
        rec.setdefault("epoch", self.epoch)
        if final:
            rec.update(final=True, train_seconds=self.train_seconds, last=self.last, images_per_s=self.images_per_s())
        self.run.append_stats(rec)
        self._tensorboard(rec)
        line = self.trainer.describe_record(rec)
        if line:
            self.run.log(line)
        return rec

    def checkpoint(self):
        """Write the full training state as checkpoints/ckpt-<step>.pt (rank 0); refuses non-finite weights."""
        if not self.env.is_main:
            return None
        bad = self.state.nonfinite()
        if bad:
            raise RunError(f"weights of {', '.join(bad)} are not finite at step {self.step} (epoch {self.epoch}); "
                           f"stopped without saving (the last checkpoint in {self.run.path('checkpoints')} is intact). "
                           f"Try a lower learning rate ({self.trainer.lr_flags}).")
        return self.run.save_checkpoint(self.state.state_dict(self.counters()), self.step)

    def finish(self, stop):
        """The end of training: log why, checkpoint, final snapshot (rank 0). Returns the final record (or None)."""
        self.run.log(f"stopping ({stop}) at step {self.step}, epoch {self.epoch}")
        self.checkpoint()
        return self.snapshot(final=True) if self.env.is_main else None

    # -- progress bar and TensorBoard --------------------------------------------------------------------
    def start_bar(self):
        if not self.progress:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        console = Console(stderr=True)
        self.bar = Progress(TextColumn(f"[bold]{self.cfg.kind}[/] ep {{task.fields[epoch]}}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(), console=console)
        self.run.console = console
        self.bar.start()
        self.task = self.bar.add_task("train", total=self.total, completed=min(self.step, self.total),
                                      epoch=self.epoch, info="")

    def set_total(self, total):
        """Change the number of steps shown by the progress bar (a trainer whose phases end early)."""
        self.total = total
        if self.bar is not None:
            self.bar.update(self.task, total=total)

    def stop_bar(self):
        if self.bar is not None:
            self.bar.stop()
            self.run.console = None
            self.bar = None

    def _tensorboard(self, rec):
        """Scalars of a stats record (and its grid) to RUN/tensorboard/ when --tensorboard (rank 0)."""
        if self.tensorboard is not None:
            self.tensorboard.write(rec)


def fit(cfg, trainer_cls, resume=None, progress=True):
    """Train `trainer_cls` as configured by `cfg` (a validated TrainConfig) into the run folder cfg.out.

    resume: None (a new run: cfg.out must not hold one), "latest" or a checkpoint file / run folder. progress: show
    the progress bar on stderr (rank 0). Under torchrun every process calls this; cfg.batch_size is the global
    batch. Returns {"run_dir", "export", "step", "epoch", "stop", "images_per_s", "train_seconds", "seconds",
    "cpu_seconds", "rprecision", "is_main", "world", ...trainer entries}. Raises T2IError subclasses naming the
    flag or path (bad option, data, DAMSM, resume, non-finite loss).
    """
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if torch.device(cfg.device).type != "cpu" and not torch.cuda.is_available():
        raise RunError(f"--device {cfg.device}: no CUDA device is available")
    if cfg.tensorboard:
        from t2icli.training.tensorboard import check_available

        check_available()  # before anything is written
    return distributed.launch(lambda env: _fit(cfg, trainer_cls, env, resume, progress), cfg.device, cfg.batch_size,
                              RunError)


def _fit(cfg, trainer_cls, env, resume, progress):
    t_start, cpu_start = time.perf_counter(), time.process_time()
    trainer = trainer_cls(cfg, env, resume)
    if len(trainer.train_ds) < cfg.batch_size:
        raise RunError(f"--batch-size {cfg.batch_size} is larger than the training split ({len(trainer.train_ds)} "
                       "images)")
    run = distributed.open_run(cfg.out, cfg.to_dict(), resume=resume, keep=cfg.keep, notes=trainer.notes,
                               info=dict(trainer.info(), kind=cfg.kind, world_size=env.world))
    ckpt = None
    if run.resume_from is not None:
        ckpt = load_checkpoint(run.resume_from)
        trainer.check_resume(ckpt, run.resume_from)
        changed = cfg.describe_changes(run.config_at_start)
        if changed:
            run.log("resumed with other settings than config.json: " + "; ".join(changed))
    torch.manual_seed(cfg.seed)
    state = trainer.build(ckpt)
    loop = trainer.loop = Loop(cfg, env, run, trainer, state, progress)
    if ckpt is not None:
        state.load_state_dict(ckpt, run.resume_from)
        loop.load_counters(ckpt)
        run.log(f"resumed at step {loop.step} (epoch {loop.epoch}, batch {loop.batch})")
    run.log(trainer.describe() + env.describe(cfg.batch_size))
    if cfg.tensorboard and env.is_main:
        from t2icli.training.tensorboard import TensorBoard

        loop.tensorboard = TensorBoard(run.dir)
    loop.start_bar()
    try:
        if loop.step == 0 and env.is_main and trainer.snapshot_at_start:
            loop.snapshot()
        stop = trainer.fit(loop)
        final = loop.finish(stop)
    finally:
        loop.stop_bar()
        if loop.tensorboard is not None:
            loop.tensorboard.close()
    export = trainer.export() if env.is_main else None
    if env.is_main:
        run.log(f"wrote {export} ({time.perf_counter() - t_start:.0f} s in all, "
                f"{time.process_time() - cpu_start:.0f} s of process CPU time)")
    return dict({"run_dir": run.dir, "export": export, "step": loop.step, "epoch": loop.epoch,
                 "stop": stop, "images_per_s": loop.images_per_s(),
                 "train_seconds": loop.train_seconds, "seconds": time.perf_counter() - t_start,
                 "cpu_seconds": time.process_time() - cpu_start, "final": final, "is_main": env.is_main,
                 "world": env.world}, **trainer.result())
