"""The GAN-INT-CLS training loop (Reed et al. 2016, Algorithm 1 + manifold interpolation): `t2i train gancls`.

Per step, with t the sentence features of the batch's captions and t_w = the batch rolled by one (mismatched):
    D:  BCE(D(x, t), 1) + (BCE(D(x, t_w), 0) + BCE(D(G(z, t), t), 0)) / 2       matching-aware (CLS)
    G:  BCE(D(G(z, t), t), 1) + BCE(D(G(z', t_int), t_int), 1)                   t_int = beta t + (1 - beta) t_w (INT)
    S:  || S(G(z, t)) - z ||^2 on the step's (detached) fakes                    style encoder, --train-style-encoder
Text features: the frozen DAMSM text encoder's e_bar, or StackGAN's char-CNN-RNN embeddings (--text-embeddings).

Run folder as the AttnGAN trainer's (training/run.py): config.json, log.txt, stats.jsonl, checkpoints/ (G, D, S,
optimisers, EMA, step, RNG), fakes<step>.png at fixed noise and prompts, and RUN/generator.pt (models/gancls.py).

Distributed (torchrun) as the AttnGAN trainer (see training/baselines.py): the global batch is split over the ranks,
BatchNorm in G, D and S is synchronised, t_w is the global batch's roll and z, z' are drawn for the global batch, so
N processes compute the losses of one. Precision "bf16" autocasts the forward passes on CUDA (losses and EMA in fp32;
ignored on CPU); `compile` wraps G and D in torch.compile.
"""

import os
import time

import torch
import torch.nn.functional as F

from t2icli import losses
from t2icli.models.attngan import GeneratorExportError
from t2icli.models.gancls import (CondDiscriminator, GanClsConfig, GanClsGenerator, StyleEncoder, init_dcgan,
                                  save_baseline)
from t2icli.training import distributed
from t2icli.training.attngan import TrainError
from t2icli.training.baselines import (Loop, check_positive, compiled, fixed_noise, global_noise, mismatched,
                                       quick_rprecision, setup, snapshot_images, start, step_stats, sync_step)
from t2icli.training.ema import EMA
from t2icli.training.run import check_checkpoint, load_checkpoint, load_ema, rng_state, set_rng_state

__all__ = ["train", "train_step", "PRESETS", "TrainError"]

KIND = "gancls"
LOG_KEYS = ("d", "g", "g_adv", "g_int", "style")

# Named configurations; a flag the user gives explicitly overrides the preset's value (see cli/train_baselines.py).
PRESETS = {
    "toybirds-cpu": {
        "description": "DCGAN at 64 px with ngf = ndf = 16 on toybirds in under 8 minutes on 2 CPU cores",
        "gf_dim": 16, "df_dim": 16, "batch_size": 32, "steps": 3000, "lr_g": 2e-4, "lr_d": 2e-4, "z_dim": 64,
        "ema_beta": 0.99, "snapshot_every": 500, "max_minutes": 7.0,
        "prompts": ["a red bird with blue wings", "a yellow bird with black wings", "a blue bird with a red crown",
                    "a green bird with white wings", "a white bird with a purple crown", "a black bird with orange wings"],
    },
}


def train_step(G, D, S, opt_G, opt_D, opt_S, reals, t, z, z_int, interp_beta=0.5, interp=True, check=None, *,
               G_fwd=None, D_fwd=None, amp=None):
    """One GAN-INT-CLS step on this rank's rows of the global batch: D step, then G step, then (S given) a
    style-encoder step. Gradients are averaged over ranks before each optimiser step.

    reals [b, 3, s, s]; t [b, text_dim]; z, z_int [b, z_dim] (z_int: the interpolated captions' noise).
    G_fwd / D_fwd: what to call for G / D (their torch.compile wrappers; default the modules); amp: autocast context
    of the forward passes (None = fp32). check(vals) is called with D's loss before D's backward and with all
    losses before G's. Returns {"d", "g", "g_adv", "g_int", "style"}: floats averaged over ranks.
    """
    G_fwd = G if G_fwd is None else G_fwd
    D_fwd = D if D_fwd is None else D_fwd
    amp = amp if amp is not None else distributed.autocast("cpu", "fp32")
    t_w = mismatched(t)  # [b, text_dim] row k: caption of image k+1 (of the global batch)
    with amp:
        fake = G_fwd(z, t)["images"][0]  # [b, 3, s, s]
    # (1) D: (real, right) -> 1, (real, wrong) -> 0, (fake, right) -> 0.
    D.requires_grad_(True)
    with amp:
        code_real, code_fake = D_fwd(reals), D_fwd(fake.detach())  # [b, C, 4, 4] each
        d_loss = losses.bce(D_fwd.logits(code_real, t), 1.0) + 0.5 * (
            losses.bce(D_fwd.logits(code_real, t_w), 0.0) + losses.bce(D_fwd.logits(code_fake, t), 0.0))
    if check is not None:
        check(step_stats({"d": d_loss}))
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    sync_step(opt_D)
    # (2) G against the updated D: fool it on the right text and on interpolated text (D is not trained on
    # interpolations: no real image matches them).
    D.requires_grad_(False)
    g_int = torch.zeros((), device=reals.device)
    with amp:
        g_adv = losses.bce(D_fwd.logits(D_fwd(fake), t), 1.0)
        if interp:
            t_int = interp_beta * t + (1.0 - interp_beta) * t_w  # [b, text_dim]
            g_int = losses.bce(D_fwd.logits(D_fwd(G_fwd(z_int, t_int)["images"][0]), t_int), 1.0)
        s_out = S(fake.detach()) if S is not None else None  # [b, z_dim]
    g_loss = g_adv + g_int
    s_loss = F.mse_loss(s_out.float(), z) if S is not None else torch.zeros((), device=reals.device)
    vals = step_stats({"d": d_loss, "g": g_loss, "g_adv": g_adv, "g_int": g_int, "style": s_loss})
    if check is not None:
        check(vals)
    opt_G.zero_grad(set_to_none=True)
    g_loss.backward()
    sync_step(opt_G)
    if S is not None:
        opt_S.zero_grad(set_to_none=True)
        s_loss.backward()
        sync_step(opt_S)
    D.requires_grad_(True)
    return vals


def train(data, damsm, out, *, steps=None, epochs=None, batch_size=64, lr_g=2e-4, lr_d=2e-4, lr_s=2e-4, gf_dim=64,
          df_dim=64, z_dim=100, proj_dim=128, interp=True, interp_beta=0.5, train_style_encoder=False,
          text_embeddings=None, ema=True, ema_beta=0.999, device="cpu", precision="fp32", compile=False, seed=0,
          resume=None, snapshot_every=1000, checkpoint_every=None, max_minutes=None, n_prompts=8,
          snapshot_rprecision=300, final_rprecision=None, rprecision_runs=10, keep_checkpoints=3, progress=True,
          num_workers=0, log_every=None, preset=None, prompts=None):
    """Train GAN-INT-CLS into run folder `out` on prepared dataset `data`, conditioned on the DAMSM run `damsm`'s
    sentence features (or, with text_embeddings, on StackGAN's char-CNN-RNN embeddings of the training split).

    Stops after `steps` optimiser steps in total, `epochs` epochs (default 600 if neither) or `max_minutes` of this
    invocation; then checkpoints, measures the generated-image R-precision on `final_rprecision` test captions
    (DAMSM conditioning only) and writes RUN/generator.pt (the EMA generator when ema, + the style encoder).
    batch_size is the global batch (split over the processes of a torchrun job); precision "fp32" | "bf16" (autocast
    on CUDA); compile: torch.compile G and D; keep_checkpoints: how many checkpoints to keep.
    Returns the dict of training/attngan.train. Raises TrainError (bad option, resume, NaN), DataError.
    """
    return start(_train, device, batch_size, precision, dict(locals()))


def _train(env, data, damsm, out, *, steps, epochs, batch_size, lr_g, lr_d, lr_s, gf_dim, df_dim, z_dim, proj_dim,
           interp, interp_beta, train_style_encoder, text_embeddings, ema, ema_beta, device, precision, compile, seed,
           resume, snapshot_every, checkpoint_every, max_minutes, n_prompts, snapshot_rprecision, final_rprecision,
           rprecision_runs, keep_checkpoints, progress, num_workers, log_every, preset, prompts):
    from t2icli.data import load_meta

    t_start = time.perf_counter()
    if steps is not None and epochs is not None:
        raise TrainError("give --steps or --epochs, not both")
    check_positive(steps=steps, epochs=epochs, batch_size=batch_size, lr_g=lr_g, lr_d=lr_d, lr_s=lr_s, gf_dim=gf_dim,
                   df_dim=df_dim, z_dim=z_dim, proj_dim=proj_dim, snapshot_every=snapshot_every,
                   checkpoint_every=checkpoint_every, max_minutes=max_minutes)
    if batch_size < 2:
        raise TrainError(f"--batch-size {batch_size}: needs >= 2 (the mismatched captions are the batch's)")
    if not 0.0 <= interp_beta <= 1.0:
        raise TrainError(f"--interp-beta {interp_beta}: must be in [0, 1]")
    if not 0 <= ema_beta < 1:
        raise TrainError(f"--ema-beta {ema_beta}: must be in [0, 1)")
    if text_embeddings is not None and prompts:
        raise TrainError("--prompt needs the DAMSM text encoder; with --text-embeddings the snapshots show the "
                         "first training images' captions")
    meta = load_meta(data)
    try:
        GanClsConfig(image_size=int(meta["image_size"])).validate()
    except GeneratorExportError as exc:
        raise TrainError(f"{exc} (--data {data})") from None

    pending = []  # log lines from set-up, written once the run folder exists
    ctx = setup(data, damsm, device, seed, [int(meta["image_size"])], text_embeddings, log=pending.append)
    if len(ctx.train_ds) < batch_size:
        raise TrainError(f"--batch-size {batch_size} is larger than the training split ({len(ctx.train_ds)} images)")
    cfg = GanClsConfig(image_size=ctx.image_size, gf_dim=gf_dim, df_dim=df_dim, z_dim=z_dim, text_dim=ctx.text_dim,
                       proj_dim=proj_dim)
    per_epoch = len(ctx.train_ds) // batch_size
    if steps is None and epochs is None:
        epochs = 600
    total = int(steps) if steps is not None else int(epochs) * per_epoch
    if final_rprecision is None:
        final_rprecision = len(ctx.test_ds)
    train_config = {
        "kind": KIND, "preset": preset, "data": os.path.abspath(os.fspath(data)),
        "damsm": os.path.abspath(os.fspath(damsm)), "steps": steps, "epochs": epochs, "total_steps": total,
        "batch_size": batch_size, "lr_g": lr_g, "lr_d": lr_d, "lr_s": lr_s, "interp": bool(interp),
        "interp_beta": interp_beta, "train_style_encoder": bool(train_style_encoder),
        "text_embeddings": None if text_embeddings is None else os.path.abspath(os.fspath(text_embeddings)),
        "text_source": ctx.text_source, "ema": bool(ema), "ema_beta": ema_beta, "device": str(device), "seed": seed,
        "precision": precision, "compile": bool(compile), "world_size": env.world,
        "snapshot_every": snapshot_every, "checkpoint_every": checkpoint_every, "max_minutes": max_minutes,
        "prompts": list(prompts or []), "n_prompts": n_prompts, "model": cfg.to_dict(), "sizes": cfg.sizes,
        "damsm_config": ctx.damsm_config.to_dict(),
        "dataset": {k: meta.get(k) for k in ("source", "image_size", "word_limit", "vocab_size", "n_classes")},
    }
    run = distributed.open_run(out, train_config, resume=resume, keep=keep_checkpoints, notes=pending)

    # -- models ------------------------------------------------------------------------------------
    torch.manual_seed(seed)
    sync_bn = distributed.sync_batchnorm  # global-batch BN under torchrun (identity in one process)
    G = sync_bn(init_dcgan(GanClsGenerator(cfg))).to(device)
    D = sync_bn(init_dcgan(CondDiscriminator(cfg.image_size, df_dim, cfg.text_dim, proj_dim, joint_kernel=1)))
    D = D.to(device)
    S = sync_bn(init_dcgan(StyleEncoder(cfg.image_size, df_dim, z_dim))).to(device) if train_style_encoder else None
    opt_G = torch.optim.Adam(G.parameters(), lr=lr_g, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=lr_d, betas=(0.5, 0.999))
    opt_S = torch.optim.Adam(S.parameters(), lr=lr_s, betas=(0.5, 0.999)) if S is not None else None
    G_ema = EMA(G, ema_beta) if ema else None
    loop = Loop(run, KIND, ctx, batch_size, seed, num_workers, snapshot_every, checkpoint_every, log_every,
                progress, LOG_KEYS, total)
    if run.resume_from is not None:
        ckpt = load_checkpoint(run.resume_from)
        check_checkpoint(ckpt, run.resume_from, KIND, cfg.to_dict(), ctx.vocab, data)
        if (ckpt.get("S") is not None) != (S is not None):
            raise TrainError(f"--resume {run.resume_from}: the checkpoint was trained "
                             f"{'with' if ckpt.get('S') is not None else 'without'} --train-style-encoder")
        G.load_state_dict(ckpt["G"])
        D.load_state_dict(ckpt["D"])
        opt_G.load_state_dict(ckpt["opt_G"])
        opt_D.load_state_dict(ckpt["opt_D"])
        if S is not None:
            S.load_state_dict(ckpt["S"])
            opt_S.load_state_dict(ckpt["opt_S"])
        load_ema(G_ema, ckpt, run.resume_from)
        set_rng_state(ckpt["rng"])
        loop.load_counters(ckpt)
        run.log(f"resumed at step {loop.step} (epoch {loop.epoch}, batch {loop.batch_in_epoch})")
    n_g = sum(p.numel() for p in G.parameters())
    n_d = sum(p.numel() for p in D.parameters())
    run.log(f"{KIND}: {cfg.image_size} px, G {n_g / 1e6:.2f}M / D {n_d / 1e6:.2f}M parameters"
            + (", style encoder" if S is not None else "") + f", text {ctx.text_source} ({cfg.text_dim}-d), "
            f"{len(ctx.train_ds)} train images, batch {batch_size}, {total} steps, device {device}"
            + env.describe(batch_size))
    G_fwd, D_fwd = compiled(G, compile), compiled(D, compile)  # what the step calls; G, D give parameters/states
    amp = distributed.autocast(device, precision)

    p_t, p_texts = ctx.prompts(n_prompts, prompts)
    p_z, _ = fixed_noise(seed, len(p_texts), z_dim, 0)
    rp_n = min(int(snapshot_rprecision or 0), len(ctx.test_ds))
    final_n = min(int(final_rprecision), len(ctx.test_ds))

    def sampler():
        return G_ema.shadow if G_ema is not None else G

    def snapshot(final=False):
        from t2icli.viz import save_image_grid

        t0 = time.perf_counter()
        imgs = snapshot_images(sampler(), p_t, p_z.to(device), None)[0]  # [n, s, s, 3]
        grid = save_image_grid(run.path(f"fakes{loop.step:08d}.png"), [[im] for im in imgs], row_labels=p_texts,
                               col_labels=[f"{cfg.image_size}px"])
        rp = quick_rprecision(sampler(), ctx, final_n if final else rp_n, rprecision_runs if final else 3, seed)
        return grid, rp, time.perf_counter() - t0

    def record(final=False, extra=None):
        grid, rp, secs = snapshot(final)
        loop.record_snapshot(grid, rp, secs, extra)
        return grid, rp

    def checkpoint():
        if not env.is_main:
            return None
        state = {"kind": KIND, "model_config": cfg.to_dict(), "vocab": ctx.vocab, "text_source": ctx.text_source,
                 "G": G.state_dict(), "D": D.state_dict(), "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(),
                 "S": None if S is None else S.state_dict(), "opt_S": None if S is None else opt_S.state_dict(),
                 "rng": rng_state(), "train_config": train_config, **loop.counters()}
        if G_ema is not None:
            state["G_ema"] = G_ema.state_dict()
        return run.save_checkpoint(state, loop.step)

    def step_fn(batch, gen):
        # [b, z_dim] each: z ~ N(0, I) and the interpolated captions' noise, this rank's rows of the global batch's
        z, z_int = (x.to(device) for x in global_noise(gen, len(batch["tokens"]), z_dim, z_dim))
        vals = train_step(G, D, S, opt_G, opt_D, opt_S, batch["images"][0], ctx.condition(batch), z, z_int,
                          interp_beta, interp, check=loop.check, G_fwd=G_fwd, D_fwd=D_fwd, amp=amp)
        if G_ema is not None:
            G_ema.update(G)
        return vals

    deadline = None if max_minutes is None else time.perf_counter() + 60.0 * max_minutes
    G.train()
    D.train()
    if S is not None:
        S.train()
    loop.start_bar(total)
    try:
        if loop.step == 0 and env.is_main:
            record()
        stop = loop.run_until(total, step_fn, deadline, snapshot=record, checkpoint=checkpoint)
        if stop == "steps" and steps is None:
            stop = "epochs"
        run.log(f"stopping ({stop}) at step {loop.step}, epoch {loop.epoch}")
        checkpoint()
        grid = rp = None
        if env.is_main:
            grid, rp = record(final=True, extra=loop.final_extra())
    finally:
        loop.stop_bar()
    export = run.path("generator.pt")
    if env.is_main:
        save_baseline(export, KIND, sampler(), ctx.text_encoder, ctx.damsm_config, ctx.vocab,
                      damsm_run=os.path.abspath(os.fspath(damsm)), style_encoder=S, text_source=ctx.text_source,
                      extra={"data": os.path.abspath(os.fspath(data)), "step": loop.step, "ema": bool(ema)})
        run.log(f"wrote {export} ({time.perf_counter() - t_start:.0f} s in all)")
    return loop.result(stop, export, rp, grid)
