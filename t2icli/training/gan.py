"""What the four GAN trainers share: the frozen DAMSM, the text conditioning, snapshots, R-precision and the export.

`GANTrainer.__init__` loads the DAMSM run's encoders and the train / test splits (checked to share a vocabulary),
and, with --text-embeddings (GAN-INT-CLS, StackGAN v1), StackGAN's char-CNN-RNN embeddings of the training split:
`condition(batch)` is then the drawn caption's embedding row instead of the DAMSM sentence feature. Snapshots draw
every stage for fixed prompts (the --prompt texts, then the first test captions) at fixed noise from a private
generator (they never touch the training streams), and measure the generated-image R-precision on the first test
captions with the DAMSM encoders (a quick 3-run estimate during training, the full one at the end).

Distributed helpers for the steps: `global_noise` (this rank's rows of noise drawn for the global batch),
`mismatched` (the global batch's roll), `step_stats` (losses averaged over ranks), `sync_step` (gradients averaged
over ranks, then the optimiser step); see training/distributed.py.
"""

import os
import time

import numpy as np
import torch

from t2icli.training import distributed
from t2icli.training.loop import Trainer
from t2icli.training.run import RunError

__all__ = ["GANTrainer", "generate", "generated_rprecision", "encode_prompts", "fixed_captions", "global_noise",
           "mismatched", "step_stats", "sync_step", "compiled", "eval_mode", "standing_stats"]


# -- generation and R-precision ---------------------------------------------------------------------------
@torch.no_grad()
def generate(G, text_encoder, tokens, lengths, z=None, eps=None, return_attn=False, batch_size=100, generator=None):
    """Images of every stage for captions tokens [n, T] / lengths [n] (G and text_encoder in eval mode).

    z [n, z_dim] and eps [n, cond_dim] default to draws from `generator` (a torch.Generator, CPU) or the
    global RNG. Returns {"images": [x_i [n, 3, s_i, s_i] on CPU], "attn": [beta_i [n, T, .]] (if asked)}.
    """
    from t2icli.models.attngan import word_mask

    cfg = G.config
    device = next(G.parameters()).device
    n = len(tokens)
    if z is None:
        z = torch.randn(n, cfg.z_dim, generator=generator)
    if eps is None:
        eps = torch.randn(n, getattr(cfg, "cond_dim", 0), generator=generator)
    outs, attns = [], []
    for s in range(0, n, batch_size):
        tok = torch.as_tensor(tokens[s : s + batch_size]).to(device)
        e, e_bar = text_encoder(tok, torch.as_tensor(lengths[s : s + batch_size]))  # [b, D, T], [b, D]
        out = G(z[s : s + batch_size].to(device), e_bar, e, word_mask(tok), eps=eps[s : s + batch_size].to(device),
                return_attn=return_attn)
        outs.append([x.float().cpu() for x in out["images"]])
        if return_attn:
            attns.append([b.float().cpu() for b in out.get("attn", [])])
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


@torch.no_grad()
def standing_stats(G, text_encoder, ds, n, batch_size, seed):
    """BigGAN's "standing statistics" (Brock et al. 2019; ajbrock/BigGAN-PyTorch utils.py accumulate_standing_stats):
    a copy of G (eval mode) whose BatchNorm running statistics are the plain average, over ceil(n / batch_size)
    training-mode batches of `batch_size` training captions with fresh noise, of the batch statistics, instead of
    the statistics G carries. AttnGAN samples from an average of G's weights that keeps the trained G's momentum-0.1
    statistics (avg_param_G is G.parameters() alone, swapped into the trained G to save and sample:
    taoxugit/AttnGAN code/trainer.py:159-164, 220, 298-299; miscc/utils.py:304-306 copy_G_params), so the averaged
    weights are normalised with another network's statistics.

    ds: the training split (PreparedDataset); captions, their word cuts and the noise come from `seed` alone (the
    same n captions every time, never the training streams). G's synchronised BatchNorm layers become plain ones
    in the copy (one rank computes this while the others wait). A G without BatchNorm is returned as is.
    """
    from t2icli.models.attngan import word_mask

    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in G.modules()):
        return G
    net = distributed.local_batchnorm(G)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative: every batch counts alike
    rng = np.random.default_rng(int(seed) + 15485863)
    gen = torch.Generator().manual_seed(int(seed) + 15485863)
    device = next(G.parameters()).device
    cfg = G.config
    net.train()
    for s in range(0, int(n), int(batch_size)):
        b = min(int(batch_size), int(n) - s)
        if b < 2:  # a batch of one has no variance
            break
        tokens, lengths = [], []
        for i in rng.integers(len(ds), size=b).tolist():
            c = int(rng.integers(ds.n_captions(i)))
            tok, length = ds.cut_caption_of(i, c, rng)
            tokens.append(torch.from_numpy(tok))
            lengths.append(int(length))
        tok = torch.stack(tokens).to(device)
        e, e_bar = text_encoder(tok, torch.tensor(lengths))  # [b, D, T], [b, D]
        z = torch.randn(b, cfg.z_dim, generator=gen).to(device)
        eps = torch.randn(b, getattr(cfg, "cond_dim", 0), generator=gen).to(device)
        net(z, e_bar, e, word_mask(tok), eps=eps)
    return net.eval()


def encode_prompts(ds, prompts):
    """Caption strings -> (tokens [n, T], lengths [n], texts) with ds's vocabulary. Raises RunError if a prompt
    has no known word; unknown words are dropped (the returned texts are the words kept)."""
    rows, lengths, texts = [], [], []
    for text in prompts:
        ids, _ = ds.encode(text)
        if len(ids) == 0:
            raise RunError(f"--prompt {text!r}: none of its words is in the vocabulary of the data")
        tok, n = ds.cut(ids.numpy(), np.random.default_rng(0))
        rows.append(torch.from_numpy(tok))
        lengths.append(int(n))
        texts.append(" ".join(ds.decode(tok[:n].tolist())))
    return torch.stack(rows), torch.tensor(lengths), texts


def fixed_captions(ds, n):
    """The first n captions of the deterministic split ds: (tokens [n, T], lengths [n], class_ids [n], texts)."""
    items = [ds[i] for i in range(min(max(int(n), 1), len(ds)))]
    tokens = torch.stack([it["tokens"] for it in items])
    lengths = torch.tensor([it["length"] for it in items])
    class_ids = np.array([it["class_id"] for it in items])
    texts = [" ".join(ds.decode(it["tokens"][: it["length"]].tolist())) for it in items]
    return tokens, lengths, class_ids, texts


# -- distributed step helpers ----------------------------------------------------------------------------
def global_noise(gen, b, *dims):
    """This rank's rows of noise drawn for the whole global batch (b * world rows), one tensor per dim in dims, in
    the order given: [b, d] each, on the CPU. One process draws exactly these tensors."""
    B = b * distributed.current().world
    return [distributed.local_rows(torch.randn(B, d, generator=gen)) for d in dims]


def mismatched(t):
    """The wrong captions of this rank's rows: rows of the global batch's roll (losses.mismatched in one process).
    t [b, D] -> [b, D]."""
    from t2icli import losses

    if distributed.current().world == 1:
        return losses.mismatched(t)
    return distributed.local_rows(losses.mismatched(distributed.all_gather(t)))


def step_stats(losses_by_name):
    """{name: scalar tensor} of this rank -> {name: float} averaged over ranks (one all-reduce)."""
    names = list(losses_by_name)
    stats = torch.stack([losses_by_name[k].detach().float().reshape(()) for k in names])
    return dict(zip(names, distributed.all_mean(stats).tolist()))


def sync_step(opt):
    """Average the gradients of an optimiser's parameters over ranks, then step it."""
    distributed.sync_grads([p for group in opt.param_groups for p in group["params"]])
    opt.step()


def compiled(module, on):
    """torch.compile(module) when `on` (what the step calls; keep the module for parameters and state dicts)."""
    return torch.compile(module) if on else module


class eval_mode:
    """Context: `net` and all its submodules in eval mode, each module's own train/eval flag restored after (a
    frozen Stage-I inside a training StackGAN stays frozen)."""

    def __init__(self, net):
        self.modes = [(m, m.training) for m in net.modules()]
        self.net = net

    def __enter__(self):
        self.net.eval()
        return self.net

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode
        return False


# -- the trainer base --------------------------------------------------------------------------------------
class GANTrainer(Trainer):
    """Set-up, snapshots, resume checks and export of a GAN trainer. Subclasses define stage_sizes() (the training
    images' sides), model_config(), build() (setting `self.G`, and `self.G_ema` when kept) and step()."""

    lr_flags = "--lr-g/--lr-d"
    uses_text_embeddings = False  # GAN-INT-CLS and StackGAN v1 may be conditioned on --text-embeddings

    def __init__(self, cfg, env, resume=None):
        from t2icli.data import PreparedDataset, load_meta
        from t2icli.models.export import ExportError, load_damsm

        super().__init__(cfg, env, resume)
        self.meta = meta = load_meta(cfg.data)
        self.resolutions = self.stage_sizes(int(meta["image_size"]))
        try:
            self.text_encoder, self.image_encoder, self.damsm_config, damsm_vocab = load_damsm(cfg.damsm, self.device)
        except ExportError as exc:
            raise RunError(f"--damsm: {exc}") from None
        self.train_ds = PreparedDataset(cfg.data, "train", resolutions=self.resolutions, train=True, seed=cfg.seed,
                                        augment=cfg.augment)
        test_split = "test" if "test" in meta["splits"] else "train"
        self.test_ds = PreparedDataset(cfg.data, test_split, resolutions=(self.resolutions[-1],), train=False,
                                       seed=cfg.seed)
        self.vocab = list(self.train_ds.vocab)
        if list(damsm_vocab) != self.vocab:
            raise RunError(f"--damsm {cfg.damsm} was trained on a different vocabulary ({len(damsm_vocab)} words) than "
                           f"--data {cfg.data} ({len(self.vocab)} words); train the DAMSM on the same prepared dataset")
        for m in (self.text_encoder, self.image_encoder):
            m.eval().requires_grad_(False)
        self.embeddings, self.text_source, self.text_dim = None, "damsm", int(self.damsm_config.dim)
        if getattr(cfg, "text_embeddings", None) is not None:
            from t2icli.data.embeddings import embeddings_for_split

            emb = embeddings_for_split(cfg.text_embeddings, cfg.data, "train", log=self.notes.append)  # [n, E, D]
            self.embeddings = torch.from_numpy(emb)
            self.text_source, self.text_dim = "char-cnn-rnn", int(emb.shape[2])
        self.G = self.G_ema = None
        self.last_rp = self.last_grid = self.last_attention = None
        if getattr(cfg, "wrong", "captions") == "images" and not getattr(cfg, "unconditional", False):
            self.check_wrong_images()  # before the run folder exists: a data set of one class is refused

    def info(self):
        return {"model": self.model_config().to_dict(), "sizes": list(self.resolutions),
                "damsm_config": self.damsm_config.to_dict(), "text_source": self.text_source,
                "dataset": {k: self.meta.get(k) for k in ("source", "image_size", "word_limit", "vocab_size",
                                                          "n_classes")}}

    def stage_sizes(self, image_size):
        """The sides of the training images every stage is trained on, for data of `image_size` px. Raises RunError
        naming --data when the model cannot make that size."""
        raise NotImplementedError

    def model_config(self):
        """The generator's model config (a ConfigDict)."""
        raise NotImplementedError

    def check_resume(self, ckpt, path):
        """Refuse a checkpoint of another kind, model config or vocabulary (RunError naming --resume)."""
        model = self.model_config().to_dict()
        if ckpt.get("kind") != self.cfg.kind or ckpt.get("model_config") != model:
            raise RunError(f"--resume {path}: the checkpoint is a {ckpt.get('kind')} with model config "
                           f"{ckpt.get('model_config')}, this run asks for {self.cfg.kind} with {model}")
        if list(ckpt.get("vocab", [])) != self.vocab:
            raise RunError(f"--resume {path}: vocabulary differs from --data {self.cfg.data}")

    def meta_entries(self):
        """The descriptive entries of every checkpoint."""
        return {"kind": self.cfg.kind, "model_config": self.model_config().to_dict(), "vocab": self.vocab,
                "text_source": self.text_source, "train_config": self.cfg.to_dict()}

    def sampler(self):
        """The generator snapshots and the export use: the EMA copy when kept."""
        return self.G_ema.shadow if self.G_ema is not None else self.G

    # -- conditioning and fixed prompts --------------------------------------------------------------------
    @torch.no_grad()
    def condition(self, batch):
        """t [b, text_dim] of a loader batch: DAMSM sentence features or the drawn caption's char-CNN-RNN row."""
        if self.embeddings is None:
            return self.text_encoder(batch["tokens"].to(self.device), batch["lengths"])[1]  # [b, D]
        E = self.embeddings.shape[1]
        return self.embeddings[batch["indices"], batch["captions"] % E].to(self.device)  # [b, 1024]

    # -- wrong images and caption means (StackGAN-v2, GAN-INT-CLS) -------------------------------------------
    def check_wrong_images(self):
        """Index the training images by class for wrong_images(); raises RunError when the split has one class."""
        classes = np.asarray(self.train_ds.class_ids)
        self._by_class = np.argsort(classes, kind="stable")  # image indices, class by class
        values, starts, counts = np.unique(classes[self._by_class], return_index=True, return_counts=True)
        if len(values) < 2:
            raise RunError(f"--wrong images: every training image of --data {self.cfg.data} has the same class, so "
                           "none has an image of another class to pair with")
        self._class_start = dict(zip(values.tolist(), starts.tolist()))
        self._class_count = dict(zip(values.tolist(), counts.tolist()))

    def wrong_indices(self, batch, gen):
        """For each of this rank's rows, the index of a training image of another class, uniformly among those; the
        draws are made for the global batch from `gen`, so N processes pick what one does. [int] * b.

        StackGAN-v2 (code/datasets.py:299-310) draws a random image and, when it shares the class, draws once more
        (so a same-class image stays possible); Reed et al. (data/donkey_folder_txt.lua:115-157) draw a second class
        and an image of it. Both pair that wrong image with the right text; t2i draws among the other classes'
        images directly.
        """
        classes = batch["class_ids"].tolist()
        u = distributed.local_rows(torch.rand(len(classes) * self.env.world, generator=gen)).tolist()  # [b]
        n, picks = len(self._by_class), []
        for c, v in zip(classes, u):
            start, count = self._class_start[c], self._class_count[c]
            k = min(int(v * (n - count)), n - count - 1)  # the k-th image outside class c, in class order
            picks.append(int(self._by_class[k if k < start else k + count]))
        return picks

    @torch.no_grad()
    def wrong_images(self, batch, gen):
        """The images of wrong_indices(batch, gen) as the step's loader gives them (this epoch's crop and flip of
        each): [x [b, 3, s, s] per resolution] on the device."""
        items = [self.train_ds[j]["images"] for j in self.wrong_indices(batch, gen)]
        return [torch.stack([it[r] for it in items]).to(self.device, non_blocking=True)
                for r in range(len(self.resolutions))]

    @torch.no_grad()
    def mean_condition(self, batch, gen, k):
        """t [b, text_dim]: for each of this rank's rows, the mean of the features of k captions of its image,
        drawn with replacement for the global batch from `gen` (Reed et al.'s numCaption: main_cls_int.lua:228-241,
        data/donkey_folder_txt.lua:150-154). DAMSM: each caption cut to the word limit as the loader does, encoded
        by the frozen text encoder; char-CNN-RNN: k of the image's embedding rows."""
        b = len(batch["indices"])
        B = b * self.env.world
        u = distributed.local_rows(torch.rand(B, k, generator=gen))  # [b, k] which caption
        seeds = distributed.local_rows(torch.randint(0, 2**62, (B, k), generator=gen))  # [b, k] word cuts
        if self.embeddings is not None:
            E = self.embeddings.shape[1]
            rows = (u * E).long().clamp_(max=E - 1)  # [b, k]
            return self.embeddings[batch["indices"][:, None], rows].mean(1).to(self.device)  # [b, 1024]
        ds, tokens, lengths = self.train_ds, [], []
        for i, idx in enumerate(batch["indices"].tolist()):
            n = ds.n_captions(idx)
            for j in range(k):
                c = min(int(u[i, j] * n), n - 1)
                tok, length = ds.cut_caption_of(idx, c, np.random.default_rng(int(seeds[i, j])))
                tokens.append(torch.from_numpy(tok))
                lengths.append(int(length))
        e_bar = self.text_encoder(torch.stack(tokens).to(self.device), torch.tensor(lengths))[1]  # [b * k, D]
        return e_bar.view(b, k, -1).mean(1)  # [b, D]

    def prompt_tokens(self):
        """Snapshot captions: (tokens [n, T], lengths [n], texts): the --prompt texts, then the first test captions."""
        tokens, lengths, _, texts = fixed_captions(self.test_ds, self.cfg.n_prompts)
        if self.cfg.prompts:
            x_tokens, x_lengths, x_texts = encode_prompts(self.test_ds, self.cfg.prompts)
            tokens, lengths, texts = torch.cat([x_tokens, tokens]), torch.cat([x_lengths, lengths]), x_texts + texts
        return tokens, lengths, texts

    @torch.no_grad()
    def prompt_features(self):
        """Snapshot conditioning (t [n, text_dim], texts): DAMSM features of prompt_tokens(), or (char-CNN-RNN)
        the first training images' first embeddings (no encoder for new text)."""
        if self.embeddings is None:
            tokens, lengths, texts = self.prompt_tokens()
            return self.text_encoder(tokens.to(self.device), lengths)[1], texts
        k = min(max(int(self.cfg.n_prompts), 1), len(self.train_ds))
        return self.embeddings[:k, 0].to(self.device), [self.train_ds.caption_texts(i)[0] for i in range(k)]

    def fixed_noise(self, n, cond_dim):
        """Snapshot noise from a private generator (never touches the training stream): (z [n, z_dim], eps [n, c])."""
        gen = torch.Generator().manual_seed(int(self.cfg.seed) + 104729)
        return torch.randn(n, self.cfg.z_dim, generator=gen), torch.randn(n, cond_dim, generator=gen)

    # -- snapshots -------------------------------------------------------------------------------------
    @torch.no_grad()
    def draw(self, net, t, z, eps):
        """Every stage's images of `net` (in eval mode) for sentence features t [n, D], z [n, z_dim], eps [n, c]
        (None: no conditioning augmentation): [uint8 [n, s_i, s_i, 3]]."""
        from t2icli.viz import to_uint8

        with eval_mode(net):
            return [to_uint8(x) for x in net(z, t, None, None, eps=eps)["images"]]

    def rprecision(self, net, final):
        """Generated-image R-precision of `net` on the first test captions (None when it cannot be measured:
        char-CNN-RNN conditioning has no features for test captions, or too few captions)."""
        cfg = self.cfg
        n = min(int(cfg.snapshot_rprecision), len(self.test_ds))
        if final:
            n = len(self.test_ds) if cfg.final_rprecision is None else min(int(cfg.final_rprecision), len(self.test_ds))
        if self.embeddings is not None or n < 2:
            return None
        tokens, lengths, class_ids, _ = fixed_captions(self.test_ds, n)
        with eval_mode(net):
            return generated_rprecision(net, self.text_encoder, self.image_encoder, tokens, lengths, class_ids,
                                        runs=cfg.rprecision_runs if final else 3, seed=cfg.seed)

    def record(self, grid, rp, t0, attention=None, **extra):
        """The stats record of a snapshot (and what result() reports)."""
        self.last_rp, self.last_grid, self.last_attention = rp, grid, attention
        return dict({"snapshot": os.path.basename(grid), "snapshot_seconds": time.perf_counter() - t0,
                     "attention": None if attention is None else os.path.basename(attention),
                     "gen_rprecision": None if rp is None else {k: rp[k] for k in ("mean", "std", "n_negatives", "n")}},
                    **extra)

    def describe_record(self, rec):
        rp = rec.get("gen_rprecision")
        if rp is None:
            return None
        return (f"step {rec['step']}: generated-image R-precision {rp['mean']:.3f}±{rp['std']:.3f} "
                f"({rp['n']} test captions, 1+{rp['n_negatives']}) -> {rec['snapshot']}")

    def grid_path(self):
        return self.loop.run.path(f"fakes{self.loop.step:08d}.png")

    # -- the end -----------------------------------------------------------------------------------------
    def export(self, style_encoder=None, **extra):
        from t2icli.models.export import save_generator

        return save_generator(self.loop.run.path("generator.pt"), self.cfg.kind, self.sampler(), self.text_encoder,
                              self.damsm_config, self.vocab, damsm_run=self.cfg.damsm,
                              extra=dict({"data": self.cfg.data, "step": self.loop.step, "ema": bool(self.cfg.ema)},
                                         **extra),
                              text_source=self.text_source, style_encoder=style_encoder)

    def result(self):
        return {"rprecision": self.last_rp, "snapshot": self.last_grid, "attention": self.last_attention}

    @staticmethod
    def count(*modules):
        """Parameters of the modules, in millions."""
        return sum(p.numel() for m in modules for p in m.parameters()) / 1e6
