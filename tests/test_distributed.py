"""Distributed training on CPU (gloo, 2 processes): the helpers, and DAMSM / AttnGAN / GAN-INT-CLS / StackGAN runs
that match 1-process runs.

The 2-process runs must compute the losses of a 1-process run at the same GLOBAL batch: the sampler gives rank r
the rows [r::2], BatchNorm is synchronised, DAMSM features are gathered (in-batch negatives of the whole batch),
noise is drawn for the global batch and sliced. What remains is float rounding (other summation orders): losses agree
to ~1e-6 relative (tested to 1e-4); weights after a few Adam steps to ~lr (see the comments below).
"""

import copy
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn

from t2icli.training import distributed

pytestmark = pytest.mark.long  # left out by scripts/test.sh --fast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, fn, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    fn(*args)


def spawn(fn, *args, world=2):
    """Run fn(*args) in `world` fresh processes joined by env:// (as torchrun would); raises if one fails."""
    mp.spawn(_worker, args=(world, _free_port(), fn, args), nprocs=world, join=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_gan_setup):
    """32 px toybirds (32 train / 16 test images) and a random DAMSM export on its vocabulary."""
    return tiny_gan_setup(tmp_path_factory.mktemp("dist"), n_train=32, n_test=16)


# -- helpers ----------------------------------------------------------------------------------------
def _coupled_loss(y):
    """A loss that couples every row with every other (like DAMSM's in-batch negatives). y [B, C] -> scalar."""
    return torch.logsumexp(y @ y.t(), dim=1).mean()


def _helpers(tmp):
    from t2icli.models.text_encoder import TextEncoder
    from t2icli.training import train
    from t2icli.training.run import RunError

    env = distributed.init("cpu")
    assert (env.world, env.backend, env.is_main) == (2, "gloo", env.rank == 0)
    close = dict(rtol=1e-5, atol=1e-6)

    # (a) all_gather_with_grad + sync_grads: the global coupled loss and its gradient equal one process's.
    torch.manual_seed(0)
    x = torch.randn(8, 6)
    lin = nn.Linear(6, 4)
    ref = copy.deepcopy(lin)
    loss_ref = _coupled_loss(ref(x))
    loss_ref.backward()
    y = distributed.all_gather_with_grad(lin(distributed.local_rows(x)))  # [8, 4] in the global row order
    torch.testing.assert_close(y, ref(x), **close)
    loss = _coupled_loss(y)
    loss.backward()
    distributed.sync_grads(lin.parameters())
    torch.testing.assert_close(loss, loss_ref, **close)
    for p, q in zip(lin.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **close)

    # (b) sync_batchnorm: outputs, gradients and running statistics of the global batch (2-D and 4-D inputs).
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 5), nn.BatchNorm1d(5))
    ref = copy.deepcopy(net)
    img, w = torch.randn(8, 3, 6, 6), torch.randn(8, 5)
    out_ref = ref(img)  # train mode: batch statistics, running statistics updated once
    (out_ref**2 * w).mean().backward()
    net = distributed.sync_batchnorm(net)
    assert isinstance(net[1], distributed.GlooSyncBatchNorm) and isinstance(net[4], distributed.GlooSyncBatchNorm)
    out = net(distributed.local_rows(img))
    torch.testing.assert_close(out, distributed.local_rows(out_ref), **close)
    (out**2 * distributed.local_rows(w)).mean().backward()
    distributed.sync_grads(net.parameters())
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **close)
    for k, v in ref.state_dict().items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            torch.testing.assert_close(net.state_dict()[k], v, **close)

    # (c) the text encoder under DDP with packed, unsorted sequences (DataParallel broke the original's LSTM).
    torch.manual_seed(2)
    enc = TextEncoder(vocab_size=30, embedding_dim=16, hidden=8, dropout=0.0)
    ref = copy.deepcopy(enc)
    lengths = torch.tensor([3, 7, 1, 5, 2, 7, 4, 6])  # unsorted on every rank
    tokens = torch.randint(1, 30, (8, 7)) * (torch.arange(7)[None, :] < lengths[:, None])
    e_ref, e_bar_ref = ref(tokens, lengths)
    (e_ref.pow(2).mean((1, 2)) + e_bar_ref.sum(1)).mean().backward()
    ddp = distributed.wrap(enc)
    assert isinstance(ddp, nn.parallel.DistributedDataParallel)
    e, e_bar = ddp(distributed.local_rows(tokens), distributed.local_rows(lengths))
    torch.testing.assert_close(e, distributed.local_rows(e_ref), **close)
    torch.testing.assert_close(e_bar, distributed.local_rows(e_bar_ref), **close)
    (e.pow(2).mean((1, 2)) + e_bar.sum(1)).mean().backward()  # DDP averages the gradients over ranks
    for p, q in zip(enc.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **close)

    del ddp  # a DDP reducer must not outlive its process group

    # (d) per-rank seeds, on_main, any_rank.
    assert distributed.seed_for(0, 0, 5) != distributed.seed_for(0, 1, 5) != distributed.seed_for(0, 1, 6)
    assert distributed.seed_for(0, None, 5) == distributed.seed_for(0, None, 5) != distributed.seed_for(0, 0, 5)
    assert distributed.on_main(lambda: env.rank + 10) == 10
    assert distributed.any_rank(env.rank == 1) and not distributed.any_rank(False)
    with pytest.raises(ValueError, match="only on rank 0"):
        distributed.on_main(lambda: (_ for _ in ()).throw(ValueError("only on rank 0")))

    # (e) the global batch must split over the ranks; the error names the flag (checked before any data is read).
    with pytest.raises(RunError, match=r"--batch-size 7 is the global batch and must be divisible by the number "
                                       r"of processes \(2\)"):
        train("damsm", data=tmp, out=os.path.join(tmp, "run"), batch_size=7, progress=False)  # tmp: not a dataset
    assert distributed.current().world == 2  # the trainer's init/cleanup nest inside this one: the group lives on
    distributed.cleanup()
    assert distributed.current().world == 1 and not torch.distributed.is_initialized()


def test_helpers_in_two_processes(tmp_path):
    spawn(_helpers, str(tmp_path))


# -- DAMSM ------------------------------------------------------------------------------------------
DAMSM_KW = dict(steps=6, batch_size=8, small_width=4, dropout=0.0, n_attention=0, rprecision_runs=1,
                progress=False)  # 32 images / 8 = 4 steps per epoch: step 6 is mid-epoch 1


def _train_damsm(data, out):
    from t2icli.training import train

    res = train("damsm", data=data, out=out, **DAMSM_KW)
    assert res["world"] == 2 and res["is_main"] == (os.environ["RANK"] == "0")


def _train_damsm_hard(data, out):
    from t2icli.training import train

    train("damsm", data=data, out=out, **dict(DAMSM_KW, hard_negatives=2))


def _damsm_state(run):
    blob = torch.load(os.path.join(run, "damsm.pt"), weights_only=True)
    return {**{"t." + k: v for k, v in blob["text_encoder"].items()},
            **{"i." + k: v for k, v in blob["image_encoder"].items()}}


def _stats(run):
    with open(os.path.join(run, "stats.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_damsm_two_processes_match_one(tiny, tmp_path):
    from t2icli.training import train

    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    train("damsm", data=tiny["data"], out=one, **DAMSM_KW)
    spawn(_train_damsm, tiny["data"], two)
    s1, s2 = _stats(one), _stats(two)
    assert [r["step"] for r in s1] == [r["step"] for r in s2] == [4, 6]
    for r1, r2 in zip(s1, s2):  # mean train loss of steps 1-4 and 5-6, and the test losses after them
        for k in ("loss", "w1", "w2", "s1", "s2"):
            assert r2["train"][k] == pytest.approx(r1["train"][k], rel=1e-4, abs=1e-4), (r1["step"], k)
            assert r2["test"][k] == pytest.approx(r1["test"][k], rel=1e-4, abs=1e-4), (r1["step"], k)
    # Not the mean of two half-batch losses: a 1-process run at batch 4 has fewer negatives, a much lower loss.
    half = train("damsm", data=tiny["data"], out=str(tmp_path / "half"), **{**DAMSM_KW, "batch_size": 4, "steps": 1})
    assert _stats(str(tmp_path / "half"))[0]["train"]["loss"] < s1[0]["train"]["loss"] - 1.0, half
    a, b = _damsm_state(one), _damsm_state(two)
    assert a.keys() == b.keys()  # synchronised BN exports as plain BN
    for k in a:
        # Adam's ~lr-sized steps bound how far a weight with a ~0 gradient can drift (see the AttnGAN test).
        torch.testing.assert_close(b[k].float(), a[k].float(), rtol=1e-3, atol=2e-3, msg=k)
    assert len(os.listdir(os.path.join(two, "checkpoints"))) >= 1
    with open(os.path.join(two, "run.json")) as f:
        assert json.load(f)["world_size"] == 2


def test_hard_negatives_two_processes_match_one(tiny, tmp_path):
    """--hard-negatives: the edits are drawn for the global batch and the edited captions' features gathered like
    the others, so two processes compute the DAMSM losses of one (train damsm, and attngan's DAMSM term); with
    --edited-wrong, D's losses too."""
    from t2icli.training import train

    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    train("damsm", data=tiny["data"], out=one, **dict(DAMSM_KW, hard_negatives=2))
    spawn(_train_damsm_hard, tiny["data"], two)
    s1, s2 = _stats(one), _stats(two)
    assert [r["step"] for r in s1] == [r["step"] for r in s2] == [4, 6]
    for r1, r2 in zip(s1, s2):  # 6 Adam steps grow the gathered sums' rounding (1.7e-4 in s2 with one thread);
        for k in ("loss", "w2", "s2"):  # (other edits than one process's change scores, not their rounding)
            assert r2["train"][k] == pytest.approx(r1["train"][k], rel=5e-4, abs=1e-4), (r1["step"], k)
    base = ["train", "attngan", "--data", tiny["data"], "--damsm", tiny["damsm"], "--hard-negatives", "2",
            "--edited-wrong", "0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    runs = {}
    for n in (1, 2):
        out = str(tmp_path / f"gan{n}")
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                            "-m", "t2icli", *base, "--out", out, *GAN_ARGS, "--steps", "2"], capture_output=True,
                           text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        runs[n] = [r for r in _stats(out) if "train" in r]
    assert [r["step"] for r in runs[1]] == [r["step"] for r in runs[2]] == [1, 2]
    for r1, r2 in zip(runs[1], runs[2]):
        for k in ("damsm", "d"):  # d: --edited-wrong's rows and edits are drawn for the global batch
            assert r2["train"][k] == pytest.approx(r1["train"][k], rel=1e-4, abs=1e-5), (r1["step"], k)


# -- AttnGAN through torchrun and the CLI ---------------------------------------------------------
GAN_ARGS = ["--stages", "2", "--steps", "3", "--batch-size", "8", "--gf-dim", "4", "--df-dim", "4", "--z-dim", "8",
            "--cond-dim", "8", "--snapshot-every", "1000", "--keep", "1", "--no-progress", "--device", "cpu"]


def test_attngan_torchrun_matches_one_process(tiny, tmp_path):
    from click.testing import CliRunner

    from t2icli.cli import main
    from t2icli.training.run import find_latest_checkpoint, list_checkpoints, load_checkpoint

    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    base = ["train", "attngan", "--data", tiny["data"], "--damsm", tiny["damsm"]]
    r = CliRunner().invoke(main, base + ["--out", one] + GAN_ARGS)
    assert r.exit_code == 0, r.output
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "t2icli", *base, "--out", two, *GAN_ARGS], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("R-precision (generated images") == 1  # only rank 0 reports
    assert p.stderr.count("stopping (steps) at step 3") == 1  # and logs
    s1 = [r for r in _stats(one) if "train" in r]
    s2 = [r for r in _stats(two) if "train" in r]
    assert [r["step"] for r in s1] == [r["step"] for r in s2] == [1, 2, 3]
    for r1, r2 in zip(s1, s2):  # D, G, adversarial, KL and DAMSM losses of every step
        for k in ("d", "g", "g_adv", "kl", "damsm"):
            assert r2["train"][k] == pytest.approx(r1["train"][k], rel=1e-4, abs=1e-5), (r1["step"], k)
    a = load_checkpoint(find_latest_checkpoint(one))
    b = load_checkpoint(find_latest_checkpoint(two))
    for key in ("G", "Ds", "G_ema"):
        for name, t in a[key].items():
            # Adam moves a weight by ~lr per step whatever its gradient's size, so a gradient that is ~0 (float
            # rounding) can flip its update: weights agree to 3 steps x lr 2e-4, not to rounding.
            torch.testing.assert_close(b[key][name].float(), t.float(), rtol=1e-3, atol=1e-3, msg=f"{key}.{name}")
    assert [s for s, _ in list_checkpoints(two)] == [3]  # --keep 1
    # The global batch must split evenly over the processes: a clear error naming the flag, non-zero exit.
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "t2icli", *base, "--out", str(tmp_path / "bad"), *GAN_ARGS, "--batch-size", "5"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode != 0 and "--batch-size 5 is the global batch and must be divisible" in p.stderr


def test_gpu_checks_distributed_smoke_runs_on_gloo(tiny, tmp_path):
    """scripts/dist_smoke.py (scripts/gpu_check.py's distributed section, run on a GPU once in a while) under
    torchrun with 2 CPU processes: collectives, t2i's own process group and a short AttnGAN run through the trainer's
    API. It once called a train() signature that no longer existed, which only the slow rehearsal would have shown."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        os.path.join(ROOT, "scripts", "dist_smoke.py"), "--data", tiny["data"], "--damsm",
                        tiny["damsm"], "--out", str(tmp_path / "run"), "--device", "cpu", "--steps", "2", "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout)
    assert report["ok"] and report["backend"] == "gloo" and all(report["collectives"].values())
    assert report["train"]["steps"] == 2 and report["train"]["world"] == 2
    assert os.path.isfile(report["train"]["export"])


# -- GAN-INT-CLS and StackGAN v1 through torchrun --------------------------------------------------------
BASELINE_ARGS = ["--batch-size", "8", "--gf-dim", "4", "--df-dim", "4", "--z-dim", "8", "--snapshot-every", "1000",
                 "--keep", "1", "--no-progress", "--device", "cpu"]
BASELINES = {  # kind: (extra flags, last step, losses logged, state-dict entries of the checkpoint)
    # the reference's options too: caption means, wrong images and fresh G samples are drawn for the global batch
    "gancls": (["--steps", "3", "--train-style-encoder", "--n-captions", "2", "--wrong", "images", "--g-batch",
                "fresh"], 3, ("d", "g", "g_adv", "g_int", "style"), ("G", "D", "S", "G_ema")),
    "stackgan": (["--stage1-steps", "2", "--stage2-steps", "2", "--cond-dim", "8", "--res-blocks", "1",
                  "--stage2-uncond"], 4, ("d", "g", "g_adv", "kl"), ("G", "Ds", "G_ema")),
    "stackgan2": (["--steps", "3", "--stages", "2", "--cond-dim", "8", "--d-condition", "mu", "--wrong", "images",
                   "--uncond-loss", "1", "--kl-weight", "2", "--cc-detach"], 3, ("d", "g", "g_adv", "kl", "cc"),
                  ("G", "Ds", "G_ema")),
}


def test_baselines_torchrun_match_one_process(tiny, tmp_path):
    """`t2i train gancls` (+ style encoder), `t2i train stackgan` (2 Stage-I + 2 Stage-II steps) and `t2i train
    stackgan2`, with the reference's options, under torchrun with 2 processes log the losses of a 1-process run at
    the same global batch and end with its weights."""
    from click.testing import CliRunner

    from t2icli.cli import main
    from t2icli.training.run import find_latest_checkpoint, list_checkpoints, load_checkpoint

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for kind, (extra, last, keys, parts) in BASELINES.items():
        one, two = str(tmp_path / f"{kind}1"), str(tmp_path / f"{kind}2")
        base = ["train", kind, "--data", tiny["data"], "--damsm", tiny["damsm"], *BASELINE_ARGS, *extra]
        r = CliRunner().invoke(main, base + ["--out", one])
        assert r.exit_code == 0, r.output
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "-m", "t2icli", *base, "--out", two], capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        assert p.stdout.count("R-precision (generated images") == 1, kind  # only rank 0 reports
        assert p.stderr.count(f"stopping (steps) at step {last}") == 1, kind  # and logs
        s1 = [r for r in _stats(one) if "train" in r]
        s2 = [r for r in _stats(two) if "train" in r]
        assert [r["step"] for r in s1] == [r["step"] for r in s2] == list(range(1, last + 1)), kind
        for r1, r2 in zip(s1, s2):
            assert r1.get("phase") == r2.get("phase")
            for k in keys:
                assert r2["train"][k] == pytest.approx(r1["train"][k], rel=1e-4, abs=1e-5), (kind, r1["step"], k)
        a = load_checkpoint(find_latest_checkpoint(one))
        b = load_checkpoint(find_latest_checkpoint(two))
        for key in parts:
            for name, t in a[key].items():
                # Adam's ~lr-sized steps bound the drift of a weight whose gradient is ~0 (see the AttnGAN test).
                torch.testing.assert_close(b[key][name].float(), t.float(), rtol=1e-3, atol=1e-3,
                                           msg=f"{kind} {key}.{name}")
        assert [s for s, _ in list_checkpoints(two)] == [last]  # --keep 1
        with open(os.path.join(two, "run.json")) as f:
            assert json.load(f)["world_size"] == 2


@pytest.mark.slow
def test_compile_one_step_cpu(tiny, tmp_path):
    """--compile traces G and the Ds (custom t2i ops included) and trains; about 80 s of compilation on 2 cores."""
    from t2icli.training import train

    res = train("attngan", data=tiny["data"], damsm=tiny["damsm"], out=tmp_path / "c", stages=2, steps=1, gf_dim=4,
                df_dim=4, z_dim=8, cond_dim=8, batch_size=4, snapshot_rprecision=0, final_rprecision=0,
                progress=False, compile=True)
    assert res["step"] == 1 and os.path.isfile(res["export"])
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    assert cfg["compile"] is True
    # the DAMSM trainer compiles its image encoder
    res = train("damsm", data=tiny["data"], out=tmp_path / "d", steps=1, batch_size=8, small_width=4, n_attention=0,
                rprecision_runs=1, progress=False, compile=True)
    assert res["step"] == 1 and os.path.isfile(res["export"])


def test_sampler_ranks_partition_global_batches_and_resume():
    """Rank r gets rows [r::world] of every global batch, and resuming at start_batch continues at the same rows."""
    from t2icli.data.dataset import EpochBatchSampler

    def batches(world, start):
        per_rank = [list(EpochBatchSampler(50, 8, seed=3, epoch=2, start_batch=start, rank=r, world=world))
                    for r in range(world)]
        return [sorted(sum((per_rank[r][b] for r in range(world)), [])) for b in range(len(per_rank[0]))]

    one = batches(1, 0)
    assert len(one) == 6 and batches(2, 0) == batches(4, 0) == one
    assert batches(2, 4) == one[4:]  # resumed after 4 batches: the same global batches as uninterrupted
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        EpochBatchSampler(50, 6, rank=0, world=4)


def test_open_run_logs_notes_and_cpu_bf16(tmp_path, monkeypatch):
    from t2icli.training import distributed

    monkeypatch.setattr(distributed, "cpu_bf16", lambda: False)
    run = distributed.open_run(str(tmp_path / "r"), {"precision": "bf16", "device": "cpu"}, notes=["a note"])
    log = (tmp_path / "r" / "log.txt").read_text()
    assert "a note" in log and "--precision bf16 is ignored on this CPU (no native bf16" in log
    monkeypatch.setattr(distributed, "cpu_bf16", lambda: True)
    distributed.open_run(str(tmp_path / "n"), {"precision": "bf16", "device": "cpu"})
    assert "--precision bf16 on CPU: forward passes in bf16" in (tmp_path / "n" / "log.txt").read_text()
    quiet = distributed.open_run(str(tmp_path / "s"), {"precision": "fp32", "device": "cpu"})
    quiet.log("start")
    assert "bf16" not in (tmp_path / "s" / "log.txt").read_text()
    assert run.path("log.txt") == str(tmp_path / "r" / "log.txt")
