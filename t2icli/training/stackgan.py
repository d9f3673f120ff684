"""`t2i train stackgan`: StackGAN (v1), Stage-I GAN first, then Stage-II with Stage-I frozen, on the shared loop.

Per step of stage i (i = 1: steps [0, stage1_end); i = 2: the next stage2_steps), with t the sentence features,
(c_i, mu_i, logvar_i) = F_ca_i(t, eps) and mu_w = mu_i of the batch rolled by one (mismatched), as StackGAN:
    D_i: BCE(D_i(x, mu_i), 1) + (BCE(D_i(x, mu_w), 0) + BCE(D_i(fake, mu_i), 0)) / 2      (mu detached)
    G_i: BCE(D_i(fake, mu_i), 1) + kl_weight * KL(N(mu_i, sigma_i) || N(0, I))
fake = G_1(z, c_1) in stage 1; G_2(G_1(z, c_1), c_2) in stage 2, with G_1 (and F_ca1) frozen in eval mode. When
Stage-II starts, the EMA Stage-I weights (what is exported) are copied into G_1, so Stage-II learns to refine the
Stage-I it will be sampled with. --max-minutes is split between the stages in proportion to their remaining steps;
a Stage-I cut short by time still hands over to Stage-II (stats.jsonl and the checkpoints record where it ended).
StackGAN-Pytorch's own choices are flags (--preset cub-paper | coco-paper sets them): --stage2-uncond (Stage-II's D
also scores with its unconditional logit, code/miscc/utils.py:22-78: D = (cond real + uncond real) / 2 + (cond fake +
wrong + uncond fake) / 3, G + its uncond term), --stage1-epochs / --stage2-epochs (each stage's length in epochs) and
--lr-decay-epochs N (both rates halved every N epochs of a stage, code/trainer.py:134-154).

Run folder, determinism, resume: training/loop.py; checkpoints hold both stages' G, D, optimisers, the EMA and
`stage1_end`. Distributed (torchrun): the global batch is split over the ranks, BatchNorm is synchronised, mu_w is
the global batch's roll and z, eps are drawn for the global batch, so N processes compute the losses of one.
Precision "bf16" autocasts the forward passes on CUDA and on a CPU with native bf16 (distributed.cpu_bf16; ignored,
logged, on other CPUs); losses, KL and EMA stay fp32. `compile` wraps G and both Ds in torch.compile.
"""

import time

import torch
import torch.nn.functional as F

from t2icli import losses
from t2icli.training import distributed
from t2icli.training.config import StackGANTrainConfig
from t2icli.training.ema import EMA
from t2icli.training.gan import GANTrainer, compiled, global_noise, mismatched, step_stats, sync_step
from t2icli.training.loop import fit
from t2icli.training.run import RunError
from t2icli.training.state import StateList, TrainState, set_lr

__all__ = ["train", "stage_step", "StackGANTrainer", "lr_factor", "model_config", "network_counts"]


def stage_step(stage, G, D, opt_G, opt_D, real, t, z, eps, kl_weight=2.0, check=None, *, G_fwd=None, D_fwd=None,
               amp=None, uncond=False):
    """One step of `stage` (1 or 2) on this rank's rows of the global batch: D_stage step, then the stage's
    generator step. Gradients are averaged over ranks before each optimiser step.

    G: the StackGAN (Stage-I frozen in stage 2: requires_grad off, eval mode); D: that stage's discriminator;
    real [b, 3, s, s] at the stage's side; t [b, text_dim]; z [b, z_dim]; eps [b, cond_dim].
    G_fwd / D_fwd: what to call for G / D (their torch.compile wrappers; default the modules); amp: autocast
    context of the forward passes (None = fp32). uncond: D also has its unconditional logit (Stage-II's D), as
    StackGAN-Pytorch's compute_discriminator_loss / compute_generator_loss (code/miscc/utils.py:22-78):
    D = (cond real + uncond real) / 2 + (cond fake + wrong + uncond fake) / 3 and G adds BCE(uncond(fake), 1);
    else D = cond real + (wrong + cond fake) / 2 (the reference's form for a D without one).
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
        if uncond:
            d_loss = losses.discriminator_loss(D_fwd, real, fake.detach(), cond, mismatched(cond))["loss"]
        else:
            code_real, code_fake = D_fwd(real), D_fwd(fake.detach())  # [b, C, 4, 4]
            d_loss = losses.bce(D_fwd.logits(code_real, cond), 1.0) + 0.5 * (
                losses.bce(D_fwd.logits(code_real, mismatched(cond)), 0.0)
                + losses.bce(D_fwd.logits(code_fake, cond), 0.0))
    if check is not None:
        check(step_stats({"d": d_loss}))
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    sync_step(opt_D)
    D.requires_grad_(False)  # G against the updated D
    with amp:
        code = D_fwd(fake)
        g_adv = losses.bce(D_fwd.logits(code, cond), 1.0)
        if uncond:
            g_adv = g_adv + losses.bce(D_fwd.logits(code), 1.0)
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


def lr_factor(stage_epoch, every):
    """StackGAN-Pytorch code/trainer.py:146-154: from (0-based) epoch e > 0 of a stage with e % every == 0 on, the
    learning rates halve, so the stage's epoch `stage_epoch` trains at 0.5 ** (stage_epoch // every) of them (1 when
    every is None)."""
    return 1.0 if every is None else 0.5 ** (int(stage_epoch) // int(every))


def model_config(cfg, image_size, text_dim):
    """The StackGAN model config of a run (cfg: StackGANTrainConfig) whose Stage-II makes `image_size` px images from
    `text_dim` text features. Raises ModelConfigError for an impossible size."""
    from t2icli.models.stackgan import StackGANConfig

    return StackGANConfig(image_size=int(image_size), gf_dim=cfg.gf_dim, df_dim=cfg.df_dim, z_dim=cfg.z_dim,
                          cond_dim=cfg.cond_dim, text_dim=int(text_dim), res_blocks=cfg.res_blocks).validate()


def network_counts(cfg, mcfg):
    """{"G": both stages, "G_stage1": CA + Stage-I G, "G_stage2": CA + Stage-II G, "D<side>": each stage's D}
    parameter counts of the run's networks, built on the meta device."""
    from t2icli.models import parameter_count
    from t2icli.models.stackgan import StackGAN, build_discriminators

    with torch.device("meta"):
        G, Ds = StackGAN(mcfg), build_discriminators(mcfg)
    return dict({"G": parameter_count(G), "G_stage1": parameter_count(G.ca1) + parameter_count(G.g1),
                 "G_stage2": parameter_count(G.ca2) + parameter_count(G.g2)},
                **{f"D{s}": parameter_count(D) for s, D in zip(mcfg.sizes, Ds)})


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


class StackGANTrainer(GANTrainer):
    """StackGAN v1 on the shared loop: two phases of the loop, Stage-I then Stage-II (see the module docstring)."""

    log_keys = ("d", "g", "g_adv", "kl")

    def stage_sizes(self, image_size):
        from t2icli.models.config import ModelConfigError
        from t2icli.models.stackgan import StackGANConfig

        try:
            return StackGANConfig(image_size=image_size).validate().sizes
        except ModelConfigError as exc:
            raise RunError(f"{exc} (--data {self.cfg.data}; Stage-II makes the data's size, Stage-I a quarter of "
                           "it)") from None

    def model_config(self):
        return model_config(self.cfg, self.resolutions[-1], self.text_dim)

    def stage_steps(self, stage, per_epoch=None):
        """Optimiser steps of `stage` (1 or 2): --stageN-epochs x the steps of an epoch when set, else
        --stageN-steps."""
        epochs = self.cfg.stage1_epochs if stage == 1 else self.cfg.stage2_epochs
        if epochs is None:
            return self.cfg.stage1_steps if stage == 1 else self.cfg.stage2_steps
        return epochs * (self.loop.per_epoch if per_epoch is None else per_epoch)

    def build(self, ckpt):
        from t2icli.models.gancls import init_dcgan
        from t2icli.models.stackgan import StackGAN, build_discriminators

        cfg = self.cfg
        self.G = G = distributed.sync_batchnorm(init_dcgan(StackGAN(self.model_config()))).to(self.device)
        self.Ds = Ds = distributed.sync_batchnorm(init_dcgan(build_discriminators(self.model_config()))).to(self.device)
        self.stage_params = [list(G.ca1.parameters()) + list(G.g1.parameters()),
                             list(G.ca2.parameters()) + list(G.g2.parameters())]
        self.opt_G = [torch.optim.Adam(p, lr=cfg.lr_g, betas=(0.5, 0.999)) for p in self.stage_params]
        self.opt_D = [torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999)) for D in Ds]
        self.G_ema = EMA(G, cfg.ema_beta) if cfg.ema else None
        self.stage1_end = None if ckpt is None else ckpt.get("stage1_end")  # the step where Stage-I stopped
        self.G_fwd, self.D_fwd = compiled(G, cfg.compile), [compiled(D, cfg.compile) for D in Ds]  # what steps call
        self.amp = distributed.autocast(self.device, cfg.precision)
        self.p_t, self.p_texts = self.prompt_features()
        self.p_z, self.p_eps = self.fixed_noise(len(self.p_texts), cfg.cond_dim)
        G.train()
        Ds.train()
        state = TrainState({"G": G, "Ds": Ds, "opt_G": StateList(self.opt_G), "opt_D": StateList(self.opt_D),
                            "G_ema": self.G_ema}, meta=self.meta_entries(),
                           missing={"G_ema": "the checkpoint has no EMA generator (trained with --no-ema)"})
        state.meta["stage1_end"] = self.stage1_end
        self.state = state
        return state

    def describe(self):
        cfg, n_g = self.cfg, [sum(p.numel() for p in ps) / 1e6 for ps in self.stage_params]
        return (f"stackgan: Stage-I {self.resolutions[0]} px ({n_g[0]:.2f}M) then Stage-II {self.resolutions[1]} px "
                f"({n_g[1]:.2f}M), D {self.count(self.Ds):.2f}M, text {self.text_source} ({self.text_dim}-d), "
                f"{len(self.train_ds)} train images, batch {cfg.batch_size}, {self.stage_steps(1)} + "
                f"{self.stage_steps(2)} steps, device {self.device}")

    def total_steps(self, per_epoch):
        stage1 = self.stage_steps(1, per_epoch) if self.stage1_end is None else self.stage1_end
        return stage1 + self.stage_steps(2, per_epoch)

    def stop_reason(self, step):
        return "steps"

    def stage_step(self, stage):
        """The step function of `stage` (1 or 2)."""
        def step(batch, gen):
            # [b, z_dim] noise and [b, cond_dim] CA noise: this rank's rows of the global batch's
            z, eps = (x.to(self.device) for x in global_noise(gen, len(batch["tokens"]), self.cfg.z_dim,
                                                               self.cfg.cond_dim))
            cfg = self.cfg
            if cfg.lr_decay_epochs is not None:  # the epochs of this stage, counted from its first step
                start = 0 if stage == 1 else self.stage1_end
                f = lr_factor((self.loop.step - start) // self.loop.per_epoch, cfg.lr_decay_epochs)
                set_lr(self.opt_G[stage - 1], cfg.lr_g * f)
                set_lr(self.opt_D[stage - 1], cfg.lr_d * f)
            vals = stage_step(stage, self.G, self.Ds[stage - 1], self.opt_G[stage - 1], self.opt_D[stage - 1],
                              batch["images"][stage - 1], self.condition(batch), z, eps, cfg.kl_weight,
                              check=self.loop.check_finite, G_fwd=self.G_fwd, D_fwd=self.D_fwd[stage - 1], amp=self.amp,
                              uncond=stage == 2 and cfg.stage2_uncond)
            if self.G_ema is not None:
                self.G_ema.update(self.G)
            return vals
        return step

    def enter_stage2(self):
        """Freeze Stage-I (eval mode, no gradients), first taking the EMA weights that will be exported."""
        G = self.G
        if self.G_ema is not None:
            G.ca1.load_state_dict(self.G_ema.shadow.ca1.state_dict())
            G.g1.load_state_dict(self.G_ema.shadow.g1.state_dict())
        G.ca1.eval().requires_grad_(False)
        G.g1.eval().requires_grad_(False)

    def fit(self, loop):
        cfg, start = self.cfg, time.perf_counter()
        budget = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
        steps1, steps2 = self.stage_steps(1), self.stage_steps(2)
        if self.stage1_end is None:
            rem1, rem2 = max(steps1 - loop.step, 0), steps2
            deadline1 = None if budget is None else start + budget * rem1 / max(rem1 + rem2, 1)
            stop = loop.train(steps1, self.stage_step(1), deadline1, label="I ")
            self.stage1_end = self.state.meta["stage1_end"] = loop.step
            loop.run.log(f"Stage-I ended ({stop}) at step {loop.step}; Stage-II trains {steps2} steps with it frozen")
            loop.run.append_stats({"step": loop.step, "stage1_end": loop.step, "stage1_stop": stop})
            loop.set_total(loop.step + steps2)
        self.enter_stage2()
        stop = loop.train(self.stage1_end + steps2, self.stage_step(2),
                        None if budget is None else start + budget, label="II ")
        loop.run.log(f"Stage-II stopped ({stop}) after {loop.step - self.stage1_end} of its steps")
        return stop

    def snapshot(self, final=False):
        from t2icli.viz import save_image_grid

        t0, sizes = time.perf_counter(), self.resolutions
        imgs = self.draw(self.sampler(), self.p_t, self.p_z.to(self.device), self.p_eps.to(self.device))  # 2 stages
        grid = save_image_grid(self.grid_path(), [[imgs[0][k], imgs[1][k]] for k in range(len(self.p_texts))],
                               row_labels=self.p_texts, col_labels=[f"I {sizes[0]}px", f"II {sizes[1]}px"])
        net = self.sampler() if self.stage1_end is not None else _Stage1View(self.sampler())
        return self.record(grid, self.rprecision(net, final), t0, stage=1 if self.stage1_end is None else 2)

    def export(self):
        return super().export(stage1_steps_done=self.stage1_end, stage2_steps_done=self.loop.step - self.stage1_end)

    def result(self):
        return dict(super().result(), stage1_end=self.stage1_end)


def train(cfg, resume=None, progress=True):
    """Train StackGAN v1 as configured by `cfg` (a StackGANTrainConfig) into run folder cfg.out: cfg.stage1_steps of
    Stage-I (S/4 px), then cfg.stage2_steps of Stage-II (S px, the data's size) with Stage-I frozen. Text features
    as training/gancls.train. Returns the dict of training.loop.fit with "rprecision", "snapshot", "stage1_end".
    Raises T2IError subclasses naming the flag or path.
    """
    if not isinstance(cfg, StackGANTrainConfig):
        raise TypeError(f"train() takes a StackGANTrainConfig, got {type(cfg).__name__}")
    return fit(cfg, StackGANTrainer, resume=resume, progress=progress)
