"""The StackGAN (v1) training loop: Stage-I GAN first, then Stage-II with Stage-I frozen (`t2i train stackgan`).

Per step of stage i (i = 1: steps [0, stage1_end); i = 2: the next stage2_steps), with t the sentence features,
(c_i, mu_i, logvar_i) = F_ca_i(t, eps) and mu_w = mu_i of the batch rolled by one (mismatched), as StackGAN:
    D_i: BCE(D_i(x, mu_i), 1) + (BCE(D_i(x, mu_w), 0) + BCE(D_i(fake, mu_i), 0)) / 2      (mu detached)
    G_i: BCE(D_i(fake, mu_i), 1) + kl_weight * KL(N(mu_i, sigma_i) || N(0, I))
fake = G_1(z, c_1) in stage 1; G_2(G_1(z, c_1), c_2) in stage 2, with G_1 (and F_ca1) frozen in eval mode. When
Stage-II starts, the EMA Stage-I weights (what is exported) are copied into G_1, so Stage-II learns to refine the
Stage-I it will be sampled with. --max-minutes is split between the stages in proportion to their remaining steps;
a Stage-I cut short by time still hands over to Stage-II (stats.jsonl and config record where it ended).

Run folder as the AttnGAN trainer's; checkpoints hold both stages' G, D, optimisers, the EMA and `stage1_end`.

Distributed (torchrun) as the AttnGAN trainer (see training/baselines.py): the global batch is split over the ranks,
BatchNorm is synchronised, mu_w is the global batch's roll and z, eps are drawn for the global batch, so N processes
compute the losses of one. Precision "bf16" autocasts the forward passes on CUDA (losses, KL and EMA in fp32;
ignored on CPU); `compile` wraps G and both Ds in torch.compile.
"""

import os
import time

import torch
import torch.nn.functional as F

from t2icli import losses
from t2icli.models.attngan import GeneratorExportError
from t2icli.models.gancls import init_dcgan, save_baseline
from t2icli.models.stackgan import StackGAN, StackGANConfig, build_discriminators
from t2icli.training import distributed
from t2icli.training.attngan import TrainError
from t2icli.training.baselines import (Loop, check_positive, compiled, fixed_noise, global_noise, mismatched,
                                       quick_rprecision, setup, snapshot_images, start, step_stats, sync_step)
from t2icli.training.ema import EMA
from t2icli.training.run import check_checkpoint, load_checkpoint, load_ema, rng_state, set_rng_state

__all__ = ["train", "stage_step", "PRESETS", "TrainError"]

KIND = "stackgan"
LOG_KEYS = ("d", "g", "g_adv", "kl")

PRESETS = {
    "toybirds-cpu": {
        "description": "Stage-I 16 px then Stage-II 64 px on toybirds in under 8 minutes on 2 CPU cores",
        "gf_dim": 16, "df_dim": 16, "batch_size": 32, "stage1_steps": 2500, "stage2_steps": 2500, "lr_g": 2e-4,
        "lr_d": 2e-4, "z_dim": 64, "cond_dim": 64, "res_blocks": 2, "ema_beta": 0.99, "snapshot_every": 250,
        "max_minutes": 7.0,
        "prompts": ["a red bird with blue wings", "a yellow bird with black wings", "a blue bird with a red crown",
                    "a green bird with white wings", "a white bird with a purple crown", "a black bird with orange wings"],
    },
}


def stage_step(stage, G, D, opt_G, opt_D, real, t, z, eps, kl_weight=2.0, check=None, *, G_fwd=None, D_fwd=None,
               amp=None):
    """One step of `stage` (1 or 2) on this rank's rows of the global batch: D_stage step, then the stage's
    generator step. Gradients are averaged over ranks before each optimiser step.

    G: the StackGAN (Stage-I frozen in stage 2: requires_grad off, eval mode); D: that stage's discriminator;
    real [b, 3, s, s] at the stage's side; t [b, text_dim]; z [b, z_dim]; eps [b, cond_dim].
    G_fwd / D_fwd: what to call for G / D (their torch.compile wrappers; default the modules); amp: autocast
    context of the forward passes (None = fp32).
    check(vals) runs with D's loss before D's backward and with all losses before G's.
    Returns {"d", "g", "g_adv", "kl"}: floats averaged over ranks.
    """
    G_fwd = G if G_fwd is None else G_fwd
    D_fwd = D if D_fwd is None else D_fwd
    amp = amp if amp is not None else distributed.autocast("cpu", "fp32")
    with amp:
        out = G_fwd(z, t, eps=eps, stages=stage)  # stage 2: x_1 from the frozen Stage-I (no gradient), then x_2
    fake, mu, logvar = out["images"][-1], out["mu"], out["logvar"]
    cond = mu.detach().float()  # D is conditioned on the CA mean, as StackGAN (no gradient into F_ca through D)
    D.requires_grad_(True)
    with amp:
        code_real, code_fake = D_fwd(real), D_fwd(fake.detach())  # [b, C, 4, 4]
        d_loss = losses.bce(D_fwd.logits(code_real, cond), 1.0) + 0.5 * (
            losses.bce(D_fwd.logits(code_real, mismatched(cond)), 0.0) + losses.bce(D_fwd.logits(code_fake, cond), 0.0))
    if check is not None:
        check(step_stats({"d": d_loss}))
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    sync_step(opt_D)
    D.requires_grad_(False)  # G against the updated D
    with amp:
        g_adv = losses.bce(D_fwd.logits(D_fwd(fake), cond), 1.0)
    kl = losses.kl_loss(mu, logvar)
    g_loss = g_adv + kl_weight * kl
    vals = step_stats({"d": d_loss, "g": g_loss, "g_adv": g_adv, "kl": kl})
    if check is not None:
        check(vals)
    opt_G.zero_grad(set_to_none=True)
    g_loss.backward()
    sync_step(opt_G)
    D.requires_grad_(True)
    return vals


class _Stage1View(torch.nn.Module):
    """A StackGAN seen as a one-stage generator of Stage-I images upsampled to the final side (R-precision of
    Stage-I while Stage-II is untrained)."""

    def __init__(self, G):
        super().__init__()
        self.G, self.config = G, G.config

    def forward(self, z, e_bar, e=None, mask=None, eps=None, return_attn=False):
        x1 = self.G(z, e_bar, eps=eps, stages=1)["images"][0]
        S = self.config.image_size
        return {"images": [F.interpolate(x1, size=(S, S), mode="bilinear", align_corners=False)]}


def train(data, damsm, out, *, stage1_steps=10000, stage2_steps=10000, batch_size=64, lr_g=2e-4, lr_d=2e-4,
          gf_dim=128, df_dim=64, z_dim=100, cond_dim=128, res_blocks=4, kl_weight=2.0, text_embeddings=None, ema=True,
          ema_beta=0.999, device="cpu", precision="fp32", compile=False, seed=0, resume=None, snapshot_every=1000,
          checkpoint_every=None, max_minutes=None, n_prompts=8, snapshot_rprecision=300, final_rprecision=None,
          rprecision_runs=10, keep_checkpoints=3, progress=True, num_workers=0, log_every=None, preset=None,
          prompts=None):
    """Train StackGAN v1 into run folder `out`: stage1_steps of Stage-I (S/4 px), then stage2_steps of Stage-II
    (S px, the data's image size) with Stage-I frozen. Text features as training/gancls.train.

    max_minutes bounds this invocation (split over the stages by remaining steps). Writes RUN/generator.pt (both
    stages; EMA weights when ema). batch_size is the global batch (split over the processes of a torchrun job);
    precision "fp32" | "bf16" (autocast on CUDA); compile: torch.compile G and the Ds.
    Returns the dict of training/attngan.train plus "stage1_end".
    Raises TrainError (bad option, resume, NaN), DataError.
    """
    return start(_train, device, batch_size, precision, dict(locals()))


def _train(env, data, damsm, out, *, stage1_steps, stage2_steps, batch_size, lr_g, lr_d, gf_dim, df_dim, z_dim,
           cond_dim, res_blocks, kl_weight, text_embeddings, ema, ema_beta, device, precision, compile, seed, resume,
           snapshot_every, checkpoint_every, max_minutes, n_prompts, snapshot_rprecision, final_rprecision,
           rprecision_runs, keep_checkpoints, progress, num_workers, log_every, preset, prompts):
    from t2icli.data import load_meta

    t_start = time.perf_counter()
    check_positive(stage1_steps=stage1_steps, stage2_steps=stage2_steps, batch_size=batch_size, lr_g=lr_g, lr_d=lr_d,
                   gf_dim=gf_dim, df_dim=df_dim, z_dim=z_dim, cond_dim=cond_dim, snapshot_every=snapshot_every,
                   checkpoint_every=checkpoint_every, max_minutes=max_minutes)
    if batch_size < 2:
        raise TrainError(f"--batch-size {batch_size}: needs >= 2 (the mismatched captions are the batch's)")
    if kl_weight < 0 or res_blocks < 0:
        raise TrainError("--kl-weight and --res-blocks must be >= 0")
    if not 0 <= ema_beta < 1:
        raise TrainError(f"--ema-beta {ema_beta}: must be in [0, 1)")
    if text_embeddings is not None and prompts:
        raise TrainError("--prompt needs the DAMSM text encoder; with --text-embeddings the snapshots show the "
                         "first training images' captions")
    meta = load_meta(data)
    image_size = int(meta["image_size"])
    try:
        StackGANConfig(image_size=image_size).validate()
    except GeneratorExportError as exc:
        raise TrainError(f"{exc} (--data {data}; Stage-II makes the data's size, Stage-I a quarter of it)") from None
    sizes = StackGANConfig(image_size=image_size).sizes

    pending = []
    ctx = setup(data, damsm, device, seed, sizes, text_embeddings, log=pending.append)
    if len(ctx.train_ds) < batch_size:
        raise TrainError(f"--batch-size {batch_size} is larger than the training split ({len(ctx.train_ds)} images)")
    cfg = StackGANConfig(image_size=image_size, gf_dim=gf_dim, df_dim=df_dim, z_dim=z_dim, cond_dim=cond_dim,
                         text_dim=ctx.text_dim, res_blocks=res_blocks)
    if final_rprecision is None:
        final_rprecision = len(ctx.test_ds)
    train_config = {
        "kind": KIND, "preset": preset, "data": os.path.abspath(os.fspath(data)),
        "damsm": os.path.abspath(os.fspath(damsm)), "stage1_steps": stage1_steps, "stage2_steps": stage2_steps,
        "batch_size": batch_size, "lr_g": lr_g, "lr_d": lr_d, "kl_weight": kl_weight,
        "text_embeddings": None if text_embeddings is None else os.path.abspath(os.fspath(text_embeddings)),
        "text_source": ctx.text_source, "ema": bool(ema), "ema_beta": ema_beta, "device": str(device), "seed": seed,
        "precision": precision, "compile": bool(compile), "world_size": env.world,
        "snapshot_every": snapshot_every, "checkpoint_every": checkpoint_every, "max_minutes": max_minutes,
        "prompts": list(prompts or []), "n_prompts": n_prompts, "model": cfg.to_dict(), "sizes": sizes,
        "damsm_config": ctx.damsm_config.to_dict(),
        "dataset": {k: meta.get(k) for k in ("source", "image_size", "word_limit", "vocab_size", "n_classes")},
    }
    run = distributed.open_run(out, train_config, resume=resume, keep=keep_checkpoints, notes=pending)

    # -- models ------------------------------------------------------------------------------------
    torch.manual_seed(seed)
    G = distributed.sync_batchnorm(init_dcgan(StackGAN(cfg))).to(device)  # global-batch BN under torchrun
    Ds = distributed.sync_batchnorm(init_dcgan(build_discriminators(cfg))).to(device)
    stage_params = [list(G.ca1.parameters()) + list(G.g1.parameters()),
                    list(G.ca2.parameters()) + list(G.g2.parameters())]
    opt_G = [torch.optim.Adam(p, lr=lr_g, betas=(0.5, 0.999)) for p in stage_params]
    opt_D = [torch.optim.Adam(D.parameters(), lr=lr_d, betas=(0.5, 0.999)) for D in Ds]
    G_ema = EMA(G, ema_beta) if ema else None
    stage1_end = None  # the step where Stage-I stopped (None while it trains)
    total_guess = stage1_steps + stage2_steps
    loop = Loop(run, KIND, ctx, batch_size, seed, num_workers, snapshot_every, checkpoint_every, log_every,
                progress, LOG_KEYS, total_guess)
    if run.resume_from is not None:
        ckpt = load_checkpoint(run.resume_from)
        check_checkpoint(ckpt, run.resume_from, KIND, cfg.to_dict(), ctx.vocab, data)
        G.load_state_dict(ckpt["G"])
        Ds.load_state_dict(ckpt["Ds"])
        for opt, state in zip(opt_G + opt_D, ckpt["opt_G"] + ckpt["opt_D"]):
            opt.load_state_dict(state)
        load_ema(G_ema, ckpt, run.resume_from)
        set_rng_state(ckpt["rng"])
        loop.load_counters(ckpt)
        stage1_end = ckpt.get("stage1_end")
        run.log(f"resumed at step {loop.step} (stage {1 if stage1_end is None else 2}, epoch {loop.epoch})")
    n_g = [sum(p.numel() for p in ps) for ps in stage_params]
    run.log(f"{KIND}: Stage-I {sizes[0]} px ({n_g[0] / 1e6:.2f}M) then Stage-II {sizes[1]} px ({n_g[1] / 1e6:.2f}M), "
            f"D {sum(p.numel() for p in Ds.parameters()) / 1e6:.2f}M, text {ctx.text_source} ({cfg.text_dim}-d), "
            f"{len(ctx.train_ds)} train images, batch {batch_size}, {stage1_steps} + {stage2_steps} steps, "
            f"device {device}" + env.describe(batch_size))
    G_fwd, D_fwd = compiled(G, compile), [compiled(D, compile) for D in Ds]  # what the steps call
    amp = distributed.autocast(device, precision)

    p_t, p_texts = ctx.prompts(n_prompts, prompts)
    p_z, p_eps = fixed_noise(seed, len(p_texts), z_dim, cond_dim)
    rp_n = min(int(snapshot_rprecision or 0), len(ctx.test_ds))
    final_n = min(int(final_rprecision), len(ctx.test_ds))

    def sampler():
        return G_ema.shadow if G_ema is not None else G

    def record(final=False, extra=None):
        from t2icli.viz import save_image_grid

        t0 = time.perf_counter()
        imgs = snapshot_images(sampler(), p_t, p_z.to(device), p_eps.to(device))  # 2 x [n, s_i, s_i, 3]
        grid = save_image_grid(run.path(f"fakes{loop.step:08d}.png"),
                               [[imgs[0][k], imgs[1][k]] for k in range(len(p_texts))], row_labels=p_texts,
                               col_labels=[f"I {sizes[0]}px", f"II {sizes[1]}px"])
        net = sampler() if stage1_end is not None else _Stage1View(sampler())
        rp = quick_rprecision(net, ctx, final_n if final else rp_n, rprecision_runs if final else 3, seed)
        loop.record_snapshot(grid, rp, time.perf_counter() - t0,
                             dict(extra or {}, stage=1 if stage1_end is None else 2))
        return grid, rp

    def checkpoint():
        if not env.is_main:
            return None
        state = {"kind": KIND, "model_config": cfg.to_dict(), "vocab": ctx.vocab, "text_source": ctx.text_source,
                 "G": G.state_dict(), "Ds": Ds.state_dict(), "opt_G": [o.state_dict() for o in opt_G],
                 "opt_D": [o.state_dict() for o in opt_D], "stage1_end": stage1_end, "rng": rng_state(),
                 "train_config": train_config, **loop.counters()}
        if G_ema is not None:
            state["G_ema"] = G_ema.state_dict()
        return run.save_checkpoint(state, loop.step)

    def step_fn(stage):
        def fn(batch, gen):
            # [b, z_dim] noise and [b, cond_dim] CA noise: this rank's rows of the global batch's
            z, eps = (x.to(device) for x in global_noise(gen, len(batch["tokens"]), z_dim, cond_dim))
            vals = stage_step(stage, G, Ds[stage - 1], opt_G[stage - 1], opt_D[stage - 1],
                              batch["images"][stage - 1], ctx.condition(batch), z, eps, kl_weight, check=loop.check,
                              G_fwd=G_fwd, D_fwd=D_fwd[stage - 1], amp=amp)
            if G_ema is not None:
                G_ema.update(G)
            return vals
        return fn

    def enter_stage2():
        """Freeze Stage-I (eval mode, no gradients), first taking the EMA weights that will be exported."""
        if G_ema is not None:
            G.ca1.load_state_dict(G_ema.shadow.ca1.state_dict())
            G.g1.load_state_dict(G_ema.shadow.g1.state_dict())
        G.ca1.eval().requires_grad_(False)
        G.g1.eval().requires_grad_(False)

    now = time.perf_counter()
    budget = None if max_minutes is None else 60.0 * max_minutes
    G.train()
    Ds.train()
    loop.start_bar(total_guess if stage1_end is None else stage1_end + stage2_steps)
    try:
        if loop.step == 0 and env.is_main:
            record()
        stop = "steps"
        if stage1_end is None:
            rem1, rem2 = max(stage1_steps - loop.step, 0), stage2_steps
            deadline1 = None if budget is None else now + budget * rem1 / max(rem1 + rem2, 1)
            stop = loop.run_until(stage1_steps, step_fn(1), deadline1, snapshot=record, checkpoint=checkpoint,
                                  label="I ")
            stage1_end = loop.step
            run.log(f"Stage-I ended ({stop}) at step {stage1_end}; Stage-II trains {stage2_steps} steps with it frozen")
            run.append_stats({"step": loop.step, "stage1_end": stage1_end, "stage1_stop": stop})
            enter_stage2()
            if loop.bar is not None:
                loop.bar.update(loop.task, total=stage1_end + stage2_steps)
        else:
            enter_stage2()
        total = stage1_end + stage2_steps
        stop = loop.run_until(total, step_fn(2), None if budget is None else now + budget, snapshot=record,
                              checkpoint=checkpoint, label="II ")
        run.log(f"stopping ({stop}) at step {loop.step} (Stage-II step {loop.step - stage1_end}), epoch {loop.epoch}")
        checkpoint()
        grid = rp = None
        if env.is_main:
            grid, rp = record(final=True, extra=loop.final_extra())
    finally:
        loop.stop_bar()
    export = run.path("generator.pt")
    if env.is_main:
        save_baseline(export, KIND, sampler(), ctx.text_encoder, ctx.damsm_config, ctx.vocab,
                      damsm_run=os.path.abspath(os.fspath(damsm)), text_source=ctx.text_source,
                      extra={"data": os.path.abspath(os.fspath(data)), "step": loop.step, "ema": bool(ema),
                             "stage1_steps_done": stage1_end, "stage2_steps_done": loop.step - stage1_end})
        run.log(f"wrote {export} ({time.perf_counter() - t_start:.0f} s in all)")
    return dict(loop.result(stop, export, rp, grid), stage1_end=stage1_end)
