"""tcmalloc for CPU training (scripts/_tcmalloc.sh, `t2i env`'s allocator line): found, used, and the same bits."""

import json
import os
import subprocess
import sys

import pytest

from t2icli.training.distributed import allocator, tcmalloc_library

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = tcmalloc_library()
needs_tcmalloc = pytest.mark.skipif(LIB is None or not sys.platform.startswith("linux"),
                                    reason="no tcmalloc on this system (scripts/test.sh installs it where it can)")


def use_tcmalloc(check=True, **env):
    """LD_PRELOAD after scripts/_tcmalloc.sh's use_tcmalloc, and its message, in a shell with `env` set (check=False:
    the CompletedProcess)."""
    env = dict({k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "T2I_TCMALLOC")}, **env)
    out = subprocess.run(["bash", "-c", 'source scripts/_tcmalloc.sh && use_tcmalloc && printf %s "${LD_PRELOAD:-}"'],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=check)
    return (out.stdout, out.stderr) if check else out


def test_use_tcmalloc_rejects_a_bad_switch():
    out = use_tcmalloc(check=False, T2I_TCMALLOC="yes")
    assert out.returncode == 2 and out.stdout == ""
    assert "T2I_TCMALLOC must be 0" in out.stderr and "'yes'" in out.stderr


def test_this_process_allocator_is_named():
    preloaded = os.environ.get("LD_PRELOAD", "")
    want = next((name for name in ("tcmalloc", "jemalloc") if name in preloaded), "system")
    assert allocator() == want


@needs_tcmalloc
def test_use_tcmalloc_preloads_the_system_library():
    preload, msg = use_tcmalloc()
    assert "tcmalloc" in os.path.basename(preload) and os.path.isfile(preload)
    assert "allocating with tcmalloc" in msg and "T2I_TCMALLOC=0" in msg
    # a child python then reports it (t2i env's allocator line)
    out = subprocess.run([sys.executable, "-m", "t2icli", "env", "--json"], env=dict(os.environ, LD_PRELOAD=preload,
                         T2I_OPS_SELFCHECK="0"), capture_output=True, text=True, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["allocator"] == "tcmalloc" and "allocator_hint" not in info


@needs_tcmalloc
def test_use_tcmalloc_keeps_what_the_user_chose():
    assert use_tcmalloc(T2I_TCMALLOC="0") == ("", "")  # off: nothing preloaded, nothing said
    mine = f"{LIB}:/nonexistent/libfoo.so"
    assert use_tcmalloc(LD_PRELOAD=mine)[0] == mine  # already preloaded: left as it is
    preload, _ = use_tcmalloc(LD_PRELOAD="/nonexistent/libfoo.so")  # another preload: tcmalloc goes first
    assert preload.endswith(":/nonexistent/libfoo.so") and "tcmalloc" in preload.split(":")[0]


@needs_tcmalloc
@pytest.mark.long
def test_training_with_tcmalloc_gives_the_same_bits(tiny_gan_setup, tmp_path):
    """An allocator changes no arithmetic: two AttnGAN steps with and without tcmalloc export the same bytes."""
    setup = tiny_gan_setup(tmp_path, n_train=40, n_test=20)
    blobs = []
    for name, preload in (("system", ""), ("tcmalloc", LIB)):
        out = tmp_path / name
        env = dict(os.environ, LD_PRELOAD=preload, T2I_OPS_SELFCHECK="0")
        subprocess.run([sys.executable, "-m", "t2icli", "train", "attngan", "--data", setup["data"], "--damsm",
                        setup["damsm"], "--out", str(out), "--stages", "2", "--steps", "2", "--batch-size", "4",
                        "--gf-dim", "4", "--df-dim", "2", "--z-dim", "4", "--cond-dim", "4", "--no-progress"],
                       env=env, capture_output=True, text=True, check=True)
        blobs.append((out / "generator.pt").read_bytes())
    assert blobs[0] == blobs[1]
