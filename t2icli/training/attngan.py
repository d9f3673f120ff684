"""`t2i train attngan` (AttnGAN) and `t2i train stackgan2` (StackGAN++): the multi-stage tree trained all at once.

G (all stages at once) and one D per stage, conditioned on the frozen text encoder of a DAMSM run (words e for
attention, sentence e_bar for conditioning augmentation and the conditional D logits). Per step, as AttnGAN's
trainer.py: G makes x_0..x_{S-1}; every D_i takes (real, text) / (fake, text) / (real, wrong text) + unconditional
terms; then G takes the adversarial terms of every stage + KL + (attngan) lambda * DAMSM(x_{S-1}) or (stackgan2)
colour consistency. Run folder, determinism, resume and torchrun: training/loop.py; snapshots: fakes<step>.png of
every stage at fixed noise and prompts, attn<step>.png word-attention maps (attngan); export RUN/generator.pt.

StackGAN-v2's own choices are flags (its --preset cub-paper sets them; the defaults keep the form above):
--d-condition mu (the Ds see the CA mean, detached in D's step: trainer.py:579-581, 619), --wrong images (an image of
another class with the right condition: datasets.py:299-310), --uncond-loss W (D = real + wrong + fake, each with W x
its unconditional term, a wrong image counting as real there: trainer.py:583-600), --cc-detach (colour consistency
against the smaller stage's detached statistics: :630-657), --unconditional (B_CONDITION False: noise only, the Ds'
unconditional heads only, no KL), --text-embeddings (StackGAN's char-CNN-RNN embeddings, as the paper).

Distributed: rank r trains on rows [r::world] of the global batch with the z/eps those rows get in one process;
BatchNorm in G and the Ds is synchronised, the mismatched captions of D's "wrong" term are the global batch's roll
(wrong images are drawn for the global batch from the step's generator), and the DAMSM term gathers every rank's
features, so N processes compute the losses of one process. Gradients are
averaged with distributed.sync_grads after each backward (not DDP: D is called several ways and its requires_grad
is toggled).

Precision: "bf16" autocasts G's and the Ds' forward passes on CUDA and on a CPU with native bf16 (distributed.cpu_bf16;
ignored, logged, on other CPUs); losses, KL, penalties and EMA stay fp32. `compile` wraps G and every D in
torch.compile (the t2i::* custom ops have fake kernels).
"""

import math
import time

import torch

from t2icli import losses
from t2icli.models.attngan import word_mask
from t2icli.training import distributed
from t2icli.training.config import AttnGANTrainConfig, StackGAN2TrainConfig
from t2icli.training.damsm import encode_with_edits
from t2icli.training.ema import EMA
from t2icli.training.gan import GANTrainer, compiled, generate, mismatched, standing_stats
from t2icli.training.loop import fit
from t2icli.training.run import RunError
from t2icli.training.state import TrainState, set_lr

__all__ = ["train", "train_step", "TreeTrainer", "model_config", "networks", "network_counts", "lr_decay_factor"]


def train_step(G_fwd, D_fwd, G, Ds, opt_G, opt_D, text_encoder, image_encoder, reals, tokens, lengths, class_ids, z,
               eps, *, amp=None, kl_weight=1.0, damsm_weight=0.0, damsm_config=None, damsm_aug=None, cc=None, r1_gamma=0.0,
               check=None, e_bar=None, wrong_images=None, d_condition="sentence", uncond_loss=None, cc_detach=False,
               conditional=True, hard=None, d_edits=None):
    """One AttnGAN / StackGAN++ step on this rank's rows of the global batch: D step, then G step.

    G_fwd / D_fwd: what to call (G and the list of Ds, or their torch.compile wrappers); G / Ds: the modules
    (parameters, requires_grad); reals: S x [b, 3, s_i, s_i]; tokens [b, T]; lengths, class_ids [b]; z [b, z_dim];
    eps [b, cond_dim]; amp: autocast context of the forward passes (None = fp32); damsm_weight > 0 adds the DAMSM
    term (image_encoder + damsm_config's gammas, features gathered over ranks), which scores the final images
    moved by losses.shift_flip(x, damsm_aug) when damsm_aug [b, 3] (uniform draws) is given; cc: (lambda1, lambda2) adds
    StackGAN++'s colour consistency (on the smaller stage's detached statistics with cc_detach, as StackGAN-v2
    trainer.py:630-657); r1_gamma > 0 adds the R1 penalty to every D's loss (double backward, so the Ds run
    uncompiled in their own step). Gradients are averaged over ranks before each optimiser step. check(vals) is
    called with the losses before G's backward (to stop on a non-finite loss).

    The StackGAN-v2 options: e_bar [b, text_dim] given: the sentence features (char-CNN-RNN embeddings) instead of
    the text encoder's (no word features: no attention, no DAMSM term); d_condition "mu": the Ds' conditional heads
    see the CA mean, detached in D's step and not in G's (trainer.py:579-581, 619), instead of the sentence;
    wrong_images: S x [b, 3, s_i, s_i] images of other classes, D's wrong pairs (wrong image, right condition)
    instead of (real image, another sample's caption); uncond_loss W: StackGAN-v2's D loss with UNCOND_LOSS W
    (losses.stackgan2_discriminator_loss) and G's unconditional terms weighted W, instead of AttnGAN's;
    conditional=False: StackGAN-v2's unconditional mode (the Ds' unconditional heads only, no KL).
    hard: None or (tokens [b, K, T], valid [b, K]): edited copies of each caption (data/negatives.py), extra
    negatives of its image in the DAMSM term (--hard-negatives; not in AttnGAN).
    d_edits: None or (tokens [b, T], use bool [b]): one edited copy of each caption (data/negatives.py); D's wrong
    condition of the `use` rows is this copy's sentence feature instead of the batch roll's caption, so D learns
    to reject a real image whose caption is wrong in one fact (--edited-wrong; not in AttnGAN).
    Returns {"d", "g", "g_adv", "kl", "damsm", "cc"}: floats, averaged over ranks (= the one-process values).
    """
    amp = amp if amp is not None else distributed.autocast("cpu", "fp32")
    phase = torch.profiler.record_function  # named regions for scripts/profile_gan.py (free when not profiling)
    device = z.device
    e = mask = e_hard = None
    if e_bar is None:
        with phase("t2i/text"), torch.no_grad():
            # [b, D, T] words, [b, D] sentence (frozen); the edited copies' in the same call: [b, K (+1), ...]
            copies = [c for c in (None if hard is None else hard[0],
                                  None if d_edits is None else d_edits[0][:, None]) if c is not None]
            e, e_bar, e_ed, e_bar_ed = encode_with_edits(text_encoder, tokens, lengths,
                                                         torch.cat(copies, 1) if copies else None)
            if hard is not None:
                K = hard[0].shape[1]
                e_hard = (e_ed[:, :K], e_bar_ed[:, :K], hard[1].to(device))  # [b, K, D, T], [b, K, D], [b, K]
            if d_edits is not None:
                e_bar_edit = e_bar_ed[:, -1]  # [b, D]
        mask = word_mask(tokens)  # [b, T] True = padding
    with phase("t2i/G forward"), amp:
        g_out = G_fwd(z, e_bar, e, mask, eps=eps)
    fakes = g_out["images"]  # S x [b, 3, s_i, s_i]
    cond_d = cond_g = None  # what D's conditional heads see in D's step and in G's step (None: unconditional)
    if conditional:
        cond_d = cond_g = e_bar
        if d_condition == "mu":
            cond_d, cond_g = g_out["mu"].detach().float(), g_out["mu"]
    cond_wrong = None  # one process: mismatched(cond_d); N processes: this rank's rows of the global batch's roll
    if conditional and wrong_images is None and (distributed.current().world > 1 or d_edits is not None):
        cond_wrong = mismatched(cond_d)  # [b, D]
    if d_edits is not None:  # the chosen rows' wrong condition: their own caption, edited (sentence features)
        cond_wrong = torch.where(d_edits[1].to(device)[:, None], e_bar_edit.to(cond_d.dtype), cond_wrong)  # [b, D]

    # (1) discriminators: (real, text) / (fake, text) / wrong pair + unconditional.
    with phase("t2i/D step"):
        Ds.requires_grad_(True)
        d_total = 0.0
        for i, (D, x_real, x_fake) in enumerate(zip(Ds if r1_gamma > 0 else D_fwd, reals, fakes)):  # compile: no
            wrong = None if wrong_images is None else wrong_images[i]                                # double backward
            with amp:
                if not conditional:
                    out = losses.unconditional_discriminator_loss(D, x_real, x_fake.detach(), r1_gamma)
                elif uncond_loss is None:
                    out = losses.discriminator_loss(D, x_real, x_fake.detach(), cond_d, cond_wrong, r1_gamma,
                                                    wrong_images=wrong)
                else:
                    out = losses.stackgan2_discriminator_loss(D, x_real, x_fake.detach(), cond_d, cond_wrong,
                                                              wrong_images=wrong, uncond_weight=uncond_loss,
                                                              r1_gamma=r1_gamma)
            d_total = d_total + out["loss"]
        opt_D.zero_grad(set_to_none=True)
        d_total.backward()
        distributed.sync_grads(Ds.parameters())
        opt_D.step()

    # (2) generator: adversarial terms of every stage + KL + DAMSM (attngan) / colour consistency.
    Ds.requires_grad_(False)  # no D gradients wasted in the G step
    with phase("t2i/G adversarial"), amp:
        g_adv, _ = losses.generator_adv_loss(D_fwd, fakes, cond_g, 1.0 if uncond_loss is None else uncond_loss)
    kl = losses.kl_loss(g_out["mu"], g_out["logvar"]) if conditional else torch.zeros((), device=device)
    g_total = g_adv + kl_weight * kl if conditional else g_adv
    dam = cc_loss = torch.zeros((), device=device)
    if damsm_weight > 0:
        def gather(t):  # the DAMSM negatives are the whole global batch, as in one process
            t = t.to(device)
            return distributed.all_gather_with_grad(t) if t.requires_grad else distributed.all_gather(t)

        with phase("t2i/DAMSM term"), amp:
            x_dam = fakes[-1] if damsm_aug is None else losses.shift_flip(fakes[-1], damsm_aug)
            dam = losses.generator_damsm_loss(image_encoder, x_dam, e, e_bar, lengths, class_ids,
                                              damsm_config.gamma1, damsm_config.gamma2, damsm_config.gamma3,
                                              gather=gather if distributed.current().world > 1 else None,
                                              hard=e_hard)["loss"]
        g_total = g_total + damsm_weight * dam
    if cc is not None:
        cc_loss = losses.tree_color_consistency(fakes, *cc, detach=cc_detach)
        g_total = g_total + cc_loss
    stats = torch.stack([t.detach().float().reshape(()) for t in (d_total, g_total, g_adv, kl, dam, cc_loss)])
    vals = dict(zip(("d", "g", "g_adv", "kl", "damsm", "cc"), distributed.all_mean(stats).tolist()))
    if check is not None:
        check(vals)
    with phase("t2i/G backward"):
        opt_G.zero_grad(set_to_none=True)
        g_total.backward()
        distributed.sync_grads(G.parameters())
        opt_G.step()
    return vals


def lr_decay_factor(step, total, n):
    """--lr-decay-steps N: the learning rates' factor for step `step` (0-based) of `total`: 1 until the last N
    steps, then linear towards 0, (total - step) / N, so the last step trains at 1/N. A function of the step and
    the run's length alone: a run resumed with the same --steps follows the uninterrupted run's schedule (one
    resumed with more steps follows the longer run's from there on)."""
    return min(1.0, max(total - step, 0) / n)


def model_config(cfg, image_size, text_dim):
    """The generator config of an AttnGAN / StackGAN++ run (cfg: its TrainConfig) on images of `image_size` px with
    text features of `text_dim`. Raises ModelConfigError for stages that do not fit."""
    from t2icli.models.attngan import GeneratorConfig

    return GeneratorConfig(image_size=int(image_size), stages=cfg.stages, gf_dim=cfg.gf_dim, df_dim=cfg.df_dim,
                           z_dim=cfg.z_dim, cond_dim=cfg.cond_dim, text_dim=int(text_dim),
                           attention=cfg.kind == "attngan", res_blocks=cfg.r_num,
                           conditional=not getattr(cfg, "unconditional", False)).validate()


def networks(cfg, gcfg):
    """(G, Ds) of the run, freshly built (not initialised): G for `gcfg`, one D per stage, whose conditional heads
    see the sentence feature or (StackGAN++ --d-condition mu) the CA mean."""
    from t2icli.models.attngan import Generator, build_discriminators

    mu = getattr(cfg, "d_condition", "sentence") == "mu"
    return Generator(gcfg), build_discriminators(gcfg, condition_dim=gcfg.cond_dim if mu else None)


def network_counts(cfg, gcfg):
    """{"G": n, "D<side>": n per stage} parameter counts of the run's networks, built on the meta device."""
    from t2icli.models import parameter_count

    with torch.device("meta"):
        G, Ds = networks(cfg, gcfg)
    return dict({"G": parameter_count(G)}, **{f"D{s}": parameter_count(D) for s, D in zip(gcfg.sizes, Ds)})


class TreeTrainer(GANTrainer):
    """AttnGAN / StackGAN++ on the shared loop: set-up, the step, the snapshot (see the module docstring)."""

    log_keys = ("d", "g", "g_adv", "kl", "damsm", "cc")

    def __init__(self, cfg, env, resume=None):
        super().__init__(cfg, env, resume)
        self.use_damsm = cfg.kind == "attngan" and cfg.damsm_weight > 0
        self.use_cc = cfg.color_consistency and cfg.stages > 1
        self.conditional = not getattr(cfg, "unconditional", False)
        self.editor = None  # edited captions: the DAMSM term's hard negatives and/or D's edited wrong pairs
        flag = (f"--hard-negatives {cfg.hard_negatives}" if self.use_damsm and getattr(cfg, "hard_negatives", 0)
                else f"--edited-wrong {cfg.edited_wrong}" if getattr(cfg, "edited_wrong", 0) else None)
        if flag is not None:
            from t2icli.data.negatives import captions_of, editor_for

            self.editor = editor_for(self.vocab, flag, cfg.data,
                                     captions_of(self.train_ds) if getattr(cfg, "natural_edits", False) else None)

    def stage_sizes(self, image_size):
        from t2icli.models.attngan import check_stages, stage_sizes
        from t2icli.models.config import ModelConfigError

        try:
            check_stages(image_size, self.cfg.stages)
        except ModelConfigError as exc:
            raise RunError(f"{exc} (--data {self.cfg.data})") from None
        return stage_sizes(image_size, self.cfg.stages)

    def model_config(self):
        return model_config(self.cfg, self.resolutions[-1], self.text_dim)

    def check_resume(self, ckpt, path):
        super().check_resume(ckpt, path)
        old = (ckpt.get("train_config") or {}).get("d_condition", "sentence")
        if old != getattr(self.cfg, "d_condition", "sentence"):  # the Ds' conditional heads differ in width
            raise RunError(f"--resume {path}: the checkpoint's discriminators were trained with --d-condition {old}")

    def build(self, ckpt):
        from t2icli.models.attngan import init_weights

        cfg, gcfg = self.cfg, self.model_config()
        G, Ds = networks(cfg, gcfg)
        self.G = G = distributed.sync_batchnorm(init_weights(G)).to(self.device)  # global-batch BN
        self.Ds = Ds = distributed.sync_batchnorm(init_weights(Ds)).to(self.device)
        self.opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
        self.opt_D = torch.optim.Adam(Ds.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))  # = one Adam per D
        self.G_ema = EMA(G, cfg.ema_beta) if cfg.ema else None
        self.G_fwd, self.D_fwd = compiled(G, cfg.compile), [compiled(D, cfg.compile) for D in Ds]  # what steps call
        self.amp = distributed.autocast(self.device, cfg.precision)
        if self.embeddings is None:
            self.p_tokens, self.p_lengths, self.p_texts = self.prompt_tokens()
        else:  # char-CNN-RNN: no encoder for new text; the first training images' embeddings
            self.p_t, self.p_texts = self.prompt_features()
        self.p_z, self.p_eps = self.fixed_noise(len(self.p_texts), cfg.cond_dim)
        G.train()
        Ds.train()
        return TrainState({"G": G, "Ds": Ds, "opt_G": self.opt_G, "opt_D": self.opt_D, "G_ema": self.G_ema},
                          meta=self.meta_entries(),
                          missing={"G_ema": "the checkpoint has no EMA generator (trained with --no-ema)"})

    def describe(self):
        cfg = self.cfg
        return (f"{cfg.kind}: {cfg.stages} stages {self.resolutions} px, G {self.count(self.G):.2f}M / Ds "
                f"{self.count(self.Ds):.2f}M parameters, "
                + ("unconditional, " if not self.conditional else f"text {self.text_source} ({self.text_dim}-d), ")
                + f"{len(self.train_ds)} train / {len(self.test_ds)} {self.test_ds.split} images, batch "
                  f"{cfg.batch_size}, {self.loop.total} steps, device {self.device}")

    def step(self, batch, gen):
        cfg, device = self.cfg, self.device
        if cfg.lr_decay_steps is not None:
            f = lr_decay_factor(self.loop.step, self.loop.total, cfg.lr_decay_steps)
            set_lr(self.opt_G, cfg.lr_g * f)
            set_lr(self.opt_D, cfg.lr_d * f)
        tokens = batch["tokens"].to(device)  # [b, T]
        B = tokens.shape[0] * self.env.world  # the global batch
        z = distributed.local_rows(torch.randn(B, cfg.z_dim, generator=gen)).to(device)  # [b, z_dim] z ~ N(0, I)
        eps = distributed.local_rows(torch.randn(B, cfg.cond_dim, generator=gen)).to(device)  # [b, cond_dim]
        aug = None  # [b, 3] shift x, shift y, mirror draws for the DAMSM term (global batch, like z)
        if self.use_damsm and cfg.damsm_augment:
            aug = distributed.local_rows(torch.rand(B, 3, generator=gen)).to(device)
        hard = None  # [b, K, T], [b, K]: edited copies of each caption for the DAMSM term
        if self.use_damsm and getattr(cfg, "hard_negatives", 0):
            u = distributed.local_rows(torch.rand(B, cfg.hard_negatives, 3, generator=gen))  # [b, K, 3]
            hard = self.editor.edit(batch["tokens"], batch["lengths"], u)
        d_edits = None  # [b, T], [b]: D's wrong condition = the row's own caption edited, where `use`
        if getattr(cfg, "edited_wrong", 0):
            u = distributed.local_rows(torch.rand(B, 1, 4, generator=gen))  # [b, 1, 3 edit draws + 1 row draw]
            edited, valid = self.editor.edit(batch["tokens"], batch["lengths"], u[..., :3])  # [b, 1, T], [b, 1]
            d_edits = (edited[:, 0].to(device), valid[:, 0] & (u[:, 0, 3] < cfg.edited_wrong))
        wrong = None  # S x [b, 3, s_i, s_i]: an image of another class beside each real one (StackGAN-v2)
        if getattr(cfg, "wrong", "captions") == "images" and self.conditional:
            wrong = self.wrong_images(batch, gen)
        vals = train_step(self.G_fwd, self.D_fwd, self.G, self.Ds, self.opt_G, self.opt_D, self.text_encoder,
                          self.image_encoder, batch["images"], tokens, batch["lengths"],
                          batch["class_ids"] if getattr(cfg, "class_mask", True) else None, z, eps,
                          amp=self.amp, kl_weight=cfg.kl_weight,
                          damsm_weight=cfg.damsm_weight if self.use_damsm else 0.0, damsm_config=self.damsm_config,
                          damsm_aug=aug, cc=(cfg.cc_lambda1, cfg.cc_lambda2) if self.use_cc else None,
                          r1_gamma=self.r1_gamma(), check=self.loop.check_finite,
                          e_bar=None if self.embeddings is None else self.condition(batch), wrong_images=wrong,
                          d_condition=getattr(cfg, "d_condition", "sentence"),
                          uncond_loss=getattr(cfg, "uncond_loss", None), cc_detach=cfg.cc_detach,
                          conditional=self.conditional, hard=hard, d_edits=d_edits)
        if self.G_ema is not None:
            self.G_ema.update(self.G)
        return vals

    def r1_gamma(self):
        """The R1 weight of this step: lazy regularisation (StyleGAN2) computes the penalty on every r1_every-th
        step only, weighted r1_every times, so its average weight stays r1_gamma."""
        every = self.cfg.r1_every
        return self.cfg.r1_gamma * every if self.loop.step % every == 0 else 0.0

    def sampler(self):
        """The generator snapshots and the export use: the EMA copy (or G), with --standing-stats N its BatchNorm
        statistics re-estimated on N training captions (gan.standing_stats; computed once per step)."""
        net = super().sampler()
        n = getattr(self.cfg, "standing_stats", 0)
        if not n:
            return net
        if getattr(self, "_standing", (None,))[0] != self.loop.step:
            self._standing = (self.loop.step, standing_stats(net, self.text_encoder, self.train_ds, n,
                                                             self.cfg.batch_size, self.cfg.seed))
        return self._standing[1]

    def snapshot(self, final=False):
        """Grid of every stage at fixed noise/prompts, the attention map of the last attention stage, and the
        generated-image R-precision."""
        from t2icli.viz import save_image_grid, to_uint8
        from t2icli.viz.attention import save_attention_blocks

        t0, net = time.perf_counter(), self.sampler()
        was = net.training
        net.eval()
        try:
            if self.embeddings is None:
                res = generate(net, self.text_encoder, self.p_tokens, self.p_lengths, z=self.p_z, eps=self.p_eps,
                               return_attn=True)
                stage_imgs = [to_uint8(x) for x in res["images"]]  # S x [n, s, s, 3]
            else:  # char-CNN-RNN embeddings of the first training images
                res = {"attn": []}
                stage_imgs = self.draw(net, self.p_t, self.p_z.to(self.device), self.p_eps.to(self.device))
            n = len(self.p_texts)
            grid = save_image_grid(self.grid_path(), [[im[k] for im in stage_imgs] for k in range(n)],
                                   row_labels=self.p_texts, col_labels=[f"{s}px" for s in self.resolutions])
            attn_path = None
            if res["attn"]:
                beta = res["attn"][-1]  # [n, T, s^2] of the last attention stage
                s = math.isqrt(beta.shape[2])
                lengths = [int(v) for v in self.p_lengths]
                words = [[self.vocab[int(t)] for t in self.p_tokens[k, : lengths[k]]] for k in range(n)]
                alphas = [beta[k, : lengths[k]].reshape(-1, s, s) for k in range(n)]
                attn_path = save_attention_blocks(self.loop.run.path(f"attn{self.loop.step:08d}.png"),
                                                  stage_imgs[-1], words, alphas)
            rp = self.rprecision(net, final) if self.conditional else None  # unconditional: no text to match
        finally:
            net.train(was)
        return self.record(grid, rp, t0, attention=attn_path)


def train(cfg, resume=None, progress=True):
    """Train an AttnGAN (cfg: AttnGANTrainConfig) or StackGAN++ (StackGAN2TrainConfig) into run folder cfg.out.

    resume: None, "latest" or a checkpoint / run folder; progress: the progress bar on stderr. Returns the dict of
    training.loop.fit with "rprecision" (the final generated-image R-precision, or None), "snapshot" (the last
    grid) and "attention" (its attention picture). Raises T2IError subclasses naming the flag or path.
    """
    if not isinstance(cfg, (AttnGANTrainConfig, StackGAN2TrainConfig)):
        raise TypeError(f"train() takes an AttnGANTrainConfig or StackGAN2TrainConfig, got {type(cfg).__name__}")
    return fit(cfg, TreeTrainer, resume=resume, progress=progress)
