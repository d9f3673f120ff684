"""The run folder every trainer writes: resolved config, log, per-epoch stats, atomic checkpoints and exact resume.

    RUN/config.json         the training config (training/config.py; written once, when the run starts)
    RUN/run.json            what the run resolved from it: kind, model config, sizes, data set, processes
    RUN/log.txt             timestamped log lines (also shown on stderr)
    RUN/stats.jsonl         one JSON object per evaluation (train/test losses, speed, ...)
    RUN/checkpoints/ckpt-<step:08d>.pt   full training state, written atomically, last K kept

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only (models' and optimizers'
state dicts, step/epoch, RNG states), so `torch.load(weights_only=True)` reads it: no pickled code.

Durability (docs/RELIABILITY.md): a checkpoint is written to `ckpt-<step>.pt.tmp<pid>`, fsynced,
renamed into place and the folder fsynced (t2icli.fileio), so a kill -9 or power cut at any moment
leaves only complete checkpoints under their real names. Temporary files of a killed writer are
never read and are deleted when the run folder is next opened; `--resume latest` takes the newest
checkpoint that loads, skipping (with a warning) any that do not. A failed write (full disk) is a
RunError naming the file; the previous checkpoints are untouched. Resuming drops the stats.jsonl
records written after the resumed checkpoint (the interrupted tail is trained again), so the
file never holds a step twice.
"""

import json
import os
import re
import sys
import time

import torch

from t2icli.errors import T2IError
from t2icli.fileio import atomic_torch_save, atomic_write_bytes, remove_stale_temp_files  # noqa: F401 (re-exported)

__all__ = [
    "RunError", "Run", "open_run", "atomic_write_bytes", "atomic_torch_save", "load_checkpoint", "check_checkpoint",
    "load_ema",
    "list_checkpoints", "find_latest_checkpoint", "rng_state", "set_rng_state",
]

CKPT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^ckpt-(\d{8,})\.pt$")


class RunError(T2IError):
    """A run folder or checkpoint problem the user must fix (the message names the path or flag)."""


# -- RNG ------------------------------------------------------------------------------------------
def rng_state():
    """The global torch RNG states (CPU and every CUDA device) as tensors, for a checkpoint."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what rng_state() returned."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- checkpoints ----------------------------------------------------------------------------------
def list_checkpoints(run_dir):
    """[(step, path)] of the complete checkpoints in RUN/checkpoints, oldest first."""
    folder = os.path.join(os.fspath(run_dir), CKPT_DIR)
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        m = _CKPT_RE.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(folder, name)))
    return sorted(found)


# The checkpoint open_run() verified, handed over once to the trainer's load_checkpoint of the same file
# (so resuming reads a checkpoint once, yet a bad one is refused before the run folder is touched).
_VERIFIED = {}  # {"path": abspath, "key": (size, mtime_ns), "state": dict}


def _file_key(path):
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _verify_checkpoint(path):
    """load_checkpoint(path) now (raises RunError), keeping the result for the trainer's next load of it."""
    state = load_checkpoint(path)
    _VERIFIED.clear()
    _VERIFIED.update(path=os.path.abspath(path), key=_file_key(path), state=state)
    return path


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint written by Run.save_checkpoint (weights_only). Raises RunError if unreadable."""
    path = os.fspath(path)
    if _VERIFIED.get("path") == os.path.abspath(path) and map_location == "cpu":
        hit = _VERIFIED.copy()
        _VERIFIED.clear()
        try:
            if hit["key"] == _file_key(path):
                return hit["state"]
        except OSError:
            pass
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - a truncated/corrupt/foreign file is reported the same way
        raise RunError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise RunError(f"{path}: not a t2i training checkpoint")
    return state


def check_checkpoint(ckpt, path, kind, model_config, vocab, data):
    """Raise RunError unless checkpoint `ckpt` (read from `path`) is a `kind` run with this model config and the
    vocabulary of --data `data` (what every GAN trainer checks before resuming)."""
    if ckpt.get("kind") != kind or ckpt.get("model_config") != model_config:
        raise RunError(f"--resume {path}: the checkpoint is a {ckpt.get('kind')} with model config "
                       f"{ckpt.get('model_config')}, this run asks for {kind} with {model_config}")
    if list(ckpt.get("vocab", [])) != list(vocab):
        raise RunError(f"--resume {path}: vocabulary differs from --data {data}")


def load_ema(ema, ckpt, path):
    """Restore the EMA generator from a checkpoint (nothing when the run keeps none). Raises RunError if the run
    keeps one and the checkpoint has none."""
    if ema is None:
        return
    if "G_ema" not in ckpt:
        raise RunError(f"--resume {path}: the checkpoint has no EMA generator (trained with --no-ema)")
    ema.load_state_dict(ckpt["G_ema"])


def find_latest_checkpoint(run_dir):
    """Path of the newest checkpoint in RUN/checkpoints that loads, or None if there is none.

    Checkpoints that do not load (truncated, foreign) are skipped with a warning on stderr."""
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            _verify_checkpoint(path)
        except RunError as exc:
            print(f"warning: skipping {exc}", file=sys.stderr)
            continue
        return path
    return None


def _resolve_resume(out, resume):
    """--resume value -> checkpoint path (or None for a fresh run). Raises RunError."""
    if resume is None:
        return None
    if resume == "latest":
        path = find_latest_checkpoint(out)
        if path is None:
            raise RunError(f"--resume latest: no checkpoint in {os.path.join(out, CKPT_DIR)} to resume from")
        return path
    if os.path.isdir(resume):
        path = find_latest_checkpoint(resume)
        if path is None:
            raise RunError(f"--resume {resume}: that run folder has no checkpoint")
        return path
    if not os.path.isfile(resume):
        raise RunError(f"--resume {resume}: no such checkpoint file or run folder")
    try:
        return _verify_checkpoint(resume)  # refused before --out is created or touched
    except RunError as exc:
        raise RunError(f"--resume {exc}") from None


# -- the run --------------------------------------------------------------------------------------
class Run:
    """An open run folder: log(), append_stats(), save_checkpoint(); see open_run()."""

    def __init__(self, run_dir, resume_from=None, keep=3, console=None):
        self.dir = os.fspath(run_dir)
        self.resume_from = resume_from
        if int(keep) < 1:
            raise RunError(f"--keep {keep}: must be >= 1 (the number of newest checkpoints kept)")
        self.keep = int(keep)
        self.console = console  # a rich Console on stderr while a progress bar is live
        self.config_at_start = {}  # what config.json held when the folder was opened (see open_run)
        try:
            os.makedirs(os.path.join(self.dir, CKPT_DIR), exist_ok=True)
        except OSError as exc:
            raise RunError(f"--out {self.dir}: cannot create the run folder ({exc.strerror or exc})") from None
        # Temporary files of a writer killed mid-write (kill -9, power cut): never complete, never read.
        self.removed_temp_files = (remove_stale_temp_files(self.path(CKPT_DIR))
                                   + remove_stale_temp_files(self.dir))

    def path(self, *parts):
        """A path inside the run folder."""
        return os.path.join(self.dir, *parts)

    def log(self, message):
        """Append a timestamped line to log.txt and show it on stderr."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path("log.txt"), "a", encoding="utf-8") as f:
            f.write(f"{stamp} {message}\n")
        if self.console is not None:
            self.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stderr, flush=True)

    def append_stats(self, record):
        """Append one JSON object line to stats.jsonl."""
        with open(self.path("stats.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_stats(self):
        """All records of stats.jsonl (empty list if none)."""
        try:
            with open(self.path("stats.jsonl"), encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def save_checkpoint(self, state, step):
        """Write `state` (must hold "step") atomically as checkpoints/ckpt-<step>.pt; keep the newest K.

        Raises RunError naming the file if it cannot be written (e.g. a full disk): no partial file is
        left and the previous checkpoints are untouched (older ones are pruned only after a success).
        """
        path = self.path(CKPT_DIR, f"ckpt-{int(step):08d}.pt")
        try:
            atomic_torch_save(state, path)
        except OSError as exc:
            kept = [os.path.basename(p) for _, p in list_checkpoints(self.dir)]
            raise RunError(f"could not write checkpoint {path} at step {int(step)}: {exc.strerror or exc} "
                           f"(errno {exc.errno}); nothing partial was left, the previous checkpoints are intact "
                           f"({', '.join(kept) if kept else 'none yet'}). Free space, then continue with "
                           f"--resume latest.") from None
        for _, old in list_checkpoints(self.dir)[: -self.keep]:
            try:
                os.remove(old)
            except OSError:
                pass
        return path

    def latest_checkpoint(self):
        """Newest complete checkpoint of this run, or None."""
        return find_latest_checkpoint(self.dir)


def open_run(out, config, resume=None, keep=3, info=None):
    """Create or reopen the run folder `out`.

    resume: None (new run: `out` must not hold a run already), "latest" (newest checkpoint in `out`),
    or a checkpoint file / run folder path. A new run writes config.json (the config, a JSON-able dict)
    and, when given, run.json (`info`: what the run resolved from it); a resumed run keeps the original
    ones, and `Run.config_at_start` is what its config.json holds (to log what the resumed run changed).
    Returns a Run whose `resume_from` is the checkpoint path to load (or None). Raises RunError.
    """
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunError(f"--out {out}: exists and is not a folder")
    ckpt = _resolve_resume(out, resume)
    has_run = os.path.isfile(os.path.join(out, "config.json")) or bool(list_checkpoints(out))
    if ckpt is None and has_run:
        raise RunError(f"--out {out}: already holds a run; continue it with --resume latest, or choose a new folder")
    if ckpt is None and os.path.isdir(out) and os.listdir(out):
        raise RunError(f"--out {out}: folder is not empty; choose a new or empty folder")
    run = Run(out, resume_from=ckpt, keep=keep)
    run.config_at_start = _read_json(run.path("config.json")) or {}
    for name, content in (("config.json", config), ("run.json", info)):
        if content is None or os.path.isfile(run.path(name)):
            continue
        try:
            atomic_write_bytes(run.path(name), (json.dumps(content, sort_keys=True, indent=2) + "\n").encode("utf-8"))
        except OSError as exc:
            raise RunError(f"--out {out}: cannot write {name} ({exc.strerror or exc})") from None
    for path in run.removed_temp_files:
        run.log(f"removed {path}: the temporary file of an interrupted write")
    if ckpt is not None:
        run.log(f"resuming from {ckpt}")
        m = _CKPT_RE.match(os.path.basename(ckpt))
        if m is not None:
            dropped = _trim_stats(run, int(m.group(1)))
            if dropped:
                run.log(f"dropped {dropped} stats.jsonl records after step {int(m.group(1))} "
                        "(written by the interrupted run after its last checkpoint; they are trained again)")
    return run


def _read_json(path):
    """The JSON content of `path`, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _trim_stats(run, step):
    """Rewrite stats.jsonl without the records of steps after `step`. Returns how many were dropped."""
    path = run.path("stats.jsonl")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return 0
    keep = []
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line torn by the kill
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] > step:
            continue
        keep.append(line if line.endswith("\n") else line + "\n")
    dropped = len([ln for ln in lines if ln.strip()]) - len(keep)
    if dropped:
        atomic_write_bytes(path, "".join(keep).encode("utf-8"))
    return dropped
