"""The DAMSM training loop (AttnGAN's pretrain_DAMSM): text + image encoders, exact resume, test evaluation.

`train_damsm(data, out, ...)` trains both encoders on a prepared dataset into a run folder (see
training/run.py), evaluates the test split after every `eval_every` epochs (losses, real-image
R-precision, word-attention maps of fixed test images), and writes the inference export RUN/damsm.pt
that `train attngan`, `sample` and `eval` load with `t2icli.models.damsm.load_damsm`.

Determinism: the data order/augmentation is a pure function of (seed, epoch, index) and the global torch RNG
(dropout) is reseeded every step from (seed, rank, step), so resuming after N steps continues bit-for-bit like
an uninterrupted run (on CPU).

Distributed (torchrun, see training/distributed.py): `batch_size` is the global batch; each rank encodes its rows
(both encoders wrapped in DDP), the features of every rank are gathered with gradient and every rank computes the
DAMSM loss of the whole global batch, so the in-batch negatives — and the loss — are those of one process at the
same batch (BatchNorm synchronised; dropout masks differ, being per rank). Only rank 0 evaluates and writes.

Precision: "bf16" autocasts the image encoder's forward pass on CUDA; the text encoder (LSTM), the scores and the
loss stay fp32. `compile` wraps the image encoder in torch.compile (the LSTM's packed sequences would break it).
"""

import contextlib
import dataclasses
import math
import os
import time

import numpy as np
import torch

from t2icli import losses
from t2icli.metrics.rprecision import rprecision_from_features
from t2icli.models.damsm import DAMSMConfig, build_damsm, save_damsm
from t2icli.models.inception import InceptionWeightsError, load_inception_weights
from t2icli.training import distributed
from t2icli.training.run import RunError, load_checkpoint, rng_state, set_rng_state

__all__ = ["train_damsm", "evaluate_damsm", "small_image_size", "save_attention_png", "train_loss"]

LOSS_KEYS = ("loss", "w1", "w2", "s1", "s2")


def small_image_size(stored, grid=8, cap=64):
    """Input side of the small encoder: the largest grid * 2^k <= min(stored, cap) (64 for toybirds)."""
    size = grid
    while size * 2 <= min(stored, cap):
        size *= 2
    if size < 2 * grid:
        raise RunError(f"images of {stored} px are too small for the small encoder (needs >= {2 * grid})")
    return size


def _lr_at(lr, epoch):
    """AttnGAN's schedule: x0.98 per epoch, not below lr/10."""
    return max(lr * 0.98 ** epoch, lr / 10)


def _batch_to(batch, device):
    images = batch["images"][0].to(device, non_blocking=True)  # [B, 3, S, S]
    return images, batch["tokens"].to(device), batch["lengths"], batch["class_ids"]


def train_loss(text_encoder, image_encoder, images, tokens, lengths, class_ids, cfg, amp=None):
    """The DAMSM loss of one training step over the GLOBAL batch, computed identically on every rank.

    text_encoder / image_encoder: the encoders (or their DDP / compiled wrappers); images [b, 3, S, S], tokens
    [b, T], lengths [b], class_ids [b]: this rank's rows. Features are gathered from every rank with gradient
    (distributed.all_gather_with_grad) before the all-pairs scores, so the negatives are the whole global batch.
    amp: the autocast context of the image encoder (None = fp32). Returns the loss dict of losses.damsm_loss.
    """
    device = images.device
    with amp if amp is not None else contextlib.nullcontext():
        f, f_bar = image_encoder(images)  # [b, D, H', W'], [b, D]
    e, e_bar = text_encoder(tokens, lengths)  # [b, D, T], [b, D]
    gather = distributed.all_gather_with_grad
    f, f_bar, e, e_bar = gather(f.float()), gather(f_bar.float()), gather(e), gather(e_bar)  # [B, ...] global
    lengths = distributed.all_gather(torch.as_tensor(lengths).to(device))  # [B]
    class_ids = distributed.all_gather(torch.as_tensor(class_ids).to(device))  # [B]
    word, sent = losses.damsm_scores(f, e, lengths, f_bar, e_bar, cfg.gamma1, cfg.gamma2)  # [B, B] each
    return losses.damsm_loss(word, sent, class_ids, cfg.gamma3)


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


def save_attention_png(path, images, words, alphas, tile=None):
    """Word-attention picture: one block per image, a word row over [image | one heat map per word].

    images: uint8 [K, S, S, 3]; words: K lists of words; alphas: K tensors [T_k, H', W'] (T_k = len(words[k])).
    """
    from PIL import Image, ImageDraw

    from t2icli.viz.grid import save_png

    K, S = len(images), images.shape[1]
    tile = tile or max(64, S)
    cols = 1 + max(len(w) for w in words)
    text_h = 14
    canvas = Image.new("RGB", (cols * tile, K * (tile + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k in range(K):
        y = k * (tile + text_h)
        base = Image.fromarray(np.asarray(images[k])).resize((tile, tile), Image.BILINEAR)
        canvas.paste(base, (0, y + text_h))
        draw.text((2, y + 1), "image", fill=(0, 0, 0))
        grey = np.asarray(base.convert("L").convert("RGB"), dtype=np.float32) / 255.0  # [tile, tile, 3]
        for t, word in enumerate(words[k]):
            a = alphas[k][t][None, None]  # [1, 1, H', W']
            a = torch.nn.functional.interpolate(a, size=(tile, tile), mode="bilinear", align_corners=False)[0, 0]
            a = ((a - a.min()) / (a.max() - a.min()).clamp_min(1e-12)).numpy()[..., None]  # [tile, tile, 1] in [0, 1]
            heat = np.concatenate([np.clip(3 * a, 0, 1), np.clip(3 * a - 1, 0, 1), np.clip(3 * a - 2, 0, 1)], -1)
            mix = (0.45 * grey + 0.55 * heat) * 255.0
            x = (t + 1) * tile
            canvas.paste(Image.fromarray(mix.clip(0, 255).astype(np.uint8)), (x, y + text_h))
            draw.text((x + 2, y + 1), word[: max(1, tile // 6)], fill=(0, 0, 0))
    save_png(canvas, path)


def _check_resume(ckpt, cfg, vocab, path):
    """Refuse a checkpoint whose vocabulary or model config differs from this run's. Raises RunError."""
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


def train_damsm(data, out, *, epochs=600, batch_size=48, lr=0.002, image_encoder="small", inception_weights=None,
                device="cpu", seed=0, resume=None, max_minutes=None, max_steps=None, gamma1=4.0, gamma2=5.0,
                gamma3=10.0, eval_every=1, n_attention=8, keep_checkpoints=3, small_width=16, grad_clip=0.25,
                rprecision_runs=10, progress=True, num_workers=0, log_every=None, small_pool="avgmax",
                precision="fp32", compile=False, dropout=0.5, checkpoint_every=None):
    """Train the DAMSM text and image encoders on prepared dataset `data` into run folder `out`.

    Stops after `epochs` epochs, `max_steps` optimiser steps in total, or `max_minutes` of training in
    this invocation, whichever comes first; then evaluates the test split, checkpoints, and writes
    RUN/damsm.pt. resume: None, "latest" or a checkpoint/run path (see training.run.open_run). A checkpoint
    is written at the end of every epoch and, with checkpoint_every=N, also every N steps within an epoch.
    batch_size is the global batch (split over the processes of a torchrun job); precision "fp32" | "bf16"
    (CUDA autocast of the image encoder); compile: torch.compile the image encoder; dropout: of the word embeddings.
    Returns {"run_dir", "export", "step", "epoch", "samples_per_s", "train_seconds", "test": {...},
    "rprecision": {"mean", "std", "runs", "n_negatives", "n"} or None, "is_main", "world"} ("test" and
    "rprecision" are None on ranks other than 0).
    Raises t2icli.data.DataError (bad data), RunError (run/resume/weights/NaN problems).
    """
    if precision not in ("fp32", "bf16"):
        raise RunError(f"--precision {precision!r}: choose fp32 or bf16")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise RunError(f"--checkpoint-every {checkpoint_every}: must be >= 1")
    return distributed.launch(_train_damsm, device, batch_size, dict(locals()), RunError)


def _train_damsm(env, data, out, *, epochs, batch_size, lr, image_encoder, inception_weights, device, seed, resume,
                 max_minutes, max_steps, gamma1, gamma2, gamma3, eval_every, n_attention, keep_checkpoints,
                 small_width, grad_clip, rprecision_runs, progress, num_workers, log_every, small_pool, precision,
                 compile, dropout, checkpoint_every):
    from t2icli.data import PreparedDataset, load_meta, make_loader

    meta = load_meta(data)
    if image_encoder not in ("small", "inception_v3"):
        raise RunError(f"--image-encoder {image_encoder!r}: choose small or inception_v3")
    if image_encoder == "inception_v3" and inception_weights is None and resume is None:
        raise RunError("--image-encoder inception_v3 needs --inception-weights PATH (torchvision ImageNet weights): "
                       "a randomly initialised frozen backbone is useless. Use --image-encoder small to train "
                       "from scratch.")
    size = small_image_size(int(meta["image_size"])) if image_encoder == "small" else int(meta["image_size"])
    train_ds = PreparedDataset(data, "train", resolutions=(size,), train=True, seed=seed)
    test_split = "test" if "test" in meta["splits"] else "train"
    test_ds = PreparedDataset(data, test_split, resolutions=(size,), train=False, seed=seed)
    if len(train_ds) < batch_size:
        raise RunError(f"--batch-size {batch_size} is larger than the training split ({len(train_ds)} images)")
    vocab = list(train_ds.vocab)
    cfg = DAMSMConfig(vocab_size=len(vocab), word_limit=int(meta["word_limit"]), image_size=size,
                      image_encoder=image_encoder, small_width=small_width, small_pool=small_pool,
                      gamma1=gamma1, gamma2=gamma2, gamma3=gamma3, dropout=dropout)
    train_config = {
        "kind": "damsm", "data": os.path.abspath(os.fspath(data)), "epochs": epochs, "batch_size": batch_size,
        "lr": lr, "image_encoder": image_encoder,
        "inception_weights": None if inception_weights is None else os.path.abspath(inception_weights),
        "device": str(device), "seed": seed, "max_minutes": max_minutes, "max_steps": max_steps,
        "eval_every": eval_every, "grad_clip": grad_clip, "model": cfg.to_dict(), "precision": precision,
        "compile": bool(compile), "world_size": env.world,
        "dataset": {k: meta.get(k)
                    for k in ("source", "image_size", "word_limit", "vocab_size", "n_classes", "splits")},
    }
    run = distributed.open_run(out, train_config, resume=resume, keep=keep_checkpoints)
    progress = progress and env.is_main
    ckpt = None
    if run.resume_from is not None:
        ckpt = load_checkpoint(run.resume_from)
        # Architecture details that have no flag come from the checkpoint (older runs predate small_pool).
        cfg = dataclasses.replace(cfg, small_pool=ckpt.get("model_config", {}).get("small_pool", "avg"))
        _check_resume(ckpt, cfg, vocab, run.resume_from)

    torch.manual_seed(seed)
    model = distributed.sync_batchnorm(build_damsm(cfg)).to(device)  # global-batch BN statistics under torchrun
    if image_encoder == "inception_v3" and run.resume_from is None:
        try:
            load_inception_weights(model.image_encoder.backbone, inception_weights)
        except InceptionWeightsError as exc:
            raise RunError(f"--inception-weights {inception_weights}: {exc}") from None
    text_fwd = distributed.wrap(model.text_encoder)  # DDP (world > 1): gradients averaged during backward
    image_fwd = distributed.wrap(model.image_encoder)
    if compile:
        image_fwd = torch.compile(image_fwd)
    amp = distributed.autocast(device, precision)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))
    step, epoch, batch_in_epoch, evaluated_at = 0, 0, 0, -1
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        step, epoch, batch_in_epoch = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch"])
        evaluated_at = int(ckpt.get("evaluated_at", -1))
        run.log(f"resumed at step {step} (epoch {epoch}, batch {batch_in_epoch})")
    n_params = sum(p.numel() for p in params)
    run.log(f"DAMSM {image_encoder}: {n_params / 1e6:.2f}M trainable parameters, D={cfg.dim}, image {size}px, "
            f"{len(train_ds)} train / {len(test_ds)} {test_split} images, vocab {len(vocab)}, device {device}"
            + env.describe(batch_size))

    per_epoch = len(train_ds) // batch_size
    total = epochs * per_epoch if max_steps is None else min(epochs * per_epoch, max_steps)
    deadline = None if max_minutes is None else time.perf_counter() + 60.0 * max_minutes
    log_every = log_every or max(1, per_epoch // 4)

    def checkpoint():
        if not env.is_main:
            return None
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise RunError(f"weights are not finite at step {step} (epoch {epoch}); stopped without saving "
                           f"(the last checkpoint in {run.path('checkpoints')} is intact). Try a lower --lr.")
        state = {"step": step, "epoch": epoch, "batch": batch_in_epoch, "evaluated_at": evaluated_at,
                 "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(),
                 "model_config": cfg.to_dict(), "vocab": vocab, "train_config": train_config}
        return run.save_checkpoint(state, step)

    def evaluate(final=False):
        nonlocal evaluated_at
        t0 = time.perf_counter()
        rng = rng_state()  # evaluation must not move the training RNG streams (exact resume)
        res = evaluate_damsm(model, test_ds, cfg, batch_size, device, runs=rprecision_runs if final else 3,
                             seed=seed, n_attention=n_attention)
        set_rng_state(rng)
        if res["attention"] is not None:
            save_attention_png(run.path(f"attn{step:08d}.png"), *res["attention"])
        evaluated_at = step
        res["seconds"] = time.perf_counter() - t0
        return res

    console, bar = None, None
    if progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        bar = Progress(TextColumn("[bold]damsm[/] ep {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console, transient=False)
        run.console = console
        bar.start()
        task = bar.add_task("train", total=total, completed=min(step, total), epoch=epoch, info="")

    train_seconds, samples, stop = 0.0, 0, None
    running = {k: 0.0 for k in LOSS_KEYS}
    running_n = 0
    result_test = None
    try:
        while stop is None:
            if epoch >= epochs:
                stop = "epochs"
                break
            if max_steps is not None and step >= max_steps:
                stop = "steps"
                break
            for g in opt.param_groups:
                g["lr"] = _lr_at(lr, epoch)
            loader = make_loader(train_ds, batch_size, shuffle=True, drop_last=True, seed=seed, epoch=epoch,
                                 start_batch=batch_in_epoch, num_workers=num_workers, rank=env.rank, world=env.world)
            rng = torch.get_rng_state()
            batches = iter(loader)  # DataLoader draws a base seed from the global RNG; keep dropout's stream intact
            torch.set_rng_state(rng)
            model.train()
            t0 = time.perf_counter()
            for batch in batches:
                images, tokens, lengths, class_ids = _batch_to(batch, device)  # this rank's rows
                torch.manual_seed(distributed.seed_for(seed, env.rank, step))  # dropout: f(seed, rank, step)
                out = train_loss(text_fwd, image_fwd, images, tokens, lengths, class_ids, cfg, amp)  # global loss
                loss_value = out["loss"].item()
                if not math.isfinite(loss_value):
                    raise RunError(f"loss is {loss_value} at step {step + 1} (epoch {epoch}); stopped without saving "
                                   f"(the last checkpoint in {run.path('checkpoints')} is intact). Try a lower --lr.")
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                torch.nn.utils.clip_grad_norm_(model.text_encoder.parameters(), grad_clip)  # AttnGAN's RNN clip
                opt.step()
                step += 1
                batch_in_epoch += 1
                samples += len(class_ids) * env.world
                for k in LOSS_KEYS:
                    running[k] += out[k].item()
                running_n += 1
                now = time.perf_counter()
                if bar is not None:
                    sps = samples / max(train_seconds + now - t0, 1e-9)
                    bar.update(task, completed=min(step, total), epoch=epoch,
                               info=f"loss {loss_value:6.3f} w {out['w1'].item() + out['w2'].item():6.3f} "
                                    f"s {out['s1'].item() + out['s2'].item():6.3f} {sps:6.0f} samples/s")
                if step % log_every == 0 and bar is None:
                    run.log(f"step {step} epoch {epoch} loss {loss_value:.4f}")
                if max_steps is not None and step >= max_steps:
                    stop = "steps"
                elif deadline is not None and distributed.any_rank(now >= deadline):  # every rank stops together
                    stop = "time"
                if stop:
                    break
                if checkpoint_every and step % checkpoint_every == 0 and batch_in_epoch < per_epoch:
                    checkpoint()  # within the epoch (the epoch's end writes its own); resumes at this batch
            train_seconds += time.perf_counter() - t0
            if batch_in_epoch >= per_epoch:  # epoch complete
                epoch += 1
                batch_in_epoch = 0
                if epoch % eval_every == 0 and epoch < epochs and stop is None and env.is_main:
                    res = evaluate()
                    rec = _stats_record(step, epoch, _lr_at(lr, epoch - 1), running, running_n, res, samples,
                                        train_seconds)
                    run.append_stats(rec)
                    run.log(_describe(rec))
                    running, running_n = {k: 0.0 for k in LOSS_KEYS}, 0
                if stop is None:
                    checkpoint()
        run.log(f"stopping ({stop}) at step {step}, epoch {epoch}")
        if env.is_main:
            res = evaluate(final=True)
            rec = _stats_record(step, epoch, _lr_at(lr, max(epoch - 1, 0)), running, running_n, res, samples,
                                train_seconds, final=True)
            run.append_stats(rec)
            run.log(_describe(rec))
            checkpoint()
            result_test = res
    finally:
        if bar is not None:
            bar.stop()
            run.console = None
    export = run.path("damsm.pt")
    if env.is_main:
        save_damsm(export, model.text_encoder, model.image_encoder, cfg, vocab)
        run.log(f"wrote {export}")
    return {"run_dir": run.dir, "export": export, "step": step, "epoch": epoch, "stop": stop,
            "samples_per_s": samples / train_seconds if train_seconds > 0 else None, "train_seconds": train_seconds,
            "test": result_test["losses"] if result_test else None,
            "rprecision": result_test["rprecision"] if result_test else None,
            "is_main": env.is_main, "world": env.world}


def _stats_record(step, epoch, lr, running, running_n, res, samples, train_seconds, final=False):
    rp = res["rprecision"]
    rec = {"step": step, "epoch": epoch, "lr": lr,
           "train": {k: v / running_n for k, v in running.items()} if running_n else None,
           "test": res["losses"],
           "test_rprecision": None if rp is None else {k: rp[k] for k in ("mean", "std", "n_negatives", "n")},
           "samples_per_s": samples / train_seconds if train_seconds > 0 else None,
           "train_seconds": train_seconds, "eval_seconds": res["seconds"]}
    if final:
        rec["final"] = True
    return rec


def _describe(rec):
    tr = rec["train"]
    rp = rec["test_rprecision"]
    parts = [f"epoch {rec['epoch']} step {rec['step']}"]
    if tr:
        parts.append(f"train loss {tr['loss']:.3f}")
    parts.append(f"test loss {rec['test']['loss']:.3f} (w {rec['test']['w1'] + rec['test']['w2']:.3f}, "
                 f"s {rec['test']['s1'] + rec['test']['s2']:.3f})")
    if rp:
        parts.append(f"R-precision {rp['mean']:.3f}±{rp['std']:.3f}")
    if rec["samples_per_s"]:
        parts.append(f"{rec['samples_per_s']:.0f} samples/s")
    return ", ".join(parts)
