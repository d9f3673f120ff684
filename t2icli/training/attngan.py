"""The training loop of the multi-stage GANs: `t2i train attngan` (AttnGAN) and `t2i train stackgan2` (StackGAN++).

`train(data, damsm, out, kind=...)` trains G (all stages at once) and one D per stage on a prepared dataset,
conditioned on the frozen text encoder of a DAMSM run (words e for attention, sentence e_bar for
conditioning augmentation and the conditional D logits). Per step, as AttnGAN: G makes x_0..x_{S-1};
every D_i takes (real, text) / (fake, text) / (real, wrong text) + unconditional terms; then G takes the
adversarial terms of every stage + KL + (attngan) lambda * DAMSM(x_{S-1}) or (stackgan2) colour consistency.

Run folder (see training/run.py): config.json, log.txt, stats.jsonl, checkpoints/ (full state: G, Ds, both
optimisers, EMA, step, RNG), fakes<step>.png grids of every stage at fixed noise and prompts, attn<step>.png
word-attention maps (attngan), and the inference export generator.pt (models/attngan.py).

Determinism: data order/augmentation are functions of (seed, epoch, index); z and CA noise come from the
global torch RNG, checkpointed; snapshots and R-precision use private generators. So resuming continues
exactly like an uninterrupted run (on CPU; bit-for-bit up to non-deterministic CUDA kernels).

Determinism: the global torch RNG is reseeded every step from (seed, rank, step), and the per-sample noise
(z, CA's eps) of the whole global batch comes from a generator seeded with (seed, step).

Distributed (torchrun, see training/distributed.py): `batch_size` is the global batch; rank r trains on rows
[r::world] with the same z/eps those rows get in one process; BatchNorm in G and the Ds is synchronised (global-batch
statistics), the mismatched captions of D's "wrong" term are the global batch's roll, and the DAMSM term gathers
the features of every rank, so N processes compute the losses of one process at the same global batch (to float
rounding). Gradients are averaged with distributed.sync_grads after each backward (not DDP: D is called several
times and through .logits, and its requires_grad is toggled). Only rank 0 snapshots, evaluates and writes.

Precision: "bf16" autocasts G's and the Ds' forward passes on CUDA (losses, KL, penalties and EMA in fp32); on CPU
it is ignored (logged) because CPU bf16 convolutions are slower than fp32 here. `compile` wraps G and every D in
torch.compile (the t2i::* custom ops have fake kernels, so they trace).
"""

import math
import os
import time

import numpy as np
import torch

from t2icli import losses
from t2icli.models.attngan import (GeneratorConfig, GeneratorExportError, Generator, build_discriminators,
                                   check_stages, init_weights, save_generator, stage_sizes, word_mask)
from t2icli.training import distributed
from t2icli.training.ema import EMA
from t2icli.training.run import RunError, check_checkpoint, load_checkpoint, load_ema, rng_state, set_rng_state

__all__ = ["train", "PRESETS", "KINDS", "generate", "generated_rprecision", "encode_prompts", "TrainError"]

KINDS = ("attngan", "stackgan2")
TrainError = RunError  # the user-facing error type of this module (names the flag or path)

# Named configurations; a flag the user gives explicitly overrides the preset's value (see cli/train_gan.py).
PRESETS = {
    "toybirds-cpu": {
        "description": "2 stages (32/64 px) on toybirds 64 px in about 6 minutes on 2 CPU cores",
        "stages": 2, "gf_dim": 8, "df_dim": 8, "batch_size": 16, "steps": 4000, "lr_g": 2e-3, "lr_d": 2e-3,
        "r1_gamma": 2.0, "damsm_augment": True,
        "z_dim": 64, "cond_dim": 64, "ema_beta": 0.99, "snapshot_every": 500, "max_minutes": 7.0,
        "prompts": ["a red bird with blue wings", "a yellow bird with black wings", "a blue bird with a red crown",
                    "a green bird with white wings", "a white bird with a purple crown", "a black bird with orange wings"],
    },
}

LOG_KEYS = ("d", "g", "g_adv", "kl", "damsm", "cc")


def _check_positive(**values):
    for name, v in values.items():
        if v is not None and not v > 0:
            raise TrainError(f"--{name.replace('_', '-')} must be > 0, got {v}")


_autocast = distributed.autocast  # the one precision idiom lives in training/distributed.py


@torch.no_grad()
def generate(G, text_encoder, tokens, lengths, z=None, eps=None, return_attn=False, batch_size=100, generator=None):
    """Images of every stage for captions tokens [n, T] / lengths [n] (G and text_encoder in eval mode).

    z [n, z_dim] and eps [n, cond_dim] default to draws from `generator` (a torch.Generator, CPU) or the
    global RNG. Returns {"images": [x_i [n, 3, s_i, s_i] on CPU], "attn": [beta_i [n, T, .]] (if asked)}.
    """
    cfg = G.config
    device = next(G.parameters()).device
    n = len(tokens)
    if z is None:
        z = torch.randn(n, cfg.z_dim, generator=generator)
    if eps is None:
        eps = torch.randn(n, cfg.cond_dim, generator=generator)
    outs, attns = [], []
    for s in range(0, n, batch_size):
        tok = torch.as_tensor(tokens[s : s + batch_size]).to(device)
        e, e_bar = text_encoder(tok, torch.as_tensor(lengths[s : s + batch_size]))  # [b, D, T], [b, D]
        out = G(z[s : s + batch_size].to(device), e_bar, e, word_mask(tok), eps=eps[s : s + batch_size].to(device),
                return_attn=return_attn)
        outs.append([x.float().cpu() for x in out["images"]])
        if return_attn:
            attns.append([b.float().cpu() for b in out["attn"]])
    result = {"images": [torch.cat([o[i] for o in outs]) for i in range(len(outs[0]))]}
    if return_attn:
        result["attn"] = [torch.cat([a[i] for a in attns]) for i in range(len(attns[0]))] if attns[0] else []
    return result


@torch.no_grad()
def generated_rprecision(G, text_encoder, image_encoder, tokens, lengths, class_ids, n_negatives=99, runs=10, seed=0,
                         batch_size=100):
    """R-precision of images generated from captions (final stage), scored by the DAMSM encoders.

    tokens [n, T], lengths [n], class_ids [n]: one caption per image; negatives come from other classes,
    n_negatives is lowered to what the split allows. Returns the dict of rprecision_from_features, or None
    when no caption of another class exists.
    """
    from t2icli.metrics.rprecision import encode_dataset, rprecision_from_features

    gen = torch.Generator().manual_seed(int(seed) + 7919)
    x = generate(G, text_encoder, tokens, lengths, batch_size=batch_size, generator=gen)["images"][-1]  # [n, 3, s, s]
    f_bar, e_bar = encode_dataset((text_encoder, image_encoder), x, tokens, lengths, batch_size)
    class_ids = np.asarray(class_ids)
    fewest = int((class_ids[:, None] != class_ids[None, :]).sum(1).min()) if len(class_ids) else 0
    n_neg = min(int(n_negatives), fewest)
    if n_neg < 1:
        return None
    return rprecision_from_features(f_bar, e_bar, class_ids, n_neg, runs, seed)


def encode_prompts(ds, prompts):
    """Caption strings -> (tokens [n, T], lengths [n], texts) with ds's vocabulary. Raises TrainError if a prompt
    has no known word; unknown words are dropped (named in the returned texts as the words kept)."""
    rows, lengths, texts = [], [], []
    for text in prompts:
        ids, _ = ds.encode(text)
        if len(ids) == 0:
            raise TrainError(f"--prompt {text!r}: none of its words is in the vocabulary of the data")
        tok, n = ds.cut(ids.numpy(), np.random.default_rng(0))
        rows.append(torch.from_numpy(tok))
        lengths.append(int(n))
        texts.append(" ".join(ds.decode(tok[:n].tolist())))
    return torch.stack(rows), torch.tensor(lengths), texts


def train_step(G_fwd, D_fwd, G, Ds, opt_G, opt_D, text_encoder, image_encoder, reals, tokens, lengths, class_ids, z,
               eps, *, amp=None, kl_weight=1.0, damsm_weight=0.0, damsm_config=None, damsm_aug=None, cc=None, r1_gamma=0.0,
               check=None):
    """One AttnGAN / StackGAN++ step on this rank's rows of the global batch: D step, then G step.

    G_fwd / D_fwd: what to call (G and the list of Ds, or their torch.compile wrappers); G / Ds: the modules
    (parameters, requires_grad); reals: S x [b, 3, s_i, s_i]; tokens [b, T]; lengths, class_ids [b]; z [b, z_dim];
    eps [b, cond_dim]; amp: autocast context of the forward passes (None = fp32); damsm_weight > 0 adds the DAMSM
    term (image_encoder + damsm_config's gammas, features gathered over ranks), which scores the final images
    moved by losses.shift_flip(x, damsm_aug) when damsm_aug [b, 3] (uniform draws) is given; cc: (lambda1, lambda2) adds
    StackGAN++'s colour consistency; r1_gamma > 0 adds the R1 penalty to every D's loss (double backward, so the
    Ds run uncompiled in their own step). Gradients are averaged over ranks before each optimiser step. check(vals) is
    called with the losses before G's backward (to stop on a non-finite loss).
    Returns {"d", "g", "g_adv", "kl", "damsm", "cc"}: floats, averaged over ranks (= the one-process values).
    """
    amp = amp if amp is not None else distributed.autocast("cpu", "fp32")
    device = tokens.device
    with torch.no_grad():
        e, e_bar = text_encoder(tokens, lengths)  # [b, D, T] words, [b, D] sentence (frozen)
    mask = word_mask(tokens)  # [b, T] True = padding
    e_bar_wrong = None  # one process: mismatched(e_bar); N processes: this rank's rows of the global batch's roll
    if distributed.current().world > 1:
        e_bar_wrong = distributed.local_rows(losses.mismatched(distributed.all_gather(e_bar)))  # [b, D]
    with amp:
        g_out = G_fwd(z, e_bar, e, mask, eps=eps)
    fakes = g_out["images"]  # S x [b, 3, s_i, s_i]

    # (1) discriminators: (real, text) / (fake, text) / (real, wrong text) + unconditional.
    Ds.requires_grad_(True)
    d_total = 0.0
    for D, x_real, x_fake in zip(Ds if r1_gamma > 0 else D_fwd, reals, fakes):  # torch.compile: no double backward
        with amp:
            d_total = d_total + losses.discriminator_loss(D, x_real, x_fake.detach(), e_bar, e_bar_wrong,
                                                          r1_gamma)["loss"]
    opt_D.zero_grad(set_to_none=True)
    d_total.backward()
    distributed.sync_grads(Ds.parameters())
    opt_D.step()

    # (2) generator: adversarial terms of every stage + KL + DAMSM (attngan) / colour consistency.
    Ds.requires_grad_(False)  # no D gradients wasted in the G step
    with amp:
        g_adv, _ = losses.generator_adv_loss(D_fwd, fakes, e_bar)
    kl = losses.kl_loss(g_out["mu"], g_out["logvar"])
    g_total = g_adv + kl_weight * kl
    dam = cc_loss = torch.zeros((), device=device)
    if damsm_weight > 0:
        def gather(t):  # the DAMSM negatives are the whole global batch, as in one process
            t = t.to(device)
            return distributed.all_gather_with_grad(t) if t.requires_grad else distributed.all_gather(t)

        with amp:
            x_dam = fakes[-1] if damsm_aug is None else losses.shift_flip(fakes[-1], damsm_aug)
            dam = losses.generator_damsm_loss(image_encoder, x_dam, e, e_bar, lengths, class_ids,
                                              damsm_config.gamma1, damsm_config.gamma2, damsm_config.gamma3,
                                              gather=gather if distributed.current().world > 1 else None)["loss"]
        g_total = g_total + damsm_weight * dam
    if cc is not None:
        cc_loss = sum(losses.color_consistency_loss(fakes[i - 1], fakes[i], *cc) for i in range(1, len(fakes)))
        g_total = g_total + cc_loss
    stats = torch.stack([t.detach().float().reshape(()) for t in (d_total, g_total, g_adv, kl, dam, cc_loss)])
    vals = dict(zip(("d", "g", "g_adv", "kl", "damsm", "cc"), distributed.all_mean(stats).tolist()))
    if check is not None:
        check(vals)
    opt_G.zero_grad(set_to_none=True)
    g_total.backward()
    distributed.sync_grads(G.parameters())
    opt_G.step()
    return vals


def _fixed_captions(ds, n):
    """The first n captions of the deterministic split ds: (tokens [n, T], lengths [n], class_ids [n], texts)."""
    items = [ds[i] for i in range(min(max(int(n), 1), len(ds)))]
    tokens = torch.stack([it["tokens"] for it in items])
    lengths = torch.tensor([it["length"] for it in items])
    class_ids = np.array([it["class_id"] for it in items])
    texts = [" ".join(ds.decode(it["tokens"][: it["length"]].tolist())) if hasattr(ds, "decode") else "" for it in items]
    return tokens, lengths, class_ids, texts


def load_damsm_and_splits(data, meta, damsm, device, seed, resolutions):
    """What every GAN trainer loads first: the DAMSM run's encoders and the train / test splits (test, or train
    when there is none) at `resolutions` (the test split at the last one only), checked to share a vocabulary.

    Returns (text_encoder, image_encoder, damsm_config, train_ds, test_ds). Raises TrainError naming --damsm.
    """
    from t2icli.data import PreparedDataset
    from t2icli.models.damsm import DAMSMExportError, load_damsm

    try:
        text_encoder, image_encoder, dcfg, damsm_vocab = load_damsm(damsm, device)
    except DAMSMExportError as exc:
        raise TrainError(f"--damsm: {exc}") from None
    train_ds = PreparedDataset(data, "train", resolutions=resolutions, train=True, seed=seed)
    test_split = "test" if "test" in meta["splits"] else "train"
    test_ds = PreparedDataset(data, test_split, resolutions=(resolutions[-1],), train=False, seed=seed)
    if list(damsm_vocab) != list(train_ds.vocab):
        raise TrainError(f"--damsm {damsm} was trained on a different vocabulary ({len(damsm_vocab)} words) than "
                         f"--data {data} ({len(train_ds.vocab)} words); train the DAMSM on the same prepared dataset")
    return text_encoder, image_encoder, dcfg, train_ds, test_ds


def train(data, damsm, out, *, kind="attngan", stages=3, steps=None, epochs=None, batch_size=20, lr_g=2e-4, lr_d=2e-4,
          damsm_weight=5.0, gf_dim=32, df_dim=64, z_dim=100, cond_dim=100, kl_weight=1.0, color_consistency=True,
          cc_lambda1=1.0, cc_lambda2=5.0, ema=True, ema_beta=0.999, device="cpu", precision="fp32", seed=0,
          resume=None, snapshot_every=1000, checkpoint_every=None, max_minutes=None, n_prompts=8,
          snapshot_rprecision=300, final_rprecision=None, rprecision_runs=10, keep_checkpoints=3, progress=True,
          num_workers=0, log_every=None, preset=None, prompts=None, compile=False, r1_gamma=0.0, damsm_augment=False):
    """Train an AttnGAN (kind="attngan") or StackGAN++ (kind="stackgan2") into run folder `out`.

    data: prepared dataset folder; damsm: DAMSM run folder (or damsm.pt) whose frozen text encoder gives e and
    e_bar (and, for attngan, whose image encoder gives the DAMSM loss and R-precision). Stops after `steps`
    optimiser steps in total, or `epochs` epochs (default 600 if neither), or `max_minutes` of training in this
    invocation; then evaluates, checkpoints and writes RUN/generator.pt (the EMA generator when ema).
    prompts: extra caption strings drawn (first) in every snapshot grid, besides the first `n_prompts` test captions.
    batch_size is the global batch (split over the processes of a torchrun job); compile: torch.compile G and the Ds.
    r1_gamma: weight of the R1 gradient penalty on the discriminators' real images (0 = none, as the papers).
    damsm_augment: the DAMSM term scores each final image randomly shifted (up to 1/8 of its side) and mirrored.
    resume: None, "latest" or a checkpoint/run path. Returns {"run_dir", "export", "step", "epoch", "stop",
    "images_per_s", "train_seconds", "seconds", "rprecision": dict or None, "snapshot": path, "attention": path,
    "is_main", "world"} (rprecision/snapshot/attention are None on ranks other than 0).
    Raises t2icli.data.DataError (bad data), TrainError (bad option, DAMSM/vocabulary mismatch, resume, NaN).
    """
    return distributed.launch(_train, device, batch_size, dict(locals()), TrainError)


def _train(env, data, damsm, out, *, kind, stages, steps, epochs, batch_size, lr_g, lr_d, damsm_weight, gf_dim, df_dim,
           z_dim, cond_dim, kl_weight, color_consistency, cc_lambda1, cc_lambda2, ema, ema_beta, device, precision,
           seed, resume, snapshot_every, checkpoint_every, max_minutes, n_prompts, snapshot_rprecision,
           final_rprecision, rprecision_runs, keep_checkpoints, progress, num_workers, log_every, preset, prompts,
           compile, r1_gamma, damsm_augment):
    from t2icli.data import load_meta, make_loader

    t_start, cpu_start = time.perf_counter(), time.process_time()
    if kind not in KINDS:
        raise TrainError(f"unknown trainer {kind!r}; choose from {KINDS}")
    if precision not in ("fp32", "bf16"):
        raise TrainError(f"--precision {precision!r}: choose fp32 or bf16")
    if steps is not None and epochs is not None:
        raise TrainError("give --steps or --epochs, not both")
    _check_positive(steps=steps, epochs=epochs, batch_size=batch_size, lr_g=lr_g, lr_d=lr_d, gf_dim=gf_dim,
                    df_dim=df_dim, z_dim=z_dim, cond_dim=cond_dim, snapshot_every=snapshot_every,
                    checkpoint_every=checkpoint_every, max_minutes=max_minutes)
    if batch_size < 2:
        raise TrainError(f"--batch-size {batch_size}: needs >= 2 (mismatched pairs and DAMSM negatives)")
    if damsm_weight < 0 or kl_weight < 0:
        raise TrainError("--damsm-weight and the KL weight must be >= 0")
    if not r1_gamma >= 0:
        raise TrainError(f"--r1-gamma {r1_gamma}: must be >= 0")
    if not 0 <= ema_beta < 1:
        raise TrainError(f"--ema-beta {ema_beta}: must be in [0, 1)")
    meta = load_meta(data)
    image_size = int(meta["image_size"])
    try:
        check_stages(image_size, stages)
    except GeneratorExportError as exc:
        raise TrainError(f"{exc} (--data {data})") from None
    sizes = stage_sizes(image_size, stages)
    text_encoder, image_encoder, dcfg, train_ds, test_ds = load_damsm_and_splits(data, meta, damsm, device, seed,
                                                                                 sizes)
    vocab = list(train_ds.vocab)
    if len(train_ds) < batch_size:
        raise TrainError(f"--batch-size {batch_size} is larger than the training split ({len(train_ds)} images)")
    if final_rprecision is None:
        final_rprecision = len(test_ds)

    gcfg = GeneratorConfig(image_size=image_size, stages=stages, gf_dim=gf_dim, df_dim=df_dim, z_dim=z_dim,
                           cond_dim=cond_dim, text_dim=dcfg.dim, attention=(kind == "attngan"))
    per_epoch = len(train_ds) // batch_size
    if steps is None and epochs is None:
        epochs = 600
    total = int(steps) if steps is not None else int(epochs) * per_epoch
    checkpoint_every = checkpoint_every or snapshot_every
    use_damsm = kind == "attngan" and damsm_weight > 0
    use_cc = kind == "stackgan2" and color_consistency and stages > 1
    train_config = {
        "kind": kind, "preset": preset, "data": os.path.abspath(os.fspath(data)),
        "damsm": os.path.abspath(os.fspath(damsm)), "steps": steps, "epochs": epochs, "total_steps": total,
        "batch_size": batch_size, "lr_g": lr_g, "lr_d": lr_d, "damsm_weight": damsm_weight if kind == "attngan" else 0.0,
        "kl_weight": kl_weight, "color_consistency": bool(use_cc), "cc_lambda1": cc_lambda1, "cc_lambda2": cc_lambda2,
        "ema": bool(ema), "ema_beta": ema_beta, "device": str(device), "precision": precision, "seed": seed,
        "compile": bool(compile), "world_size": env.world, "r1_gamma": r1_gamma,
        "damsm_augment": bool(damsm_augment and use_damsm),
        "snapshot_every": snapshot_every, "checkpoint_every": checkpoint_every, "max_minutes": max_minutes,
        "prompts": list(prompts or []), "n_prompts": n_prompts,
        "model": gcfg.to_dict(), "sizes": sizes, "damsm_config": dcfg.to_dict(),
        "dataset": {k: meta.get(k) for k in ("source", "image_size", "word_limit", "vocab_size", "n_classes")},
    }
    run = distributed.open_run(out, train_config, resume=resume, keep=keep_checkpoints)
    progress = progress and env.is_main

    # -- models -------------------------------------------------------------------------------------
    torch.manual_seed(seed)
    G = distributed.sync_batchnorm(init_weights(Generator(gcfg))).to(device)  # global-batch BN under torchrun
    Ds = distributed.sync_batchnorm(init_weights(build_discriminators(gcfg))).to(device)
    opt_G = torch.optim.Adam(G.parameters(), lr=lr_g, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(Ds.parameters(), lr=lr_d, betas=(0.5, 0.999))  # per-parameter: same as one Adam per D
    G_ema = EMA(G, ema_beta) if ema else None
    step, epoch, batch_in_epoch = 0, 0, 0
    if run.resume_from is not None:
        ckpt = load_checkpoint(run.resume_from)
        check_checkpoint(ckpt, run.resume_from, kind, gcfg.to_dict(), vocab, data)
        G.load_state_dict(ckpt["G"])
        Ds.load_state_dict(ckpt["Ds"])
        opt_G.load_state_dict(ckpt["opt_G"])
        opt_D.load_state_dict(ckpt["opt_D"])
        load_ema(G_ema, ckpt, run.resume_from)
        set_rng_state(ckpt["rng"])
        step, epoch, batch_in_epoch = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch"])
        run.log(f"resumed at step {step} (epoch {epoch}, batch {batch_in_epoch})")
    n_g = sum(p.numel() for p in G.parameters())
    n_d = sum(p.numel() for p in Ds.parameters())
    run.log(f"{kind}: {stages} stages {sizes} px, G {n_g / 1e6:.2f}M / Ds {n_d / 1e6:.2f}M parameters, "
            f"{len(train_ds)} train / {len(test_ds)} {test_ds.split} images, batch {batch_size}, {total} steps, "
            f"device {device}" + env.describe(batch_size))
    G_fwd, D_fwd = G, list(Ds)  # what the step calls; G and Ds themselves give state dicts and parameters
    if compile:
        G_fwd, D_fwd = torch.compile(G), [torch.compile(D) for D in Ds]

    # -- fixed prompts and noise for snapshots (private RNG: never touches the training stream) ---------------
    p_tokens, p_lengths, _, p_texts = _fixed_captions(test_ds, n_prompts)
    if prompts:
        x_tokens, x_lengths, x_texts = encode_prompts(test_ds, prompts)
        p_tokens, p_lengths, p_texts = torch.cat([x_tokens, p_tokens]), torch.cat([x_lengths, p_lengths]), x_texts + p_texts
    gen = torch.Generator().manual_seed(int(seed) + 104729)
    p_z = torch.randn(len(p_tokens), z_dim, generator=gen)
    p_eps = torch.randn(len(p_tokens), cond_dim, generator=gen)
    rp_n = min(int(snapshot_rprecision), len(test_ds)) if snapshot_rprecision else 0
    final_n = min(int(final_rprecision), len(test_ds))
    rp_caps = _fixed_captions(test_ds, max(rp_n, final_n))

    def sampler():
        return G_ema.shadow if G_ema is not None else G

    def snapshot(final=False):
        """Grid of every stage at fixed noise/prompts (+ attention map) and the generated-image R-precision."""
        from t2icli.training.damsm import save_attention_png
        from t2icli.viz import save_image_grid, to_uint8

        t0 = time.perf_counter()
        net = sampler()
        was = net.training
        net.eval()
        try:
            res = generate(net, text_encoder, p_tokens, p_lengths, z=p_z, eps=p_eps, return_attn=True)
            stage_imgs = [to_uint8(x) for x in res["images"]]  # S x [n, s, s, 3]
            tiles = [[stage_imgs[i][k] for i in range(stages)] for k in range(len(p_tokens))]
            grid = save_image_grid(run.path(f"fakes{step:08d}.png"), tiles, row_labels=p_texts,
                                   col_labels=[f"{s}px" for s in sizes])
            attn_path = None
            if res["attn"]:
                beta = res["attn"][-1]  # [n, T, s^2] of the last attention stage
                s = int(math.isqrt(beta.shape[2]))
                words = [[test_ds.vocab[int(t)] for t in p_tokens[k, : int(p_lengths[k])]] for k in range(len(p_tokens))]
                alphas = [beta[k, : int(p_lengths[k])].reshape(-1, s, s) for k in range(len(p_tokens))]
                attn_path = run.path(f"attn{step:08d}.png")
                save_attention_png(attn_path, stage_imgs[-1], words, alphas)
            n = final_n if final else rp_n
            rp = None
            if n >= 2:
                rp = generated_rprecision(net, text_encoder, image_encoder, rp_caps[0][:n], rp_caps[1][:n],
                                          rp_caps[2][:n], runs=rprecision_runs if final else 3, seed=seed)
        finally:
            net.train(was)
        return {"grid": grid, "attention": attn_path, "rprecision": rp, "seconds": time.perf_counter() - t0}

    def checkpoint():
        if not env.is_main:
            return None
        state = {"step": step, "epoch": epoch, "batch": batch_in_epoch, "kind": kind, "model_config": gcfg.to_dict(),
                 "vocab": vocab, "G": G.state_dict(), "Ds": Ds.state_dict(), "opt_G": opt_G.state_dict(),
                 "opt_D": opt_D.state_dict(), "rng": rng_state(), "train_config": train_config}
        if G_ema is not None:
            state["G_ema"] = G_ema.state_dict()
        return run.save_checkpoint(state, step)

    def record_snapshot(snap, extra=None):
        rp = snap["rprecision"]
        rec = {"step": step, "epoch": epoch, "snapshot": os.path.basename(snap["grid"]),
               "gen_rprecision": None if rp is None else {k: rp[k] for k in ("mean", "std", "n_negatives", "n")},
               "snapshot_seconds": snap["seconds"]}
        rec.update(extra or {})
        run.append_stats(rec)
        if rp is not None:
            run.log(f"step {step}: generated-image R-precision {rp['mean']:.3f}±{rp['std']:.3f} "
                    f"({rp['n']} test captions, 1+{rp['n_negatives']}) -> {os.path.basename(snap['grid'])}")

    # -- progress ------------------------------------------------------------------------------------
    console, bar, task = None, None, None
    if progress:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        console = Console(stderr=True)
        bar = Progress(TextColumn(f"[bold]{kind}[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                       TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
        run.console = console
        bar.start()
        task = bar.add_task("train", total=total, completed=min(step, total), info="")

    deadline = None if max_minutes is None else time.perf_counter() + 60.0 * max_minutes
    log_every = log_every or max(1, min(100, total // 20))
    train_seconds, images_seen, stop = 0.0, 0, None
    running = {k: 0.0 for k in LOG_KEYS}
    running_n = 0
    amp = distributed.autocast(device, precision)
    last = None
    try:
        if step == 0 and env.is_main:
            record_snapshot(snapshot())
        while stop is None:
            if step >= total:
                stop = "steps" if steps is not None else "epochs"
                break
            loader = make_loader(train_ds, batch_size, shuffle=True, drop_last=True, seed=seed, epoch=epoch,
                                 start_batch=batch_in_epoch, num_workers=num_workers, rank=env.rank,
                                 world=env.world)
            rng = torch.get_rng_state()
            batches = iter(loader)  # DataLoader draws a base seed from the global RNG; keep the noise stream intact
            torch.set_rng_state(rng)
            G.train()
            Ds.train()
            t0 = time.perf_counter()
            for batch in batches:
                reals = [x.to(device, non_blocking=True) for x in batch["images"]]  # S x [b, 3, s_i, s_i] (b = B/world)
                tokens = batch["tokens"].to(device)  # [b, T]
                B = tokens.shape[0] * env.world  # the global batch
                torch.manual_seed(distributed.seed_for(seed, env.rank, step))  # anything rank-private: f(seed, rank, step)
                gen = torch.Generator().manual_seed(distributed.seed_for(seed, None, step))
                z = distributed.local_rows(torch.randn(B, z_dim, generator=gen)).to(device)  # [b, z_dim] z ~ N(0, I)
                eps = distributed.local_rows(torch.randn(B, cond_dim, generator=gen)).to(device)  # [b, cond_dim]
                aug = None  # [b, 3] shift x, shift y, mirror draws for the DAMSM term (global batch, like z)
                if damsm_augment and use_damsm:
                    aug = distributed.local_rows(torch.rand(B, 3, generator=gen)).to(device)

                def check(vals):
                    if not (math.isfinite(vals["d"]) and math.isfinite(vals["g"])):
                        raise TrainError(f"non-finite loss at step {step + 1} (D {vals['d']}, G {vals['g']}); stopped "
                                         f"without saving: the last checkpoint in {run.path('checkpoints')} is intact. "
                                         f"Try lower --lr-g/--lr-d.")

                vals = train_step(G_fwd, D_fwd, G, Ds, opt_G, opt_D, text_encoder, image_encoder, reals, tokens,
                                  batch["lengths"], batch["class_ids"], z, eps, amp=amp, kl_weight=kl_weight,
                                  damsm_weight=damsm_weight if use_damsm else 0.0, damsm_config=dcfg, damsm_aug=aug,
                                  cc=(cc_lambda1, cc_lambda2) if use_cc else None, r1_gamma=r1_gamma, check=check)
                d_val, g_val = vals["d"], vals["g"]
                if G_ema is not None:
                    G_ema.update(G)

                step += 1
                batch_in_epoch += 1
                images_seen += B
                for k in LOG_KEYS:
                    running[k] += vals[k]
                running_n += 1
                now = time.perf_counter()
                ips = images_seen / max(train_seconds + now - t0, 1e-9)
                last = vals
                if bar is not None:
                    extra = f" damsm {vals['damsm']:.2f}" if use_damsm else (f" cc {vals['cc']:.3f}" if use_cc else "")
                    bar.update(task, completed=min(step, total),
                               info=f"D {d_val:.2f} G {vals['g_adv']:.2f} kl {vals['kl']:.2f}{extra} {ips:.1f} img/s")
                if step % log_every == 0:
                    rec = {"step": step, "epoch": epoch, "images_per_s": ips,
                           "cpu_seconds": time.process_time() - cpu_start, "wall_seconds": time.perf_counter() - t_start,
                           "train": {k: running[k] / running_n for k in LOG_KEYS}}
                    run.append_stats(rec)
                    if bar is None:
                        run.log(f"step {step}/{total} D {rec['train']['d']:.3f} G {rec['train']['g']:.3f} "
                                f"{ips:.1f} img/s")
                    running, running_n = {k: 0.0 for k in LOG_KEYS}, 0
                if step >= total:
                    stop = "steps" if steps is not None else "epochs"
                elif deadline is not None and distributed.any_rank(now >= deadline):  # every rank stops together
                    stop = "time"
                if batch_in_epoch >= per_epoch:
                    epoch, batch_in_epoch = epoch + 1, 0
                if stop is None and step % snapshot_every == 0 and env.is_main:
                    train_seconds += time.perf_counter() - t0
                    record_snapshot(snapshot())
                    t0 = time.perf_counter()
                if stop is None and step % checkpoint_every == 0:
                    checkpoint()
                if stop or batch_in_epoch == 0:
                    break
            train_seconds += time.perf_counter() - t0
        run.log(f"stopping ({stop}) at step {step}, epoch {epoch}")
        checkpoint()
        snap = {"rprecision": None, "grid": None, "attention": None}
        if env.is_main:
            snap = snapshot(final=True)
            record_snapshot(snap, {"final": True, "train_seconds": train_seconds, "last": last,
                                   "images_per_s": images_seen / train_seconds if train_seconds > 0 else None})
    finally:
        if bar is not None:
            bar.stop()
            run.console = None
    export = run.path("generator.pt")
    if env.is_main:
        save_generator(export, sampler(), text_encoder, dcfg, vocab, kind=kind,
                       damsm_run=os.path.abspath(os.fspath(damsm)),
                       extra={"data": os.path.abspath(os.fspath(data)), "step": step, "ema": bool(ema)})
        run.log(f"wrote {export} ({time.perf_counter() - t_start:.0f} s in all, "
                f"{time.process_time() - cpu_start:.0f} s of process CPU time)")
    return {"run_dir": run.dir, "export": export, "step": step, "epoch": epoch, "stop": stop,
            "images_per_s": images_seen / train_seconds if train_seconds > 0 else None, "train_seconds": train_seconds,
            "seconds": time.perf_counter() - t_start, "cpu_seconds": time.process_time() - cpu_start,
            "rprecision": snap["rprecision"], "snapshot": snap["grid"], "attention": snap["attention"],
            "is_main": env.is_main, "world": env.world}
