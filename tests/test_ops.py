"""Tests of t2icli.ops: the compiled kernels against the pure-PyTorch reference, autograd, opcheck, fallback."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import t2icli.ops as ops
from t2icli.ops import reference as ref

FORCED_REF = os.environ.get("T2I_OPS", "").lower() == "ref"
needs_ext = pytest.mark.skipif(FORCED_REF, reason="T2I_OPS=ref forces the reference backend")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
G1, G2 = 4.0, 5.0  # AttnGAN's GAMMA1, GAMMA2


@pytest.fixture(autouse=True)
def _kernels_unguarded(monkeypatch):
    """These tests compare the kernels themselves with the reference: with the first-use self-check on, a kernel
    that failed it would be replaced by the reference and its tests would compare the reference with itself.
    (tests/test_selfcheck.py tests the check.)"""
    monkeypatch.setenv("T2I_OPS_SELFCHECK", "0")


def _damsm_inputs(M, D, T, N, lengths=None, dtype=torch.float32, device="cpu", seed=0):
    """img [M, D, N], words [M, D, T], lengths [M] (random ragged in 1..T unless given)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(M, D, N, generator=g, dtype=dtype).to(device)
    words = torch.randn(M, D, T, generator=g, dtype=dtype).to(device)
    if lengths is None:
        lengths = torch.randint(1, T + 1, (M,), generator=g)
        lengths[0] = T
    return img, words, torch.as_tensor(lengths).to(device)


def _attn_inputs(B, C, T, N, dtype=torch.float32, device="cpu", seed=0):
    """h [B, C, N], e [B, C, T], mask [B, T] (random padding, at least one real word per sample)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, C, N, generator=g, dtype=dtype).to(device)
    e = torch.randn(B, C, T, generator=g, dtype=dtype).to(device)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] >= lengths[:, None]).to(device)  # True = padding
    return h, e, mask


def _grads(out, inputs, seed=1):
    """Gradients of <out, random cotangent> wrt inputs."""
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype).to(out.device)
    return torch.autograd.grad(out, inputs, cot)


# ------------------------------------------------------------------------------------------
# backend selection
# ------------------------------------------------------------------------------------------


@needs_ext
def test_extension_is_active():
    """The compiled kernels must be in use (a failed build must not silently test the reference)."""
    info = ops.backend_info()
    assert info["backend"] == "ext", f"extension not loaded: {info['reason']}"
    assert "cpu" in info["device_kernels"] and info["path"] and os.path.exists(info["path"])
    assert hasattr(torch.ops.t2i, "damsm_word_scores") and hasattr(torch.ops.t2i, "word_region_attention")


def _run_py(code, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)  # a cold C++ build on a busy 2-core machine takes minutes


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_forced_reference_backend():
    """T2I_OPS=ref uses the reference without building anything and without a warning."""
    res = _run_py("""
        import warnings, torch
        warnings.simplefilter("error")
        import t2icli.ops as ops
        img, words = torch.randn(3, 8, 5), torch.randn(3, 8, 4)
        s = ops.damsm_word_scores(img, words, torch.tensor([4, 1, 2]), 4.0, 5.0)
        c = ops.word_region_attention(torch.randn(2, 8, 6), torch.randn(2, 8, 3), torch.zeros(2, 3, dtype=torch.bool))
        info = ops.backend_info()
        assert info == {"backend": "ref", "device_kernels": [], "reason": "T2I_OPS=ref", "path": None}, info
        print("OK", tuple(s.shape), tuple(c.shape))
    """, T2I_OPS="ref")
    assert res.returncode == 0, res.stderr
    assert "OK (3, 3) (2, 8, 6)" in res.stdout


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_fallback_warns_once(tmp_path):
    """No prebuilt library and a failing JIT build: the reference is used, with exactly one warning."""
    res = _run_py(f"""
        import sys, warnings, torch
        sys.modules["t2icli._C"] = None  # as if setup.py built no extension
        import t2icli.ops as ops
        from t2icli.ops import _ext
        _ext.CSRC = {str(tmp_path)!r}  # no sources: the JIT build fails
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                ops.damsm_word_scores(torch.randn(2, 4, 3), torch.randn(2, 4, 2), torch.tensor([2, 1]), 4.0, 5.0)
                ops.word_region_attention(torch.randn(1, 4, 3), torch.randn(1, 4, 2), torch.zeros(1, 2, dtype=torch.bool))
        msgs = [str(w.message) for w in caught if "t2i" in str(w.message)]
        assert len(msgs) == 1, msgs
        assert ops.backend_info()["backend"] == "ref" and "JIT build failed" in ops.backend_info()["reason"]
        print("OK")
    """, T2I_OPS="auto", T2I_CACHE=str(tmp_path / "cache"))
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_forced_ext_raises_when_unavailable(tmp_path):
    res = _run_py(f"""
        import sys, torch
        sys.modules["t2icli._C"] = None
        import t2icli.ops as ops
        from t2icli.ops import _ext
        _ext.CSRC = {str(tmp_path)!r}
        try:
            ops.backend_info()
        except RuntimeError as exc:
            print("RAISED", exc)
    """, T2I_OPS="ext")
    assert "RAISED T2I_OPS=ext" in res.stdout, res.stdout + res.stderr


# ------------------------------------------------------------------------------------------
# reference
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [None, [1, 1, 1, 1, 1], [7, 7, 7, 7, 7]])
def test_reference_matches_loop(lengths):
    """The vectorised reference equals the original per-caption loop, values and gradients."""
    img, words, L = _damsm_inputs(5, 12, 7, 9, lengths, dtype=torch.float64)
    img.requires_grad_(True), words.requires_grad_(True)
    a = ref.damsm_word_scores(img, words, L, G1, G2)
    b = ref.damsm_word_scores_loop(img, words, L, G1, G2)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for ga, gb in zip(_grads(a, (img, words)), _grads(b, (img, words))):
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_reference_attention_masks_each_sample_with_its_own_row():
    """Batched attention equals per-sample attention; the original `mask.repeat(queryL, 1)` would not."""
    h, e, _ = _attn_inputs(3, 6, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[0, 0, 0, 0, 1], [0, 1, 1, 1, 1], [0, 0, 1, 1, 1]], dtype=torch.bool)
    c, beta = ref.word_region_attention(h, e, mask, return_attn=True)
    for b in range(3):
        cb, betab = ref.word_region_attention(h[b:b + 1, :, :], e[b:b + 1, :, :mask.shape[1]], mask[b:b + 1], return_attn=True)
        torch.testing.assert_close(c[b], cb[0])
        assert torch.all(beta[b][mask[b]] == 0)
    # The original pairing: row r of the [B*N, T] score matrix got mask row r % B.
    N = h.shape[2]
    wrong = mask.repeat(N, 1).view(3, N, 5).transpose(1, 2)  # [B, T, N] as the original applied it
    assert not torch.equal(wrong, mask[:, :, None].expand(3, 5, N))


# ------------------------------------------------------------------------------------------
# kernels vs reference
# ------------------------------------------------------------------------------------------


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "M,D,T,N,lengths",
    [
        (6, 16, 7, 11, None),            # ragged
        (4, 8, 1, 5, [1, 1, 1, 1]),      # T = 1
        (5, 32, 9, 289, None),           # Inception 17x17 regions
        (1, 8, 4, 6, [3]),               # one pair
        (9, 24, 18, 50, [18] * 9),       # full lengths
        # The CPU kernel forms R from the regions' Gram matrix where N (L + D) <= L D (csrc/cpu_kernels.cpp use_gram),
        # from the contexts elsewhere (all the cases above): these take the Gram way.
        (48, 256, 18, 64, None),         # toybirds' DAMSM batch: 8x8 regions, D = 256
        (8, 64, 1, 4, [1] * 8),          # T = 1
        (7, 32, 6, 4, [6, 1, 2, 6, 3, 6, 5]),
    ],
)
def test_damsm_kernel_matches_reference(device, M, D, T, N, lengths):
    img, words, L = _damsm_inputs(M, D, T, N, lengths, device=device)
    x1, w1 = img.clone().requires_grad_(True), words.clone().requires_grad_(True)
    x2, w2 = img.clone().requires_grad_(True), words.clone().requires_grad_(True)
    a = ops.damsm_word_scores(x1, w1, L, G1, G2)
    b = ref.damsm_word_scores(x2, w2, L, G1, G2)
    assert a.shape == (M, M) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for ga, gb in zip(_grads(a, (x1, w1)), _grads(b, (x2, w2))):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-5)
    # padding words get exactly zero gradient
    w3 = words.clone().requires_grad_(True)
    (gw,) = _grads(ops.damsm_word_scores(img, w3, L, G1, G2), (w3,))
    pad = torch.arange(T, device=device)[None, :] >= L[:, None]
    assert torch.all(gw.transpose(1, 2)[pad] == 0)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("B,C,T,N", [(3, 8, 5, 37), (2, 4, 1, 10), (2, 8, 6, 128 * 128), (20, 32, 18, 64)])
def test_attention_kernel_matches_reference(device, B, C, T, N):
    h, e, mask = _attn_inputs(B, C, T, N, device=device)
    h1, e1 = h.clone().requires_grad_(True), e.clone().requires_grad_(True)
    h2, e2 = h.clone().requires_grad_(True), e.clone().requires_grad_(True)
    c1, beta1 = ops.word_region_attention(h1, e1, mask, return_attn=True)
    c2, beta2 = ref.word_region_attention(h2, e2, mask, return_attn=True)
    torch.testing.assert_close(c1, c2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(beta1, beta2, rtol=1e-5, atol=1e-6)
    assert torch.all(beta1.transpose(1, 2)[mask[:, None, :].expand(B, N, T)] == 0)  # masked words: exactly 0
    g = torch.Generator().manual_seed(3)
    gc, gb = torch.randn(c1.shape, generator=g).to(device), torch.randn(beta1.shape, generator=g).to(device)
    g1 = torch.autograd.grad((c1 * gc).sum() + (beta1 * gb).sum(), (h1, e1))
    g2 = torch.autograd.grad((c2 * gc).sum() + (beta2 * gb).sum(), (h2, e2))
    # d/de sums N region terms in fp32 in a different order than the reference (blocked, per thread): the
    # rounding error grows like sqrt(N) (N = 16384 gives 4e-4 on values of ~3), so scale the tolerance with it.
    tol = 1e-4 * max(1.0, (N / 1024) ** 0.5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    # without return_attn only c comes back, with the same value and gradient
    h3 = h.clone().requires_grad_(True)
    c3 = ops.word_region_attention(h3, e, mask)
    assert isinstance(c3, torch.Tensor)
    torch.testing.assert_close(c3, c1.detach())


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_attention_masks_and_edge_rows(device):
    """Per-sample masks (catches the original mask.repeat bug), all-but-one masked, all masked."""
    B, C, T, N = 3, 6, 5, 7
    h, e, _ = _attn_inputs(B, C, T, N, dtype=torch.float64, device=device)
    mask = torch.tensor([[0, 0, 0, 0, 1], [1, 1, 0, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool, device=device)
    h.requires_grad_(True), e.requires_grad_(True)
    c, beta = ops.word_region_attention(h, e, mask, return_attn=True)
    # sample 0 equals its own single-sample computation
    c0 = ops.word_region_attention(h[:1], e[:1], mask[:1])
    torch.testing.assert_close(c[:1], c0)
    # all but one word masked: beta is one-hot on word 2 and c_j = e_2 for every region
    torch.testing.assert_close(beta[1], torch.zeros(T, N, dtype=beta.dtype, device=device).index_fill_(0, torch.tensor([2], device=device), 1.0))
    torch.testing.assert_close(c[1], e[1, :, 2:3].expand(C, N))
    # every word masked: zeros, and finite gradients
    assert torch.all(beta[2] == 0) and torch.all(c[2] == 0)
    gh, ge = torch.autograd.grad(c.sum() + beta.sum(), (h, e))
    assert torch.isfinite(gh).all() and torch.isfinite(ge).all()
    assert torch.all(gh[2] == 0) and torch.all(ge[2] == 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype):
    img, words, L = _damsm_inputs(4, 16, 5, 9)
    s = ops.damsm_word_scores(img.to(dtype), words.to(dtype), L, G1, G2)
    assert s.dtype == dtype
    torch.testing.assert_close(s.float(), ref.damsm_word_scores(img.to(dtype).float(), words.to(dtype).float(), L, G1, G2), rtol=1e-2, atol=1e-2)
    h, e, mask = _attn_inputs(2, 8, 4, 10)
    hh = h.to(dtype).requires_grad_(True)
    c, beta = ops.word_region_attention(hh, e.to(dtype), mask, return_attn=True)
    assert c.dtype == dtype and beta.dtype == dtype
    c.float().sum().backward()
    assert hh.grad.dtype == dtype


def test_input_validation():
    img, words, L = _damsm_inputs(3, 8, 4, 5)
    with pytest.raises(ValueError):
        ops.damsm_word_scores(img, words[:2], L, G1, G2)
    with pytest.raises(ValueError):
        ops.word_region_attention(torch.randn(2, 8, 5), torch.randn(2, 4, 3), torch.zeros(2, 3, dtype=torch.bool))


@needs_ext
def test_kernel_rejects_bad_lengths():
    img, words, _ = _damsm_inputs(3, 8, 4, 5)
    with pytest.raises(RuntimeError, match="lengths"):
        ops.damsm_word_scores(img, words, torch.tensor([4, 0, 2]), G1, G2)
    with pytest.raises(RuntimeError, match="lengths"):
        ops.damsm_word_scores(img, words, torch.tensor([4, 5, 2]), G1, G2)


# ------------------------------------------------------------------------------------------
# autograd, opcheck, torch.compile
# ------------------------------------------------------------------------------------------


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_float64(device):
    img, words, L = _damsm_inputs(3, 4, 3, 5, [3, 1, 2], dtype=torch.float64, device=device)
    img.requires_grad_(True), words.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, w: ops.damsm_word_scores(x, w, L, G1, G2), (img, words))
    h, e, _ = _attn_inputs(3, 3, 4, 5, dtype=torch.float64, device=device)
    mask = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool, device=device)
    h.requires_grad_(True), e.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ops.word_region_attention(a, b, mask, return_attn=True), (h, e))
    assert torch.autograd.gradcheck(lambda a, b: ops.word_region_attention(a, b, mask), (h, e))


@needs_ext
@pytest.mark.parametrize("M,D,T,N,lengths", [(5, 12, 7, 9, [7, 1, 3, 7, 2]), (48, 32, 18, 64, None), (1, 4, 3, 2, [1]),
                                             (48, 256, 18, 64, None), (7, 32, 6, 4, [6, 1, 2, 6, 3, 6, 5])])  # the last two: Gram
def test_damsm_saved_softmaxes_path_is_the_plain_one_bit_for_bit(M, D, T, N, lengths):
    """On the CPU with gradients, damsm_word_scores runs damsm_word_scores_save (the forward keeps each image's
    scores and softmaxes [M, 3, L, N], the backward reads them instead of recomputing): the same scores and
    gradients, to the bit, as the plain op and its recomputing backward."""
    img, words, L = _damsm_inputs(M, D, T, N, lengths)
    x1, w1 = img.clone().requires_grad_(True), words.clone().requires_grad_(True)
    x2, w2 = img.clone().requires_grad_(True), words.clone().requires_grad_(True)
    score, saved = torch.ops.t2i.damsm_word_scores_save(x1, w1, L, G1, G2)
    assert saved.shape == (M, 3, int(L.sum()), N) and not saved.requires_grad
    plain = torch.ops.t2i.damsm_word_scores(x2, w2, L, G1, G2)
    assert torch.equal(score, plain)
    for a, b in zip(_grads(score, (x1, w1)), _grads(plain, (x2, w2))):
        assert torch.equal(a, b)
    x3, w3 = img.clone().requires_grad_(True), words.clone().requires_grad_(True)
    assert ops.keeps_softmaxes(x3, w3, L)  # the wrapper takes this path
    assert torch.equal(ops.damsm_word_scores(x3, w3, L, G1, G2), plain)
    with pytest.raises(RuntimeError, match=r"saved must be the forward's \[M, 3, L, N\]"):
        torch.ops.t2i.damsm_word_scores_backward_saved(torch.ones(M, M), img, words, L, saved[:, :1], G1, G2)


def test_softmaxes_are_kept_only_for_a_cpu_backward_within_the_memory_cap(monkeypatch):
    """keeps_softmaxes: gradients on the CPU, in eager mode, and 3 M L N floats within ops.SAVE_MAX_BYTES."""
    img, words, L = _damsm_inputs(6, 8, 5, 7, [5, 1, 3, 5, 2, 4])  # 3 * 6 * 20 * 7 floats = 10080 bytes
    assert not ops.keeps_softmaxes(img, words, L)  # no gradient wanted
    img.requires_grad_(True)
    assert ops.keeps_softmaxes(img, words, L)
    with torch.no_grad():
        assert not ops.keeps_softmaxes(img, words, L)
    monkeypatch.setattr(ops, "SAVE_MAX_BYTES", 10080)
    assert ops.keeps_softmaxes(img, words, L)
    monkeypatch.setattr(ops, "SAVE_MAX_BYTES", 10079)
    assert not ops.keeps_softmaxes(img, words, L)


@needs_ext
def test_a_library_older_than_the_sources_is_named_not_half_used():
    """A prebuilt t2icli._C from before an op was added registers only some of the ops: the backend says which are
    missing and how to rebuild, instead of failing on the first call of a missing one."""
    code = textwrap.dedent("""
        from t2icli.ops import _ext
        _ext.OPS = _ext.OPS + ("an_op_of_a_newer_csrc",)
        path, reason = _ext._load()
        print(path, "|", reason)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("None |") and "older than csrc/" in out and "t2i::an_op_of_a_newer_csrc" in out
    assert "pip install -e ." in out


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    ops.backend_info()  # loads the library and registers fake kernels / autograd
    img, words, L = _damsm_inputs(4, 8, 5, 6, device=device)
    img.requires_grad_(True), words.requires_grad_(True)
    torch.library.opcheck(torch.ops.t2i.damsm_word_scores.default, (img, words, L, G1, G2))
    if device == "cpu":
        torch.library.opcheck(torch.ops.t2i.damsm_word_scores_save.default, (img, words, L, G1, G2))
    h, e, mask = _attn_inputs(2, 8, 5, 9, device=device)
    h.requires_grad_(True), e.requires_grad_(True)
    for return_attn in (False, True):
        torch.library.opcheck(torch.ops.t2i.word_region_attention.default, (h, e, mask, return_attn))


@needs_ext
def test_torch_compile_wrappers_fullgraph(monkeypatch):
    """The Python wrappers trace into one graph, even when the backend is first resolved while compiling."""
    from t2icli.ops import _ext

    info = ops.backend_info()
    monkeypatch.setattr(_ext, "_state", None)  # as in a fresh process: resolved during tracing
    img, words, L = _damsm_inputs(4, 8, 5, 6)
    h, e, mask = _attn_inputs(2, 8, 5, 9)

    def f(x, w, a, b):
        c, beta = ops.word_region_attention(a, b, mask, return_attn=True)
        return ops.damsm_word_scores(x, w, L, G1, G2).sum() + c.sum() + beta.sum()

    args = [t.clone().requires_grad_(True) for t in (img, words, h, e)]
    out = torch.compile(f, backend="aot_eager", fullgraph=True)(*args)
    out.backward()
    args2 = [t.clone().requires_grad_(True) for t in (img, words, h, e)]
    out2 = f(*args2)
    out2.backward()
    torch.testing.assert_close(out, out2)
    for a, b in zip(args, args2):
        torch.testing.assert_close(a.grad, b.grad)
    assert ops.backend_info() == info


@needs_ext
def test_torch_compile():
    ops.backend_info()
    img, words, L = _damsm_inputs(4, 8, 5, 6)
    h, e, mask = _attn_inputs(2, 8, 5, 9)

    def f(x, w, a, b):
        return torch.ops.t2i.damsm_word_scores(x, w, L, G1, G2).sum() + torch.ops.t2i.word_region_attention(a, b, mask, True)[0].sum()

    args = [t.clone().requires_grad_(True) for t in (img, words, h, e)]
    out = torch.compile(f, backend="aot_eager", fullgraph=True)(*args)
    out.backward()
    args2 = [t.clone().requires_grad_(True) for t in (img, words, h, e)]
    f(*args2).backward()
    torch.testing.assert_close(out, f(*args2).detach())
    for a, b in zip(args, args2):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.slow  # compiles csrc/: 1-2 min on 2 cores
def test_jit_build_without_prebuilt_extension(tmp_path):
    """Without t2icli._C the first op call JIT-builds csrc/ into $T2I_CACHE and uses it."""
    res = _run_py("""
        import sys, torch
        sys.modules["t2icli._C"] = None
        import t2icli.ops as ops
        info = ops.backend_info()
        assert info["backend"] == "ext", info
        s = ops.damsm_word_scores(torch.randn(3, 8, 5), torch.randn(3, 8, 4), torch.tensor([4, 1, 2]), 4.0, 5.0)
        print("OK", info["path"])
    """, T2I_OPS="ext", T2I_CACHE=str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"OK {tmp_path}" in res.stdout
