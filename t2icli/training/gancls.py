"""`t2i train gancls`: GAN-INT-CLS (Reed et al. 2016, Algorithm 1 + manifold interpolation) on the shared loop.

Per step, with t the sentence features of the batch's captions and t_w = the batch rolled by one (mismatched):
    D:  BCE(D(x, t), 1) + c BCE(D(x, t_w), 0) + (1 - c) BCE(D(G(z, t), t), 0)     matching-aware (CLS), c = 0.5
    G:  BCE(D(G(z, t), t), 1) + w BCE(D(G(z', t_int), t_int), 1)                 t_int = beta t + (1 - beta) t_w (INT)
    S:  || S(G(z, t)) - z ||^2 on the step's (detached) fakes                    style encoder, --train-style-encoder
Text features: the frozen DAMSM text encoder's e_bar, or StackGAN's char-CNN-RNN embeddings (--text-embeddings).
Reed et al.'s own choices (main_cls_int.lua with scripts/train_cub.sh; --preset cub-paper sets them) are flags:
--n-captions 4 (t: the mean of 4 captions' features, :228-241), --wrong images (D's wrong pair is an image of another
class with the right text, :356-366, data/donkey_folder_txt.lua:115-157), --cls-weight c, --g-batch fresh (G on
1.5 B new samples: B on t, B/2 on the means of the batch's two halves, weighted 1 and --interp-weight w in one
averaged BCE, :243-247, 393-415) and --lr-decay-epochs 100 (:421-424).
Run folder, determinism, resume: training/loop.py; checkpoints hold G, D, S, their optimisers and the EMA;
snapshots fakes<step>.png at fixed noise and prompts; export RUN/generator.pt with the style encoder.

Distributed (torchrun): the global batch is split over the ranks, BatchNorm in G, D and S is synchronised, t_w is
the global batch's roll and z, z', the wrong images and the captions averaged are drawn for the global batch, so N
processes compute the losses of one.
Precision "bf16" autocasts the forward passes on CUDA and on a CPU with native bf16 (distributed.cpu_bf16; ignored,
logged, on other CPUs); losses and EMA stay fp32. `compile` wraps G and D in torch.compile.
"""

import contextlib
import time

import torch
import torch.nn.functional as F

from t2icli import losses
from t2icli.errors import ConfigError
from t2icli.training import distributed
from t2icli.training.config import GanClsTrainConfig
from t2icli.training.ema import EMA
from t2icli.training.gan import GANTrainer, compiled, global_noise, mismatched, step_stats, sync_step
from t2icli.training.loop import fit
from t2icli.training.run import RunError
from t2icli.training.state import TrainState, set_lr

__all__ = ["train", "train_step", "GanClsTrainer", "lr_factor", "model_config", "networks", "network_counts"]


def train_step(G, D, S, opt_G, opt_D, opt_S, reals, t, z, z_int, interp_beta=0.5, interp=True, check=None, *,
               G_fwd=None, D_fwd=None, amp=None, wrong_images=None, cls_weight=0.5, interp_weight=1.0, fresh=None):
    """One GAN-INT-CLS step on this rank's rows of the global batch: D step, then G step, then (S given) a
    style-encoder step. Gradients are averaged over ranks before each optimiser step.

    reals [b, 3, s, s]; t [b, text_dim]; z, z_int [b, z_dim] (z_int: the interpolated captions' noise).
    G_fwd / D_fwd: what to call for G / D (their torch.compile wrappers; default the modules); amp: autocast context
    of the forward passes (None = fp32). check(vals) is called with D's loss before D's backward and with all
    losses before G's.
    D: BCE(real, 1) + cls_weight * BCE(wrong, 0) + (1 - cls_weight) * BCE(fake, 0) (main_cls_int.lua:349-386), the
    wrong pair being (wrong_images [b, 3, s, s], t) when given (an image of another class with the right text, as
    the reference) or else (real, another sample's text).
    G, fresh=None: BCE(fake, 1) on the D step's fakes + interp_weight * BCE(G(z_int, t_int), 1) with t_int = beta t +
    (1 - beta) t_w. fresh=(z_g [b, z_dim], z_gi [b_i, z_dim], t_gi [b_i, text_dim]): as main_cls_int.lua:243-247,
    393-415, G is scored on freshly drawn samples G(z_g, t) and (interp) G(z_gi, t_gi), one forward pass, with the
    BCE weighted 1 and interp_weight and averaged over all b + b_i samples (b_i = 0 without interpolation).
    Returns {"d", "g", "g_adv", "g_int", "style"}: floats averaged over ranks.
    """
    G_fwd = G if G_fwd is None else G_fwd
    D_fwd = D if D_fwd is None else D_fwd
    amp = amp if amp is not None else distributed.autocast("cpu", "fp32")
    t_w = mismatched(t)  # [b, text_dim] row k: caption of image k+1 (of the global batch)
    with amp, torch.no_grad() if fresh is not None else contextlib.nullcontext():
        fake = G_fwd(z, t)["images"][0]  # [b, 3, s, s] (fresh: only D's, so no graph)
    # (1) D: (real, right) -> 1, wrong pair -> 0, (fake, right) -> 0.
    D.requires_grad_(True)
    with amp:
        code_real, code_fake = D_fwd(reals), D_fwd(fake.detach())  # [b, C, 4, 4] each
        if wrong_images is not None:
            wrong = D_fwd.logits(D_fwd(wrong_images), t)
        else:
            wrong = D_fwd.logits(code_real, t_w)
        d_loss = losses.bce(D_fwd.logits(code_real, t), 1.0) + (
            cls_weight * losses.bce(wrong, 0.0) + (1.0 - cls_weight) * losses.bce(D_fwd.logits(code_fake, t), 0.0))
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
        if fresh is None:
            g_adv = losses.bce(D_fwd.logits(D_fwd(fake), t), 1.0)
            if interp:
                t_int = interp_beta * t + (1.0 - interp_beta) * t_w  # [b, text_dim]
                g_int = losses.bce(D_fwd.logits(D_fwd(G_fwd(z_int, t_int)["images"][0]), t_int), 1.0)
            g_loss = g_adv + interp_weight * g_int
        else:
            z_g, z_gi, t_gi = fresh
            b = len(z_g)
            t_g = torch.cat([t, t_gi])  # [b + b_i, text_dim]
            logits = D_fwd.logits(D_fwd(G_fwd(torch.cat([z_g, z_gi]), t_g)["images"][0]), t_g).float()
            per = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")  # [b + b_i]
            g_adv = per[:b].mean()
            if len(z_gi):
                g_int = per[b:].mean()
            g_loss = (per[:b].sum() + interp_weight * per[b:].sum()) / len(per)  # BCECriterion(weights), mean
        s_out = S(fake.detach()) if S is not None else None  # [b, z_dim]
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


def lr_factor(epoch, every):
    """main_cls_int.lua:421-424: at the start of (1-based) epoch e with e % every == 0 the learning rates halve, so
    0-based epoch `epoch` trains at 0.5 ** ((epoch + 1) // every) of them (1 when every is None)."""
    return 1.0 if every is None else 0.5 ** ((int(epoch) + 1) // int(every))


def model_config(cfg, image_size, text_dim):
    """The GAN-INT-CLS model config of a run (cfg: GanClsTrainConfig) on `image_size` px images with `text_dim`
    text features. Raises ModelConfigError for an impossible size."""
    from t2icli.models.gancls import GanClsConfig

    return GanClsConfig(image_size=int(image_size), gf_dim=cfg.gf_dim, df_dim=cfg.df_dim, z_dim=cfg.z_dim,
                        text_dim=int(text_dim), proj_dim=cfg.proj_dim, layout=cfg.layout).validate()


def networks(cfg, mcfg):
    """{"G", "D" (, "S" with --train-style-encoder)}: the run's networks, freshly built (not initialised)."""
    from t2icli.models.gancls import CondDiscriminator, GanClsGenerator, StyleEncoder

    nets = {"G": GanClsGenerator(mcfg),
            "D": CondDiscriminator(mcfg.image_size, mcfg.df_dim, mcfg.text_dim, mcfg.proj_dim, joint_kernel=1,
                                   layout=mcfg.layout)}
    if cfg.train_style_encoder:
        nets["S"] = StyleEncoder(mcfg.image_size, mcfg.df_dim, mcfg.z_dim)
    return nets


def network_counts(cfg, mcfg):
    """{"G": n, "D": n (, "S": n)} parameter counts of the run's networks, built on the meta device."""
    from t2icli.models import parameter_count

    with torch.device("meta"):
        return {name: parameter_count(m) for name, m in networks(cfg, mcfg).items()}


class GanClsTrainer(GANTrainer):
    """GAN-INT-CLS on the shared loop (see the module docstring)."""

    log_keys = ("d", "g", "g_adv", "g_int", "style")

    def __init__(self, cfg, env, resume=None):
        super().__init__(cfg, env, resume)
        if cfg.g_batch == "fresh" and cfg.interp and (cfg.batch_size // 2) % env.world:
            raise ConfigError(f"--batch-size {cfg.batch_size}: --g-batch fresh interpolates the batch's halves, whose "
                              f"{cfg.batch_size // 2} rows must split evenly over the {env.world} processes")

    def stage_sizes(self, image_size):
        from t2icli.models.config import ModelConfigError
        from t2icli.models.gancls import GanClsConfig

        try:
            GanClsConfig(image_size=image_size).validate()
        except ModelConfigError as exc:
            raise RunError(f"{exc} (--data {self.cfg.data})") from None
        return [image_size]

    def model_config(self):
        return model_config(self.cfg, self.resolutions[-1], self.text_dim)

    def check_resume(self, ckpt, path):
        super().check_resume(ckpt, path)
        if (ckpt.get("S") is not None) != self.cfg.train_style_encoder:
            raise RunError(f"--resume {path}: the checkpoint was trained "
                           f"{'with' if ckpt.get('S') is not None else 'without'} --train-style-encoder")

    def build(self, ckpt):
        from t2icli.models.gancls import init_dcgan

        cfg, mcfg, sync_bn = self.cfg, self.model_config(), distributed.sync_batchnorm  # global-batch BN
        nets = networks(cfg, mcfg)
        self.G = G = sync_bn(init_dcgan(nets["G"])).to(self.device)
        self.D = D = sync_bn(init_dcgan(nets["D"])).to(self.device)
        self.S = S = sync_bn(init_dcgan(nets["S"])).to(self.device) if "S" in nets else None
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
                f"({self.text_dim}-d" + (f", mean of {cfg.n_captions} captions" if cfg.n_captions > 1 else "")
                + f"), {len(self.train_ds)} train images, batch {cfg.batch_size}, {self.loop.total} steps, device "
                  f"{self.device}")

    def step(self, batch, gen):
        cfg, device = self.cfg, self.device
        if cfg.lr_decay_epochs is not None:
            f = lr_factor(self.loop.epoch, cfg.lr_decay_epochs)
            set_lr(self.opt_G, cfg.lr_g * f)
            set_lr(self.opt_D, cfg.lr_d * f)
        b = len(batch["tokens"])
        # [b, z_dim] each: z ~ N(0, I) and the interpolated captions' noise, this rank's rows of the global batch's
        z, z_int = (x.to(device) for x in global_noise(gen, b, cfg.z_dim, cfg.z_dim))
        t = self.condition(batch) if cfg.n_captions == 1 else self.mean_condition(batch, gen, cfg.n_captions)
        wrong = self.wrong_images(batch, gen)[0] if cfg.wrong == "images" else None
        fresh = None
        if cfg.g_batch == "fresh":  # main_cls_int.lua: 1.5 B new samples, the last B/2 on (t_k + t_{k+B/2}) / 2
            (z_g,) = global_noise(gen, b, cfg.z_dim)
            z_gi, t_gi = torch.zeros(0, cfg.z_dim), t[:0]
            if cfg.interp:
                B = b * self.env.world
                t_all = distributed.all_gather(t)  # [B, text_dim] the global batch, as one process has it
                t_gi = distributed.local_rows(0.5 * (t_all[: B // 2] + t_all[B // 2 :]))  # [b / 2, text_dim]
                z_gi = distributed.local_rows(torch.randn(B // 2, cfg.z_dim, generator=gen))
            fresh = (z_g.to(device), z_gi.to(device), t_gi)
        vals = train_step(self.G, self.D, self.S, self.opt_G, self.opt_D, self.opt_S, batch["images"][0], t, z, z_int,
                          cfg.interp_beta, cfg.interp, check=self.loop.check_finite, G_fwd=self.G_fwd,
                          D_fwd=self.D_fwd, amp=self.amp, wrong_images=wrong, cls_weight=cfg.cls_weight,
                          interp_weight=cfg.interp_weight, fresh=fresh)
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
