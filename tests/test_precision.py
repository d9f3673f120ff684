"""Half precision: what autocast does to the t2i ops (float32 at their boundary, on both backends), and one AttnGAN
training step under bf16 autocast against the same step in fp32."""

import copy
import os

import pytest
import torch

import t2icli.ops as ops
from t2icli.ops import _ext
from t2icli.ops import reference as ref

FORCED_REF = os.environ.get("T2I_OPS", "").lower() == "ref"
needs_ext = pytest.mark.skipif(FORCED_REF, reason="T2I_OPS=ref forces the reference backend")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
OPS = ("word_region_attention", "word_region_attention_backward", "damsm_word_scores", "damsm_word_scores_backward")
G1, G2 = 4.0, 5.0


def _inputs(device, dtype, seed=0):
    """h [3, 8, 20], e [3, 8, 5], mask [3, 5]; img [4, 8, 9], words [4, 8, 5], lengths [4]; all in dtype."""
    g = torch.Generator().manual_seed(seed)
    h, e = torch.randn(3, 8, 20, generator=g), torch.randn(3, 8, 5, generator=g)
    mask = torch.arange(5)[None, :] >= torch.tensor([5, 2, 1])[:, None]
    img, words = torch.randn(4, 8, 9, generator=g), torch.randn(4, 8, 5, generator=g)
    lengths = torch.tensor([5, 1, 3, 2])
    f = lambda t: t.to(device, dtype)  # noqa: E731
    return f(h), f(e), mask.to(device), f(img), f(words), lengths.to(device)


# -- the ops under autocast -------------------------------------------------------------------------------------------


@needs_ext
def test_autocast_rule_is_registered():
    """Every t2i op has an explicit autocast kernel on CPU and CUDA (not only the absence of one)."""
    ops.backend_info()
    for op in OPS:
        for key in ("AutocastCPU", "AutocastCUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"t2i::{op}", key), (op, key)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_raw_ops_under_autocast_compute_in_float32(device):
    """torch.ops.t2i.* under bf16 autocast: bfloat16 inputs are cast to float32, float32 comes back, equal to the
    float32 op on the cast inputs; gradients reach the bfloat16 inputs. Outside autocast the kernels refuse bfloat16
    (so it is the registered rule, not the kernels, that makes this work)."""
    ops.backend_info()
    h, e, mask, img, words, lengths = _inputs(device, torch.bfloat16)
    with pytest.raises(RuntimeError, match="BFloat16"):
        torch.ops.t2i.damsm_word_scores(img, words, lengths, G1, G2)
    hb, eb, ib, wb = (t.clone().requires_grad_(True) for t in (h, e, img, words))
    with torch.autocast(device, dtype=torch.bfloat16):
        c, beta = torch.ops.t2i.word_region_attention(hb, eb, mask, True)
        score = torch.ops.t2i.damsm_word_scores(ib, wb, lengths, G1, G2)
    assert c.dtype == beta.dtype == score.dtype == torch.float32
    hf, ef, i_f, wf = (t.float().requires_grad_(True) for t in (h, e, img, words))
    c32, beta32 = torch.ops.t2i.word_region_attention(hf, ef, mask, True)
    score32 = torch.ops.t2i.damsm_word_scores(i_f, wf, lengths, G1, G2)
    torch.testing.assert_close(c, c32, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(beta, beta32, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(score, score32, rtol=1e-6, atol=1e-6)
    (c.sum() + beta.sum() + score.sum()).backward()
    (c32.sum() + beta32.sum() + score32.sum()).backward()
    for low, full in ((hb, hf), (eb, ef), (ib, i_f), (wb, wf)):
        assert low.grad.dtype == torch.bfloat16
        torch.testing.assert_close(low.grad, full.grad.bfloat16())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["ext", "ref"])
def test_wrappers_under_autocast_are_float32_on_both_backends(device, backend, monkeypatch):
    """t2icli.ops under bf16 autocast: mixed bfloat16/float32 inputs are accepted, the result is float32 and equals
    the float32 reference computed without autocast (to float32 rounding), whichever backend runs. The reference
    backend would compute its matmuls in bfloat16 (errors near 1e-2) if the wrapper left autocast on."""
    if backend == "ext" and FORCED_REF:
        pytest.skip("T2I_OPS=ref")
    if backend == "ref":
        monkeypatch.setattr(_ext, "_state", {"backend": "ref", "device_kernels": [], "reason": "test", "path": None})
    h, e, mask, img, words, lengths = _inputs(device, torch.float32)
    hb, eb, ib = (t.bfloat16().requires_grad_(True) for t in (h, e, img))
    w32 = words.clone().requires_grad_(True)
    with torch.autocast(device, dtype=torch.bfloat16):
        c, beta = ops.word_region_attention(hb, eb, mask, return_attn=True)
        score = ops.damsm_word_scores(ib, w32, lengths, G1, G2)  # bfloat16 regions, float32 words
    assert c.dtype == beta.dtype == score.dtype == torch.float32
    c_want, beta_want = ref.word_region_attention(hb.detach().float(), eb.detach().float(), mask, return_attn=True)
    score_want = ref.damsm_word_scores(ib.detach().float(), words, lengths, G1, G2)
    torch.testing.assert_close(c, c_want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(beta, beta_want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(score, score_want, rtol=1e-5, atol=1e-5)
    (c.sum() + score.sum()).backward()
    assert hb.grad.dtype == ib.grad.dtype == torch.bfloat16 and w32.grad.dtype == torch.float32
    # outside autocast the old rule holds: one dtype in, the same dtype out
    assert ops.word_region_attention(hb.detach(), eb.detach(), mask).dtype == torch.bfloat16
    with pytest.raises(TypeError, match="img and words must share a dtype"):
        ops.damsm_word_scores(ib, w32, lengths, G1, G2)


# -- one AttnGAN step in bf16 autocast vs fp32 ------------------------------------------------------------------------

# Tolerances of the bf16-autocast step against the fp32 step. bfloat16 keeps 8 significant bits (a relative
# rounding of 2^-9 per operation), compounded through G, the Ds, BatchNorm at batch 8 and the DAMSM image
# encoder. Measured on CPU over 5 weight/batch seeds of this configuration: every loss within 0.2%; G's
# gradient 14.5-20.3% relative L2 error, cosine 0.980-0.989; the Ds' gradient 6.1-7.8%, cosine >= 0.997.
# Allowed: losses within 1% (KL, near 0, within 1e-3 absolute); G's gradient <= 30% with cosine >= 0.97, the
# Ds' <= 15% with cosine >= 0.99. A NaN, an overflow or a term in the wrong precision regime (a loss off by
# percents) fails it; the ops' own float32 boundary is pinned down by the tests above.
LOSS_RTOL, KL_ATOL = 0.01, 1e-3
GRAD_TOL = {"G": (0.30, 0.97), "D": (0.15, 0.99)}  # (max relative L2 error, min cosine similarity)


def _tiny_attngan(device):
    """A 2-stage 16/32 px AttnGAN with a DAMSM (small encoder), random weights, and one synthetic batch of 8."""
    from t2icli.models.attngan import GeneratorConfig, Generator, build_discriminators, init_weights, stage_sizes
    from t2icli.models.damsm import DAMSMConfig, build_damsm

    torch.manual_seed(0)
    dcfg = DAMSMConfig(vocab_size=30, word_limit=8, image_size=32, small_width=4, hidden=16, embedding_dim=16,
                       small_pool="avgmax")
    damsm = build_damsm(dcfg).to(device).eval().requires_grad_(False)
    gcfg = GeneratorConfig(image_size=32, stages=2, gf_dim=8, df_dim=8, z_dim=16, cond_dim=16, text_dim=dcfg.dim)
    G, Ds = init_weights(Generator(gcfg)).to(device), init_weights(build_discriminators(gcfg)).to(device)
    g = torch.Generator().manual_seed(1)
    B = 8
    lengths = torch.tensor([8, 7, 6, 5, 4, 3, 8, 2])
    tokens = torch.randint(1, 30, (B, 8), generator=g) * (torch.arange(8)[None, :] < lengths[:, None])
    batch = {"reals": [(torch.rand(B, 3, s, s, generator=g) * 2 - 1).to(device) for s in stage_sizes(32, 2)],
             "tokens": tokens.to(device), "lengths": lengths, "class_ids": torch.arange(B),
             "z": torch.randn(B, 16, generator=g).to(device), "eps": torch.randn(B, 16, generator=g).to(device)}
    return G, Ds, damsm, dcfg, batch


def _step(G, Ds, damsm, dcfg, batch, amp):
    """One train_step on copies of the networks; returns (losses, {"G": grad vector, "D": grad vector})."""
    from t2icli.training.attngan import train_step

    G, Ds = copy.deepcopy(G), copy.deepcopy(Ds)
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(Ds.parameters(), lr=2e-4, betas=(0.5, 0.999))
    vals = train_step(G, list(Ds), G, Ds, opt_G, opt_D, damsm.text_encoder, damsm.image_encoder, batch["reals"],
                      batch["tokens"], batch["lengths"], batch["class_ids"], batch["z"], batch["eps"], amp=amp,
                      kl_weight=1.0, damsm_weight=5.0, damsm_config=dcfg)
    # After the step, G's .grad holds the G step's gradients and the Ds' .grad the D step's (train_step leaves them).
    grads = {name: torch.cat([p.grad.float().flatten() for p in net.parameters() if p.grad is not None])
             for name, net in (("G", G), ("D", Ds))}
    return vals, grads


@pytest.fixture
def one_thread():
    """One CPU thread: the bf16 CPU convolutions' thread pool spins for seconds on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("device", DEVICES)
def test_attngan_step_bf16_autocast_matches_fp32(device, monkeypatch, one_thread):
    """t2icli.training.attngan.train_step under distributed.autocast(device, "bf16") (the trainers' idiom; on CPU
    the machine is made to report native bf16, since torch emulates it elsewhere) against the same step in fp32,
    from the same weights and batch."""
    from t2icli.training import distributed

    monkeypatch.setattr(distributed, "cpu_bf16", lambda: True)
    G, Ds, damsm, dcfg, batch = _tiny_attngan(device)
    seen = []  # (op, input dtypes, output dtype) of every t2i op call in the bf16 step
    wra, dws = ops.word_region_attention, ops.damsm_word_scores

    def spy_wra(h, e, mask, return_attn=False):
        out = wra(h, e, mask, return_attn=return_attn)
        seen.append(("attention", h.dtype, e.dtype, (out[0] if return_attn else out).dtype))
        return out

    def spy_dws(img, words, lengths, gamma1, gamma2):
        out = dws(img, words, lengths, gamma1, gamma2)
        seen.append(("damsm", img.dtype, words.dtype, out.dtype))
        return out

    fp32_vals, fp32_grads = _step(G, Ds, damsm, dcfg, batch, None)
    monkeypatch.setattr(ops, "word_region_attention", spy_wra)
    monkeypatch.setattr(ops, "damsm_word_scores", spy_dws)
    bf16_vals, bf16_grads = _step(G, Ds, damsm, dcfg, batch, distributed.autocast(device, "bf16"))
    # the bf16 step really ran in bf16 (G's features reach the attention in bfloat16) and the ops gave float32
    assert any(s[0] == "attention" and s[1] == torch.bfloat16 for s in seen), seen
    assert any(s[0] == "damsm" for s in seen), seen
    assert all(s[3] == torch.float32 for s in seen), seen
    assert fp32_vals["g"] != bf16_vals["g"]
    for k in ("d", "g", "g_adv", "damsm"):
        a, b = bf16_vals[k], fp32_vals[k]
        assert abs(a - b) <= LOSS_RTOL * abs(b), (k, a, b)
    assert abs(bf16_vals["kl"] - fp32_vals["kl"]) <= KL_ATOL
    for name, (max_rel, min_cos) in GRAD_TOL.items():
        a, b = bf16_grads[name], fp32_grads[name]
        assert torch.isfinite(a).all()
        rel = float((a - b).norm() / b.norm())
        cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        assert rel <= max_rel and cos >= min_cos, (name, rel, cos)


def test_cpu_bf16_autocasts_only_where_the_cpu_computes_it(monkeypatch):
    """distributed.autocast on CPU: bf16 autocast where cpu_bf16() (native AVX512-BF16 / AMX), else fp32 (a null
    context), and never for --precision fp32; cpu_bf16 answers from torch's CPU feature probes."""
    from t2icli.training import distributed

    x = torch.randn(4, 8)
    for native in (True, False):
        monkeypatch.setattr(distributed, "cpu_bf16", lambda native=native: native)
        with distributed.autocast("cpu", "bf16"):
            y = torch.nn.functional.linear(x, torch.randn(3, 8))
        assert y.dtype == (torch.bfloat16 if native else torch.float32)
        with distributed.autocast("cpu", "fp32"):
            assert torch.nn.functional.linear(x, torch.randn(3, 8)).dtype == torch.float32
    monkeypatch.undo()
    assert isinstance(distributed.cpu_bf16(), bool)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert distributed.cpu_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert distributed.cpu_bf16() is True
