"""Nothing lost: kill -9 a training run (during training, then during a checkpoint write), `--resume latest`,
and check it ends with exactly the weights of an uninterrupted run (CPU, fixed seeds, one thread).

Each trainer runs as a real `python -m t2icli train ...` subprocess. The kill during a checkpoint write uses
the test hook of t2icli/fileio.py: with T2I_TEST_SLOW_SAVE=SECONDS the writer sleeps after writing the
temporary `ckpt-<step>.pt.tmp<pid>` and before renaming it, so the test waits for that file and kills then.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from t2icli.fileio import SLOW_SAVE_ENV, is_temp_file
from t2icli.training.run import find_latest_checkpoint, list_checkpoints, load_checkpoint

pytestmark = pytest.mark.long  # left out by scripts/test.sh --fast


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """64 train / 16 test toybirds at 32 px, and a tiny random DAMSM export on its vocabulary (for attngan)."""
    from t2icli.data.toybirds import prepare_toybirds
    from t2icli.models.damsm import DAMSMConfig, build_damsm
    from t2icli.models.export import save_damsm

    root = tmp_path_factory.mktemp("killresume")
    prepare_toybirds(str(root / "data"), size=32, n_train=64, n_test=16, captions_per_image=2, workers=1)
    vocab = json.loads((root / "data" / "vocab.json").read_text())
    torch.manual_seed(0)
    cfg = DAMSMConfig(vocab_size=len(vocab), image_size=32, small_width=4, hidden=16, embedding_dim=16)
    m = build_damsm(cfg)
    (root / "damsm").mkdir()
    save_damsm(str(root / "damsm"), m.text_encoder, m.image_encoder, cfg, vocab)
    return {"data": str(root / "data"), "damsm": str(root / "damsm")}


def _start(args, log, slow_save=None):
    """Start `python -m t2icli ARGS` (one thread, output to file `log`); returns the Popen."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop(SLOW_SAVE_ENV, None)
    if slow_save is not None:
        env[SLOW_SAVE_ENV] = str(slow_save)
    f = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "t2icli", *args], stdout=f, stderr=subprocess.STDOUT, env=env)
    f.close()
    return proc


def _wait_for(what, proc, log, timeout=60.0):
    """Poll `what()` until it returns something truthy (every 10 ms); fail if `proc` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before the kill point:\n{open(log).read()[-3000:]}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"kill point not reached in {timeout} s:\n{open(log).read()[-3000:]}")


def _kill9(proc):
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _finish(proc, log):
    rc = proc.wait(timeout=300)
    assert rc == 0, open(log).read()[-3000:]


def _temp_files(run):
    folder = os.path.join(run, "checkpoints")
    return sorted(n for n in os.listdir(folder) if is_temp_file(n)) if os.path.isdir(folder) else []


def _ckpt_at_least(run, step):
    return [s for s, _ in list_checkpoints(run) if s >= step]


def _kill_resume_finish(tmp_path, args, first_kill_step, every):
    """The shared scenario; returns (uninterrupted run, interrupted+resumed run, log of the last resume)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ref = _start([*args, "--out", a], tmp_path / "a.log")  # the uninterrupted run, alongside (2 cores)

    # 1. kill -9 during training, once a few checkpoints exist.
    log1 = tmp_path / "b1.log"
    p = _start([*args, "--out", b], log1)
    _wait_for(lambda: _ckpt_at_least(b, first_kill_step), p, log1)
    _kill9(p)
    assert not os.path.exists(os.path.join(b, "generator.pt")) and not os.path.exists(os.path.join(b, "damsm.pt"))
    last_good = max(s for s, _ in list_checkpoints(b))

    # 2. resume, and kill -9 while the next checkpoint is being written (its temp file exists, not yet renamed).
    log2 = tmp_path / "b2.log"
    p = _start([*args, "--out", b, "--resume", "latest"], log2, slow_save=120)
    temp = _wait_for(lambda: _temp_files(b), p, log2)
    _kill9(p)
    assert temp == _temp_files(b) and len(temp) == 1, temp  # the killed writer's temp file stays behind ...
    assert temp[0].startswith(f"ckpt-{last_good + every:08d}.pt.tmp")  # ... for the checkpoint after the resumed one
    assert max(s for s, _ in list_checkpoints(b)) == last_good  # and never appears as a checkpoint
    assert find_latest_checkpoint(b).endswith(f"ckpt-{last_good:08d}.pt")

    # 3. resume again and run to the end: it continues from the last complete checkpoint.
    log3 = tmp_path / "b3.log"
    p = _start([*args, "--out", b, "--resume", "latest"], log3)
    _finish(p, log3)
    _finish(ref, tmp_path / "a.log")
    text = open(log3).read()
    assert f"resuming from {os.path.join(b, 'checkpoints', f'ckpt-{last_good:08d}.pt')}" in text, text
    assert "temporary file of an interrupted write" in text and _temp_files(b) == []  # stale temp file cleaned
    return a, b


def _assert_same_state(x, y, keys):
    for key in keys:
        assert x[key].keys() == y[key].keys()
        for name, t in x[key].items():
            assert torch.equal(t, y[key][name]), f"{key}.{name} differs between the resumed and uninterrupted runs"


def test_damsm_kill9_and_resume_equals_uninterrupted(data, tmp_path):
    # 64 images / batch 8 = 8 steps per epoch; DAMSM checkpoints at the end of every epoch.
    args = ["train", "damsm", "--data", data["data"], "--steps", "200", "--batch-size", "8", "--small-width", "4",
            "--eval-every", "1000", "--threads", "1", "--no-progress", "--device", "cpu"]
    a, b = _kill_resume_finish(tmp_path, args, first_kill_step=40, every=8)
    ea = torch.load(os.path.join(a, "damsm.pt"), weights_only=True)
    eb = torch.load(os.path.join(b, "damsm.pt"), weights_only=True)
    _assert_same_state(ea, eb, ["text_encoder", "image_encoder"])
    ca, cb = load_checkpoint(find_latest_checkpoint(a)), load_checkpoint(find_latest_checkpoint(b))
    assert ca["step"] == cb["step"] == 200
    _assert_same_state(ca, cb, ["model"])


def test_attngan_kill9_and_resume_equals_uninterrupted(data, tmp_path):
    args = ["train", "attngan", "--data", data["data"], "--damsm", data["damsm"], "--stages", "1", "--gf-dim", "4",
            "--df-dim", "4", "--z-dim", "8", "--cond-dim", "8", "--batch-size", "8", "--steps", "200",
            "--snapshot-every", "1000", "--checkpoint-every", "10", "--no-progress", "--device", "cpu"]
    a, b = _kill_resume_finish(tmp_path, args, first_kill_step=40, every=10)
    ca, cb = load_checkpoint(find_latest_checkpoint(a)), load_checkpoint(find_latest_checkpoint(b))
    assert ca["step"] == cb["step"] == 200
    _assert_same_state(ca, cb, ["G", "G_ema", "Ds"])
    ga = torch.load(os.path.join(a, "generator.pt"), weights_only=True)
    gb = torch.load(os.path.join(b, "generator.pt"), weights_only=True)
    _assert_same_state(ga, gb, ["generator", "text_encoder"])
    # Nothing twice in stats.jsonl: the records the killed runs wrote after their last checkpoint were dropped.
    steps = lambda run: [r["step"] for r in map(json.loads, open(os.path.join(run, "stats.jsonl")))
                         if "train" in r]  # noqa: E731
    assert steps(b) == steps(a) and len(set(steps(b))) == len(steps(b))
