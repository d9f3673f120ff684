"""`t2i train damsm`: the DAMSM text and image encoders (AttnGAN's pretrain_DAMSM.py) on the shared loop.

Both encoders are trained with the DAMSM loss (word + sentence matching of every caption against every image of
the batch, same-class pairs masked). After every `eval_every` epochs the test split is evaluated (losses, real-image
R-precision, word-attention maps of fixed test images, attn<step>.png); the export RUN/damsm.pt is what
`train attngan|stackgan2|stackgan|gancls`, `sample` and `eval` load (models/export.load_damsm). Run folder,
determinism, resume and torchrun: training/loop.py. A checkpoint is written when each epoch ends and, with
--checkpoint-every N, every N steps within it.

The Inception-v3 encoder trains on 299 px crops of the image scaled to 355, as pretrain_DAMSM.py:235-240. Two odd
choices of the reference are flags that its --preset cub-paper | coco-paper sets: --backbone-batch-stats (the frozen
backbone's BatchNorm in training mode, pretrain_DAMSM.py:51) and --reset-adam (a new Adam every epoch, :267-270).

Distributed: each rank encodes its rows (both encoders wrapped in DDP), the features of every rank are gathered with
gradient and every rank computes the DAMSM loss of the whole global batch, so the in-batch negatives, and the loss,
are those of one process at the same batch (BatchNorm synchronised; dropout masks differ, being per rank).

Precision: "bf16" autocasts the image encoder's forward pass on CUDA and on a CPU with native bf16
(distributed.cpu_bf16; ignored, logged, on other CPUs); the text encoder (LSTM), the scores and the
loss stay fp32. `compile` wraps the image encoder in torch.compile (the LSTM's packed sequences would break it).
"""

import contextlib
import dataclasses
import os
import time

import numpy as np
import torch

from t2icli import losses
from t2icli.data.text import shuffle_locally
from t2icli.errors import ConfigError
from t2icli.metrics.rprecision import rprecision_from_features
from t2icli.training import distributed
from t2icli.training.config import DAMSMTrainConfig
from t2icli.training.loop import Trainer, fit
from t2icli.training.run import RunError, rng_state, set_rng_state
from t2icli.training.state import TrainState, set_lr

__all__ = ["train", "DAMSMTrainer", "evaluate_damsm", "small_image_size", "train_loss", "encode_with_edits", "model_config",
           "network_counts", "meta_vocab"]

LOSS_KEYS = ("loss", "w1", "w2", "s1", "s2")
INCEPTION_SIZE = 299  # the Inception-v3 image encoder's input side (AttnGAN cfg/DAMSM/bird.yml BASE_SIZE)


def small_image_size(stored, grid=8, cap=64):
    """Input side of the small encoder: the largest grid * 2^k <= min(stored, cap) (64 for toybirds)."""
    size = grid
    while size * 2 <= min(stored, cap):
        size *= 2
    if size < 2 * grid:
        raise RunError(f"images of {stored} px are too small for the small encoder (needs >= {2 * grid})")
    return size


def model_config(cfg, vocab_size, data_word_limit, stored_size):
    """The DAMSMConfig of a run (cfg: DAMSMTrainConfig) on data with `vocab_size` words, its word limit and its
    stored image side: the small encoder takes small_image_size(stored_size); Inception-v3 takes 299 px crops
    (pretrain_DAMSM.py:235-240: BASE_SIZE 299 crops of the image scaled to 355), not the stored size upsampled;
    --word-limit overrides the data's limit (COCO's DAMSM reads 15 words, its GAN 12)."""
    from t2icli.models.damsm import DAMSMConfig

    size = small_image_size(stored_size, cfg.small_grid) if cfg.image_encoder == "small" else INCEPTION_SIZE
    return DAMSMConfig(vocab_size=int(vocab_size), word_limit=int(cfg.word_limit or data_word_limit), image_size=size,
                       image_encoder=cfg.image_encoder, small_width=cfg.small_width, small_pool=cfg.small_pool,
                       small_grid=cfg.small_grid,
                       gamma1=cfg.gamma1, gamma2=cfg.gamma2, gamma3=cfg.gamma3, dropout=cfg.dropout)


def meta_vocab(data):
    """The vocabulary (list of words) of the prepared dataset `data`."""
    import json

    with open(os.path.join(data, "vocab.json"), encoding="utf-8") as f:
        return json.load(f)


def network_counts(mcfg):
    """({"text_encoder": n, "image_encoder": n}, the same counting only trained parameters) of a DAMSMConfig's
    encoders, built on the meta device (parameter_count: the Inception backbone without its unused heads)."""
    from t2icli.models import parameter_count
    from t2icli.models.damsm import build_damsm

    with torch.device("meta"):
        m = build_damsm(mcfg)
    nets = {"text_encoder": m.text_encoder, "image_encoder": m.image_encoder}
    return ({k: parameter_count(v) for k, v in nets.items()},
            {k: sum(p.numel() for p in v.parameters() if p.requires_grad) for k, v in nets.items()})


def _lr_at(lr, epoch):
    """AttnGAN's schedule: x0.98 per epoch, not below lr/10."""
    return max(lr * 0.98 ** epoch, lr / 10)


def _batch_to(batch, device):
    images = batch["images"][0].to(device, non_blocking=True)  # [B, 3, S, S]
    return images, batch["tokens"].to(device), batch["lengths"], batch["class_ids"]


def encode_with_edits(text_encoder, tokens, lengths, edited=None):
    """Text features of captions and, when given, of their edited copies, in one text-encoder call.

    tokens [b, T], lengths [b]; edited: None or tokens [b, K, T] (data/negatives.py: same lengths as their
    caption). Returns (e [b, D, T], e_bar [b, D], e_hard [b, K, D, T] or None, e_bar_hard [b, K, D] or None).
    """
    if edited is None:
        return (*text_encoder(tokens, lengths), None, None)
    b, K, T = edited.shape
    lengths = torch.as_tensor(lengths)
    e, e_bar = text_encoder(torch.cat([tokens, edited.reshape(b * K, T).to(tokens.device)]),
                            torch.cat([lengths, lengths.repeat_interleave(K)]))  # [b(1+K), D, T], [b(1+K), D]
    return e[:b], e_bar[:b], e[b:].reshape(b, K, -1, T), e_bar[b:].reshape(b, K, -1)


def train_loss(text_encoder, image_encoder, images, tokens, lengths, class_ids, cfg, amp=None, hard=None,
               predictor=None, word_weight=0.0):
    """The DAMSM loss of one training step over the GLOBAL batch, computed identically on every rank.

    text_encoder / image_encoder: the encoders (or their DDP / compiled wrappers); images [b, 3, S, S], tokens
    [b, T], lengths [b], class_ids [b]: this rank's rows. Features are gathered from every rank with gradient
    (distributed.all_gather_with_grad) before the all-pairs scores, so the negatives are the whole global batch.
    amp: the autocast context of the image encoder (None = fp32). hard: None or (tokens [b, K, T], valid [b, K]):
    K edited copies of each caption (data/negatives.py), encoded in the same text-encoder call and scored
    against their own image only (losses.damsm_loss's `hard`). predictor: None or a models.damsm.RegionWordPredictor
    whose masked-word loss on the global batch joins the loss times word_weight. Returns the loss dict of
    losses.damsm_loss, with "wp" and "wp_acc" (the masked-word loss and accuracy) when a predictor is given.
    """
    device = images.device
    with amp if amp is not None else contextlib.nullcontext():
        f, f_bar = image_encoder(images)  # [b, D, H', W'], [b, D]
    e, e_bar, e_hard, e_bar_hard = encode_with_edits(text_encoder, tokens, lengths, None if hard is None else hard[0])
    gather = distributed.all_gather_with_grad
    f, f_bar, e, e_bar = gather(f.float()), gather(f_bar.float()), gather(e), gather(e_bar)  # [B, ...] global
    lengths = distributed.all_gather(torch.as_tensor(lengths).to(device))  # [B]
    if class_ids is not None:  # None: no same-class mask
        class_ids = distributed.all_gather(torch.as_tensor(class_ids).to(device))  # [B]
    word, sent = losses.damsm_scores(f, e, lengths, f_bar, e_bar, cfg.gamma1, cfg.gamma2)  # [B, B] each
    if hard is not None:
        e_hard, e_bar_hard = gather(e_hard), gather(e_bar_hard)  # [B, K, D, T], [B, K, D]
        valid = distributed.all_gather(hard[1].to(device, torch.uint8)).bool()  # [B, K] (bytes: NCCL has no bool)
        hard = (*losses.hard_negative_scores(f, f_bar, e_hard, e_bar_hard, lengths, cfg.gamma1, cfg.gamma2), valid)
    out = losses.damsm_loss(word, sent, class_ids, cfg.gamma3, hard=hard)
    if predictor is not None:
        tokens = distributed.all_gather(tokens.to(device))  # [B, T]
        inside = losses.inside_captions(lengths, tokens.shape[1], device)  # [B, T]
        out["wp"], out["wp_acc"] = losses.word_prediction_loss(predictor(f, tokens, inside), tokens, inside)
        out["loss"] = out["loss"] + word_weight * out["wp"]
    return out


def _forward_loss(model, images, tokens, lengths, class_ids, cfg):
    """Encoders + DAMSM loss of one batch. Returns (loss dict, f, e)."""
    f, f_bar = model.encode_images(images)  # [B, D, H', W'], [B, D]
    e, e_bar = model.encode_text(tokens, lengths)  # [B, D, T], [B, D]
    word, sent = losses.damsm_scores(f, e, lengths, f_bar, e_bar, cfg.gamma1, cfg.gamma2)  # [B, B] each
    return losses.damsm_loss(word, sent, class_ids, cfg.gamma3), (f, e, f_bar, e_bar)


@torch.no_grad()
def evaluate_damsm(model, test_ds, cfg, batch_size, device, n_negatives=99, runs=10, seed=0, n_attention=8):
    """Test losses, real-image R-precision and word attention of the first test images.

    Uses caption choice of the deterministic (train=False) dataset. Returns {"losses": {name: mean},
    "rprecision": dict or None (None if the split is too small), "attention": (images uint8 [K, S, S, 3],
    words [[str]], alpha [[T_k, H', W']]) or None}.
    """
    from t2icli.data import make_loader

    was_training = model.training
    model.eval()
    sums, n_batches, f_bars, e_bars, classes, attention = {k: 0.0 for k in LOSS_KEYS}, 0, [], [], [], None
    loader = make_loader(test_ds, batch_size, shuffle=False, drop_last=False, seed=seed)
    for batch in loader:
        images, tokens, lengths, class_ids = _batch_to(batch, device)
        out, (f, e, f_bar, e_bar) = _forward_loss(model, images, tokens, lengths, class_ids, cfg)
        if len(class_ids) > 1:  # a batch of one has no negatives: its loss means nothing
            for k in LOSS_KEYS:
                sums[k] += float(out[k])
            n_batches += 1
        f_bars.append(f_bar.float().cpu())
        e_bars.append(e_bar.float().cpu())
        classes.append(class_ids)
        if attention is None and n_attention > 0:
            k = min(n_attention, len(class_ids))
            alpha = losses.damsm_word_attention(f[:k], e[:k], lengths[:k], cfg.gamma1).float().cpu()  # [k, T, H', W']
            idx = batch["indices"][:k].numpy()
            imgs = np.stack([np.asarray(test_ds.images_uint8[i]) for i in idx])  # [k, S, S, 3]
            words = [[test_ds.vocab[int(t)] for t in tokens[j, : int(lengths[j])]] for j in range(k)]
            attention = (imgs, words, [alpha[j, : int(lengths[j])] for j in range(k)])
    model.train(was_training)
    f_bar, e_bar, class_ids = torch.cat(f_bars), torch.cat(e_bars), torch.cat(classes).numpy()
    other = (class_ids[:, None] != class_ids[None, :]).sum(1).min() if len(class_ids) else 0
    n_neg = int(min(n_negatives, other))
    rp = rprecision_from_features(f_bar, e_bar, class_ids, n_neg, runs, seed) if n_neg >= 1 else None
    return {"losses": {k: v / max(n_batches, 1) for k, v in sums.items()}, "rprecision": rp, "attention": attention}


def _check_resume(ckpt, cfg, vocab, path):
    """Refuse a checkpoint whose vocabulary or model config differs from this run's. Raises RunError."""
    from t2icli.models.damsm import DAMSMConfig

    old_vocab = list(ckpt.get("vocab", []))
    if old_vocab != list(vocab):
        first = next((i for i, (a, b) in enumerate(zip(old_vocab, vocab)) if a != b), min(len(old_vocab), len(vocab)))
        a = old_vocab[first] if first < len(old_vocab) else "<none>"
        b = vocab[first] if first < len(vocab) else "<none>"
        raise RunError(f"--resume {path}: vocabulary mismatch: the checkpoint has {len(old_vocab)} words, --data has "
                       f"{len(vocab)}; first difference at index {first} ({a!r} vs {b!r}). "
                       "Resume with the same --data.")
    defaults = {f.name: f.default for f in dataclasses.fields(DAMSMConfig) if f.default is not dataclasses.MISSING}
    old = {**defaults, **ckpt.get("model_config", {})}  # fields added since the checkpoint: their defaults
    diff = sorted(k for k in set(old) | set(cfg.to_dict()) if old.get(k) != cfg.to_dict().get(k))
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {cfg.to_dict().get(k)!r}" for k in diff)
        raise RunError(f"--resume {path}: the checkpoint was trained with a different model config ({detail})")


class DAMSMTrainer(Trainer):
    """The DAMSM encoders on the shared loop (see the module docstring)."""

    log_keys = LOSS_KEYS
    log_records = False  # the running means go into the evaluation records
    checkpoint_at_epoch_end = True
    snapshot_at_start = False

    def __init__(self, cfg, env, resume=None):
        from t2icli.data import PreparedDataset, load_meta

        super().__init__(cfg, env, resume)
        if cfg.image_encoder == "inception_v3" and cfg.inception_weights is None and resume is None:
            raise ConfigError("--image-encoder inception_v3 needs --inception-weights PATH (torchvision ImageNet weights): "
                           "a randomly initialised frozen backbone is useless. Use --image-encoder small to train "
                           "from scratch.")
        meta = self.meta = load_meta(cfg.data)
        self.model_config = model_config(cfg, len(meta_vocab(cfg.data)), int(meta["word_limit"]),
                                         int(meta["image_size"]))
        size, words = self.model_config.image_size, self.model_config.word_limit
        self.train_ds = PreparedDataset(cfg.data, "train", resolutions=(size,), train=True, seed=cfg.seed,
                                        word_limit=words, augment=cfg.augment)
        test_split = "test" if "test" in meta["splits"] else "train"
        self.test_ds = PreparedDataset(cfg.data, test_split, resolutions=(size,), train=False, seed=cfg.seed,
                                       word_limit=words)
        self.vocab = list(self.train_ds.vocab)
        self.last_eval = None
        if cfg.word_prediction:  # the masked-word term's loss and accuracy join the logged means
            self.log_keys = LOSS_KEYS + ("wp", "wp_acc")
        if cfg.hard_negatives or cfg.swap_negatives:
            from t2icli.data.negatives import captions_of, editor_for

            flag = f"--hard-negatives {cfg.hard_negatives}" if cfg.hard_negatives else \
                f"--swap-negatives {cfg.swap_negatives}"
            self.editor = editor_for(self.vocab, flag, cfg.data,
                                     captions_of(self.train_ds) if cfg.natural_edits else None)
            if cfg.swap_negatives and "colour" not in self.editor.choices:
                raise ConfigError(f"--swap-negatives {cfg.swap_negatives}: the vocabulary of --data {cfg.data} has no "
                                  f"two colour words to exchange")

    def info(self):
        return {"model": self.model_config.to_dict(), "dataset": {
            k: self.meta.get(k) for k in ("source", "image_size", "word_limit", "vocab_size", "n_classes", "splits")}}

    def check_resume(self, ckpt, path):
        # An architecture detail with no flag comes from the checkpoint (runs before small_pool existed used "avg").
        self.model_config = dataclasses.replace(
            self.model_config, small_pool=ckpt.get("model_config", {}).get("small_pool", "avg"))
        _check_resume(ckpt, self.model_config, self.vocab, path)

    def build(self, ckpt):
        from t2icli.models.damsm import RegionWordPredictor, build_damsm
        from t2icli.models.inception import InceptionWeightsError, load_inception_weights

        cfg = self.cfg
        self.model = model = distributed.sync_batchnorm(build_damsm(self.model_config)).to(self.device)
        if cfg.image_encoder == "inception_v3" and ckpt is None:
            try:
                load_inception_weights(model.image_encoder.backbone, cfg.inception_weights)
            except InceptionWeightsError as exc:
                raise RunError(f"--inception-weights {cfg.inception_weights}: {exc}") from None
        self.text_fwd = distributed.wrap(model.text_encoder)  # DDP (world > 1): gradients averaged in backward
        self.image_fwd = distributed.wrap(model.image_encoder)
        if cfg.compile:
            self.image_fwd = torch.compile(self.image_fwd)
        self.amp = distributed.autocast(self.device, cfg.precision)
        self.params = [p for p in model.parameters() if p.requires_grad]
        items = {"model": model}
        self.predictor = None
        if cfg.word_prediction:  # a training-only head: in the checkpoints (exact resume), not in damsm.pt
            self.predictor = items["word_predictor"] = RegionWordPredictor(len(self.vocab), self.model_config.dim).to(
                self.device)
            self.params += list(self.predictor.parameters())
        self.opt = items["optimizer"] = torch.optim.Adam(self.params, lr=cfg.lr, betas=(0.5, 0.999))
        if cfg.backbone_batch_stats:  # the frozen Inception follows train(): batch statistics, drifting running ones
            model.image_encoder.batch_stats = True
        model.train()
        return TrainState(items,
                          meta={"model_config": self.model_config.to_dict(), "vocab": self.vocab,
                                "train_config": cfg.to_dict()})

    def describe(self):
        head = "" if self.predictor is None else \
            f" (+ {sum(p.numel() for p in self.predictor.parameters()) / 1e6:.2f}M in the word predictor)"
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return (f"DAMSM {self.cfg.image_encoder}: {trainable / 1e6:.2f}M trainable parameters{head}, "
                f"D={self.model_config.dim}, image {self.model_config.image_size}px, {len(self.train_ds)} "
                f"train / {len(self.test_ds)} {self.test_ds.split} images, vocab {len(self.vocab)}, "
                f"device {self.device}")

    def on_epoch(self, epoch):
        set_lr(self.opt, _lr_at(self.cfg.lr, epoch))
        if self.cfg.reset_adam and self.loop.batch == 0:
            # pretrain_DAMSM.py:269-270 builds a new Adam at every epoch: its moments and step counts start from
            # zero. Clearing the state of the same optimiser is that (the TrainState keeps the object), and only at
            # an epoch's first batch, so a run resumed mid-epoch keeps the moments its checkpoint holds.
            self.opt.state.clear()

    def step(self, batch, gen):
        images, tokens, lengths, class_ids = _batch_to(batch, self.device)  # this rank's rows
        if self.cfg.word_shuffle:  # [b, T] keys drawn for the global batch, so N processes permute as one does
            u = distributed.local_rows(torch.rand(len(lengths) * self.env.world, tokens.shape[1], generator=gen))
            tokens = shuffle_locally(tokens.cpu(), lengths.cpu(), u, self.cfg.word_shuffle).to(self.device)
        hard = None
        if self.cfg.hard_negatives:
            u = distributed.local_rows(torch.rand(len(lengths) * self.env.world, self.cfg.hard_negatives, 3,
                                                  generator=gen))  # [b, K, 3] drawn for the global batch
            hard = self.editor.edit(tokens.cpu(), lengths, u)  # [b, K, T], [b, K]
        if self.cfg.swap_negatives:  # drawn after the edits' draws: runs without swaps draw as before
            u = distributed.local_rows(torch.rand(len(lengths) * self.env.world, self.cfg.swap_negatives,
                                                  generator=gen))  # [b, K']
            swapped = self.editor.swap(tokens.cpu(), lengths, u)  # [b, K', T], [b, K']
            hard = swapped if hard is None else tuple(torch.cat(pair, 1) for pair in zip(hard, swapped))
        out = train_loss(self.text_fwd, self.image_fwd, images, tokens, lengths,
                         class_ids if self.cfg.class_mask else None, self.model_config, self.amp,
                         hard=hard, predictor=self.predictor,
                         word_weight=self.cfg.word_prediction)  # the global batch's loss
        self.loop.check_finite({"loss": out["loss"].item()})
        self.opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.text_encoder.parameters(), self.cfg.grad_clip)  # AttnGAN's clip
        self.opt.step()
        return {k: out[k].item() for k in self.log_keys}

    def snapshot_due(self, step, epoch, epoch_ended):
        return epoch_ended and epoch % self.cfg.eval_every == 0

    def checkpoint_every(self):
        return self.cfg.checkpoint_every

    def snapshot(self, final=False):
        """Test losses, real-image R-precision and attention maps; the record holds the running train means."""
        from t2icli.viz.attention import save_attention_blocks

        cfg, loop = self.cfg, self.loop
        t0 = time.perf_counter()
        rng = rng_state()  # evaluation must not move the training RNG streams (exact resume)
        res = evaluate_damsm(self.model, self.test_ds, self.model_config, cfg.batch_size, self.device,
                             runs=cfg.rprecision_runs if final else 3, seed=cfg.seed, n_attention=cfg.n_attention)
        set_rng_state(rng)
        attention = None
        if res["attention"] is not None:
            attention = save_attention_blocks(loop.run.path(f"attn{loop.step:08d}.png"), *res["attention"])
        self.last_eval = res
        rp = res["rprecision"]
        return {"lr": _lr_at(cfg.lr, max(loop.epoch - 1, 0)), "train": loop.running.take(), "test": res["losses"],
                "test_rprecision": None if rp is None else {k: rp[k] for k in ("mean", "std", "n_negatives", "n")},
                "images_per_s": loop.images_per_s(), "train_seconds": loop.train_seconds,
                "eval_seconds": time.perf_counter() - t0,
                "attention": None if attention is None else os.path.basename(attention)}

    def describe_record(self, rec):
        tr, rp, test = rec["train"], rec["test_rprecision"], rec["test"]
        parts = [f"epoch {rec['epoch']} step {rec['step']}"]
        if tr:
            parts.append(f"train loss {tr['loss']:.3f}")
        parts.append(f"test loss {test['loss']:.3f} (w {test['w1'] + test['w2']:.3f}, s {test['s1'] + test['s2']:.3f})")
        if rp:
            parts.append(f"R-precision {rp['mean']:.3f}±{rp['std']:.3f}")
        if rec["images_per_s"]:
            parts.append(f"{rec['images_per_s']:.0f} samples/s")
        return ", ".join(parts)

    def export(self):
        from t2icli.models.export import save_damsm

        return save_damsm(self.loop.run.path("damsm.pt"), self.model.text_encoder, self.model.image_encoder,
                          self.model_config, self.vocab)

    def result(self):
        res = self.last_eval
        return {"test": res["losses"] if res else None, "rprecision": res["rprecision"] if res else None}


def train(cfg, resume=None, progress=True):
    """Train the DAMSM encoders as configured by `cfg` (a DAMSMTrainConfig) into run folder cfg.out.

    Stops after --epochs, --steps or --max-minutes, whichever comes first; then evaluates the test split,
    checkpoints and writes RUN/damsm.pt. resume: None, "latest" or a checkpoint / run folder. Returns the dict of
    training.loop.fit with "test" (final test losses) and "rprecision" (real-image R-precision, or None; both None
    on ranks other than 0). Raises T2IError subclasses naming the flag or path.
    """
    if not isinstance(cfg, DAMSMTrainConfig):
        raise TypeError(f"train() takes a DAMSMTrainConfig, got {type(cfg).__name__}")
    return fit(cfg, DAMSMTrainer, resume=resume, progress=progress)
