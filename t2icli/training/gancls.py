"""`t2i train gancls`: GAN-INT-CLS (Reed et al. 2016, Algorithm 1 + manifold interpolation) on the shared loop.

Per step, with t the sentence features of the batch's captions and t_w = the batch rolled by one (mismatched):
    D:  BCE(D(x, t), 1) + (BCE(D(x, t_w), 0) + BCE(D(G(z, t), t), 0)) / 2       matching-aware (CLS)
    G:  BCE(D(G(z, t), t), 1) + BCE(D(G(z', t_int), t_int), 1)                   t_int = beta t + (1 - beta) t_w (INT)
    S:  || S(G(z, t)) - z ||^2 on the step's (detached) fakes                    style encoder, --train-style-encoder
Text features: the frozen DAMSM text encoder's e_bar, or StackGAN's char-CNN-RNN embeddings (--text-embeddings).
Run folder, determinism, resume: training/loop.py; checkpoints hold G, D, S, their optimisers and the EMA;
snapshots fakes<step>.png at fixed noise and prompts; export RUN/generator.pt with the style encoder.

Distributed (torchrun): the global batch is split over the ranks, BatchNorm in G, D and S is synchronised, t_w is
the global batch's roll and z, z' are drawn for the global batch, so N processes compute the losses of one.
Precision "bf16" autocasts the forward passes on CUDA (losses and EMA in fp32; ignored on CPU); `compile` wraps G
and D in torch.compile.
"""

import time

import torch
import torch.nn.functional as F

from t2icli import losses
from t2icli.training import distributed
from t2icli.training.config import GanClsTrainConfig
from t2icli.training.ema import EMA
from t2icli.training.gan import GANTrainer, compiled, global_noise, mismatched, step_stats, sync_step
from t2icli.training.loop import fit
from t2icli.training.run import RunError
from t2icli.training.state import TrainState

__all__ = ["train", "train_step", "GanClsTrainer"]


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


class GanClsTrainer(GANTrainer):
    """GAN-INT-CLS on the shared loop (see the module docstring)."""

    log_keys = ("d", "g", "g_adv", "g_int", "style")

    def stage_sizes(self, image_size):
        from t2icli.models.config import ModelConfigError
        from t2icli.models.gancls import GanClsConfig

        try:
            GanClsConfig(image_size=image_size).validate()
        except ModelConfigError as exc:
            raise RunError(f"{exc} (--data {self.cfg.data})") from None
        return [image_size]

    def model_config(self):
        from t2icli.models.gancls import GanClsConfig

        cfg = self.cfg
        return GanClsConfig(image_size=self.resolutions[-1], gf_dim=cfg.gf_dim, df_dim=cfg.df_dim, z_dim=cfg.z_dim,
                            text_dim=self.text_dim, proj_dim=cfg.proj_dim)

    def check_resume(self, ckpt, path):
        super().check_resume(ckpt, path)
        if (ckpt.get("S") is not None) != self.cfg.train_style_encoder:
            raise RunError(f"--resume {path}: the checkpoint was trained "
                           f"{'with' if ckpt.get('S') is not None else 'without'} --train-style-encoder")

    def build(self, ckpt):
        from t2icli.models.gancls import CondDiscriminator, GanClsGenerator, StyleEncoder, init_dcgan

        cfg, mcfg, sync_bn = self.cfg, self.model_config(), distributed.sync_batchnorm  # global-batch BN
        self.G = G = sync_bn(init_dcgan(GanClsGenerator(mcfg))).to(self.device)
        D = sync_bn(init_dcgan(CondDiscriminator(mcfg.image_size, cfg.df_dim, mcfg.text_dim, cfg.proj_dim,
                                                 joint_kernel=1)))
        self.D = D = D.to(self.device)
        self.S = S = (sync_bn(init_dcgan(StyleEncoder(mcfg.image_size, cfg.df_dim, cfg.z_dim))).to(self.device)
                      if cfg.train_style_encoder else None)
        self.opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
        self.opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
        self.opt_S = torch.optim.Adam(S.parameters(), lr=cfg.lr_s, betas=(0.5, 0.999)) if S is not None else None
        self.G_ema = EMA(G, cfg.ema_beta) if cfg.ema else None
        self.G_fwd, self.D_fwd = compiled(G, cfg.compile), compiled(D, cfg.compile)  # what the step calls
        self.amp = distributed.autocast(self.device, cfg.precision)
        self.p_t, self.p_texts = self.prompt_features()
        self.p_z, _ = self.fixed_noise(len(self.p_texts), 0)
        for m in (G, D, S):
            if m is not None:
                m.train()
        return TrainState({"G": G, "D": D, "opt_G": self.opt_G, "opt_D": self.opt_D, "S": S, "opt_S": self.opt_S,
                           "G_ema": self.G_ema}, meta=self.meta_entries(),
                          missing={"G_ema": "the checkpoint has no EMA generator (trained with --no-ema)"})

    def describe(self):
        cfg = self.cfg
        return (f"gancls: {self.resolutions[-1]} px, G {self.count(self.G):.2f}M / D {self.count(self.D):.2f}M "
                f"parameters" + (", style encoder" if self.S is not None else "") + f", text {self.text_source} "
                f"({self.text_dim}-d), {len(self.train_ds)} train images, batch {cfg.batch_size}, {self.loop.total} "
                f"steps, device {self.device}")

    def step(self, batch, gen):
        # [b, z_dim] each: z ~ N(0, I) and the interpolated captions' noise, this rank's rows of the global batch's
        z, z_int = (x.to(self.device) for x in global_noise(gen, len(batch["tokens"]), self.cfg.z_dim, self.cfg.z_dim))
        vals = train_step(self.G, self.D, self.S, self.opt_G, self.opt_D, self.opt_S, batch["images"][0],
                          self.condition(batch), z, z_int, self.cfg.interp_beta, self.cfg.interp,
                          check=self.loop.check_finite, G_fwd=self.G_fwd, D_fwd=self.D_fwd, amp=self.amp)
        if self.G_ema is not None:
            self.G_ema.update(self.G)
        return vals

    def snapshot(self, final=False):
        from t2icli.viz import save_image_grid

        t0 = time.perf_counter()
        imgs = self.draw(self.sampler(), self.p_t, self.p_z.to(self.device), None)[0]  # [n, s, s, 3]
        grid = save_image_grid(self.grid_path(), [[im] for im in imgs], row_labels=self.p_texts,
                               col_labels=[f"{self.resolutions[-1]}px"])
        return self.record(grid, self.rprecision(self.sampler(), final), t0)

    def export(self):
        return super().export(style_encoder=self.S)


def train(cfg, resume=None, progress=True):
    """Train GAN-INT-CLS as configured by `cfg` (a GanClsTrainConfig) into run folder cfg.out: conditioned on the
    DAMSM run cfg.damsm's sentence features, or with cfg.text_embeddings on StackGAN's char-CNN-RNN embeddings.

    Returns the dict of training.loop.fit with "rprecision" (final generated-image R-precision; None with
    --text-embeddings) and "snapshot". Raises T2IError subclasses naming the flag or path.
    """
    if not isinstance(cfg, GanClsTrainConfig):
        raise TypeError(f"train() takes a GanClsTrainConfig, got {type(cfg).__name__}")
    return fit(cfg, GanClsTrainer, resume=resume, progress=progress)
