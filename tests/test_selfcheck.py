"""The compiled kernels' first-use self-check: passes on the real kernels, catches injected faulty ones, falls back
to the reference with one warning, and behaves under threads, torch.compile, fake tensors and `t2i env`."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest
import torch

import faulty_kernels
import t2icli.ops as ops
from t2icli.ops import _selfcheck
from t2icli.ops import reference as ref

pytestmark = pytest.mark.skipif(os.environ.get("T2I_OPS", "").lower() == "ref",
                                reason="T2I_OPS=ref: no compiled kernels to check")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
G1, G2 = 4.0, 5.0


@pytest.fixture
def fresh(monkeypatch):
    """This process as if no op had run yet: no self-check results (the real ones come back afterwards), checks on."""
    assert ops.backend_info()["backend"] == "ext"
    monkeypatch.setattr(_selfcheck, "_results", {})
    monkeypatch.setenv("T2I_OPS_SELFCHECK", "1")
    monkeypatch.delenv("T2I_OPS", raising=False)


@pytest.fixture
def faulty():
    """install(op, device, fault, delay=0) -> overrides that kernel until the test ends."""
    libs = []

    def install(op, device, fault, delay=0.0):
        libs.append(faulty_kernels.install(op, torch.device(device).type, fault, delay))

    yield install
    for lib in libs:
        faulty_kernels.uninstall(lib)


def _attn_inputs(device, B=3, C=8, T=5, N=20, seed=0):
    """h [B, C, N], e [B, C, T], mask [B, T] with lengths T, 2, 1 ... (sample 0 unpadded, so its mask is all False)."""
    g = torch.Generator().manual_seed(seed)
    h, e = torch.randn(B, C, N, generator=g).to(device), torch.randn(B, C, T, generator=g).to(device)
    lengths = torch.tensor([T, 2, 1][:B])
    return h, e, (torch.arange(T)[None, :] >= lengths[:, None]).to(device)


def _damsm_inputs(device, M=4, D=8, T=5, N=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    img, words = torch.randn(M, D, N, generator=g).to(device), torch.randn(M, D, T, generator=g).to(device)
    return img, words, torch.tensor([5, 1, 3, 2][:M], device=device)


def _t2i_warnings(caught):
    return [str(w.message) for w in caught if "self-check" in str(w.message) or "compiled" in str(w.message)]


# -- the real kernels pass -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_real_kernels_pass_once_per_op_device_dtype(fresh, device):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recs = ops.selfcheck([device], (torch.float32, torch.float64))
    assert not _t2i_warnings(caught)
    assert {(r["op"], r["dtype"]) for r in recs} == {(op, dt) for op in _selfcheck.OPS for dt in ("float32", "float64")}
    for r in recs:
        assert r["ok"] and r["exception"] is None, r
        assert r["error"] <= r["tolerance"], r
        assert r["device"] == ("cpu" if device == "cpu" else f"cuda:{torch.cuda.current_device()}")
    # once per (op, device, dtype): using the ops afterwards runs no new check
    before = {id(v) for v in _selfcheck._results.values()}
    h, e, mask = _attn_inputs(device)
    ops.word_region_attention(h, e, mask)
    ops.damsm_word_scores(*_damsm_inputs(device), G1, G2)
    assert {id(v) for v in _selfcheck._results.values()} == before


# -- faulty kernels: one warning, then the reference ----------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op,fault,says", [
    ("word_region_attention", "mask_bug", "disagrees with the reference: forward c"),
    ("word_region_attention", "nan", "returned non-finite values (NaN or inf) in forward c,"),
    ("word_region_attention", "raise", "raised RuntimeError: CUDA error: an illegal memory access"),
    ("word_region_attention_backward", "grad_e_term", "disagrees with the reference: backward grad_e"),
    ("word_region_attention_backward", "raise", "raised RuntimeError: CUDA error: an illegal memory access"),
    ("damsm_word_scores", "paper_lse", "disagrees with the reference: forward score"),
    ("damsm_word_scores", "raise", "raised RuntimeError: CUDA error: an illegal memory access"),
])
def test_faulty_kernel_falls_back_with_one_warning(fresh, faulty, device, op, fault, says):
    faulty(op, device, fault)
    checked = "damsm_word_scores" if op.startswith("damsm") else "word_region_attention"
    other = "word_region_attention" if checked == "damsm_word_scores" else "damsm_word_scores"
    h, e, mask = _attn_inputs(device)
    img, words, lengths = _damsm_inputs(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):  # the first call checks and warns; the later ones reuse the verdict silently
            hh, ee = h.clone().requires_grad_(True), e.clone().requires_grad_(True)
            c, beta = ops.word_region_attention(hh, ee, mask, return_attn=True)
            gh, ge = torch.autograd.grad((c * 1.5).sum() + (beta * 0.5).sum(), (hh, ee))
            xi, xw = img.clone().requires_grad_(True), words.clone().requires_grad_(True)
            score = ops.damsm_word_scores(xi, xw, lengths, G1, G2)
            gi, gw = torch.autograd.grad((score * 0.7).sum(), (xi, xw))
    msgs = _t2i_warnings(caught)
    assert len(msgs) == 1, msgs
    dev = str(c.device) if device == "cpu" else f"cuda:{torch.cuda.current_device()}"
    assert f"compiled {checked} kernel on {dev} (float32)" in msgs[0]
    assert f"using the pure-PyTorch reference for {checked} on {dev}" in msgs[0]
    assert says in msgs[0]
    # what the caller got is the reference's value and gradient, not the faulty kernel's
    hr, er = h.clone().requires_grad_(True), e.clone().requires_grad_(True)
    cr, br = ref.word_region_attention(hr, er, mask, return_attn=True)
    torch.testing.assert_close(c, cr, rtol=1e-5, atol=1e-5)
    for got, want in zip((gh, ge), torch.autograd.grad((cr * 1.5).sum() + (br * 0.5).sum(), (hr, er))):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    ir, wr = img.clone().requires_grad_(True), words.clone().requires_grad_(True)
    sr = ref.damsm_word_scores(ir, wr, lengths, G1, G2)
    torch.testing.assert_close(score, sr, rtol=1e-5, atol=1e-5)
    for got, want in zip((gi, gw), torch.autograd.grad((sr * 0.7).sum(), (ir, wr))):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # the record says what failed; the other op and the other dtype are judged on their own
    rec = {(r["op"], r["device"], r["dtype"]): r for r in _selfcheck.results()}
    assert rec[(checked, dev, "float32")]["ok"] is False
    assert rec[(other, dev, "float32")]["ok"] is True
    assert (checked, dev, "float64") not in rec
    assert (rec[(checked, dev, "float32")]["exception"] is None) == (fault != "raise")


def test_faulty_kernel_is_removed_again(fresh):
    """The hook restores the compiled kernel (so the other tests see the real one)."""
    lib = faulty_kernels.install("damsm_word_scores", "cpu", "paper_lse")
    img, words, lengths = _damsm_inputs("cpu")
    want = ref.damsm_word_scores(img, words, lengths, G1, G2)
    torch.testing.assert_close(torch.ops.t2i.damsm_word_scores(img, words, lengths, G1, G2), want / G2)
    faulty_kernels.uninstall(lib)
    torch.testing.assert_close(torch.ops.t2i.damsm_word_scores(img, words, lengths, G1, G2), want, rtol=1e-5, atol=1e-5)


def test_disabled_by_env(fresh, faulty, monkeypatch):
    """T2I_OPS_SELFCHECK=0: no check, no warning, the (here faulty) kernel is used as it is."""
    monkeypatch.setenv("T2I_OPS_SELFCHECK", "0")
    faulty("damsm_word_scores", "cpu", "paper_lse")
    img, words, lengths = _damsm_inputs("cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = ops.damsm_word_scores(img, words, lengths, G1, G2)
    assert not _t2i_warnings(caught) and not _selfcheck.results()
    torch.testing.assert_close(score, ref.damsm_word_scores(img, words, lengths, G1, G2) / G2)
    assert ops.selfcheck() == []


def test_forced_ext_makes_a_failed_check_an_error(fresh, faulty, monkeypatch):
    """T2I_OPS=ext demands the kernels: a failed check raises (at every call) instead of falling back."""
    monkeypatch.setenv("T2I_OPS", "ext")
    faulty("word_region_attention", "cpu", "mask_bug")
    h, e, mask = _attn_inputs("cpu")
    for _ in range(2):
        with pytest.raises(RuntimeError, match=r"word_region_attention kernel on cpu \(float32\) disagrees.*T2I_OPS=ext"):
            ops.word_region_attention(h, e, mask)


def test_threads_wait_for_one_verdict(fresh, faulty):
    """Threads that hit the first use together: one check, one warning, and none of them gets the faulty output
    (the faulty kernel sleeps 0.2 s, so they are all waiting while it runs)."""
    faulty("word_region_attention", "cpu", "mask_bug", delay=0.2)
    h, e, mask = _attn_inputs("cpu")
    want = ref.word_region_attention(h, e, mask)
    n = 6
    start, outs, errors = threading.Barrier(n), [None] * n, []

    def worker(i):
        try:
            start.wait()
            outs[i] = ops.word_region_attention(h, e, mask)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert len(_t2i_warnings(caught)) == 1
    for out in outs:
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert len(_selfcheck.results()) == 1


# -- torch.compile, fake tensors -------------------------------------------------------------------------------------


def _graph_ops(gm):
    return {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fault", [None, "mask_bug"])
def test_first_use_inside_torch_compile(fresh, faulty, fault, device):
    """The first use is a compiled call: the check runs while dynamo traces (eagerly, outside the graph), and the
    graph holds the kernel when it passed, the reference when it did not (one warning)."""
    if fault:
        faulty("word_region_attention", device, fault)
    h, e, mask = _attn_inputs(device)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(_graph_ops(gm))
        return gm.forward

    def f(a, b):
        return ops.word_region_attention(a, b, mask) * 2

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = torch.compile(f, backend=backend, fullgraph=True)(h, e)
    assert len(_t2i_warnings(caught)) == (1 if fault else 0)
    torch.testing.assert_close(out, 2 * ref.word_region_attention(h, e, mask), rtol=1e-5, atol=1e-5)
    (rec,) = _selfcheck.results()
    assert rec["ok"] is (fault is None)
    assert any("t2i.word_region_attention" in op for op in graphs[0]) is (fault is None)


def test_first_use_under_fake_tensors(fresh):
    """make_fx with fake tensors: the check runs on real tensors (modes set aside) and the trace keeps the kernel."""
    from torch.fx.experimental.proxy_tensor import make_fx

    h, e, mask = _attn_inputs("cpu")
    gm = make_fx(lambda a, b, m: ops.word_region_attention(a, b, m), tracing_mode="fake")(h, e, mask)
    assert any("t2i.word_region_attention" in op for op in _graph_ops(gm))
    (rec,) = _selfcheck.results()
    assert rec["ok"] and rec["device"] == "cpu"
    torch.testing.assert_close(gm(h, e, mask), ref.word_region_attention(h, e, mask), rtol=1e-5, atol=1e-5)


def test_first_use_under_a_default_device_context(fresh):
    """`with torch.device("meta")` around the first use (as around model construction): the check still makes
    its inputs on the op's device and passes."""
    h, e, mask = _attn_inputs("cpu")
    with torch.device("meta"):
        c = ops.word_region_attention(h, e, mask)
    assert c.device.type == "cpu"
    (rec,) = _selfcheck.results()
    assert rec["ok"] and rec["device"] == "cpu"


# -- t2i env ---------------------------------------------------------------------------------------------------------


def _env_json(preamble="", **env):
    code = textwrap.dedent(preamble) + "\nfrom t2icli.cli import main\nmain(['env', '--json'])\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": TESTS_DIR, "T2I_OPS_SELFCHECK": "1", **env})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout), res.stderr


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_env_reports_the_selfcheck():
    info, _ = _env_json()
    recs = {(r["op"], r["device"]): r for r in info["selfcheck"]}
    assert set(recs) >= {("word_region_attention", "cpu"), ("damsm_word_scores", "cpu")}
    assert all(r["ok"] and r["dtype"] == "float32" for r in recs.values())
    info, _ = _env_json(T2I_OPS_SELFCHECK="0")
    assert info["selfcheck"] == "skipped (T2I_OPS_SELFCHECK=0)"


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_env_reports_a_faulty_kernel():
    """A new process with a faulty CPU kernel: `t2i env` exits 0, says which op failed and why, and warns once."""
    info, err = _env_json("""
        import t2icli.ops, faulty_kernels
        t2icli.ops.backend_info()
        lib = faulty_kernels.install("word_region_attention_backward", "cpu", "grad_e_term")
    """)
    recs = {r["op"]: r for r in info["selfcheck"] if r["device"] == "cpu"}
    assert recs["damsm_word_scores"]["ok"] is True
    bad = recs["word_region_attention"]
    assert bad["ok"] is False and bad["worst"].startswith("backward grad_e") and bad["error"] > bad["tolerance"]
    assert err.count("t2i: the compiled word_region_attention kernel on cpu (float32) disagrees") == 1
