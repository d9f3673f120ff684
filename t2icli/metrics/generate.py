"""Generating images for sampling and evaluation: a loaded generator export, per-image noise, test-caption images.

Image k of a request is drawn from its own torch.Generator seeded by (seed, k), so it is the same image
whatever the number of images asked for or the batch size (G runs in eval mode: BatchNorm uses running
statistics, so every image is independent of its batch).
"""

import os

import numpy as np
import torch

from t2icli.metrics.common import MetricError

__all__ = ["GeneratorModel", "load_model", "noise", "test_captions", "caption_tokens", "generate_from_test_captions",
           "to_uint8", "EVAL_UINT8", "eval_word_limit"]


#: How `t2i eval` turns generated images into uint8 (recorded in every result).
EVAL_UINT8 = "truncate: uint8((x + 1) * 127.5), as AttnGAN / DM-GAN save the images they evaluate"


def to_uint8(x, rounding="round"):
    """Images in [-1, 1], float tensor [B, 3, H, W] -> uint8 numpy [B, H, W, 3] (clipped).

    rounding="round": nearest integer (PNGs of `t2i sample`, training grids). rounding="truncate": towards zero,
    as the references write the images they evaluate (MinfengZhu/DM-GAN code/trainer.py:460-461,
    taoxugit/AttnGAN code/trainer.py save_singleimages: `((x + 1) * 127.5).astype(np.uint8)`), so `t2i eval`
    scores the same pixels the published numbers were computed on.
    """
    if rounding not in ("round", "truncate"):
        raise ValueError(f"rounding must be 'round' or 'truncate', got {rounding!r}")
    v = (x.detach().float().cpu().numpy() + 1.0) * 127.5  # [B, 3, H, W] in [0, 255]
    v = np.rint(v) if rounding == "round" else np.floor(v)
    return np.clip(v, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def noise(seed, indices, z_dim, cond_dim):
    """Per-image noise: (z [n, z_dim], eps [n, cond_dim]); row j depends only on (seed, indices[j])."""
    zs, eps = [], []
    for k in indices:
        s = int(np.random.SeedSequence([int(seed), int(k), 0x5EED]).generate_state(1, np.uint64)[0] >> 1)
        g = torch.Generator().manual_seed(s)
        zs.append(torch.randn(z_dim, generator=g))
        eps.append(torch.randn(cond_dim, generator=g))
    return torch.stack(zs), torch.stack(eps)


class GeneratorModel:
    """A trained generator export with its text encoder and vocabulary (from `load_model`).

    Attributes: G, text_encoder, config (dict: model config + kind, damsm_run, sizes, ...), vocab, kind,
    sizes (side of every stage), attention (bool), device, z_dim, cond_dim (per-image noise sizes; cond_dim 0 for
    GAN-INT-CLS), style_encoder (GAN-INT-CLS trained with --train-style-encoder, else None), text_source ("damsm":
    captions are embedded by the DAMSM text encoder; "char-cnn-rnn": G was trained on precomputed embeddings).
    Every kind's G has the signature G(z, e_bar, e, mask, eps=, return_attn=) -> {"images": [...], ...}.
    """

    def __init__(self, G, text_encoder, config, vocab, device, style_encoder=None):
        from t2icli.data.text import Vocab

        self.G, self.text_encoder, self.config, self.vocab = G, text_encoder, config, list(vocab)
        self.kind = config.get("kind") or "attngan"
        self.sizes = list(config["sizes"])
        self.attention = bool(config.get("attention", False))
        self.device = device
        self.z_dim = int(G.config.z_dim)
        self.cond_dim = int(getattr(G.config, "cond_dim", 0))
        self.style_encoder = style_encoder
        self.text_source = config.get("text_source", "damsm")
        self._vocab = Vocab(self.vocab)

    def check_captions(self):
        """Raise MetricError unless this model can turn caption text into its conditioning features."""
        if self.text_source != "damsm":
            raise MetricError(f"this {self.kind} model was trained on precomputed {self.text_source} sentence "
                              "embeddings (--text-embeddings); t2i has no encoder to embed new captions for it. "
                              "Evaluate it with `t2i eval --text-embeddings` (the test split's embeddings file), or "
                              "train it on the DAMSM text features (without --text-embeddings) to sample.")

    def check_embeddings(self, emb):
        """Raise MetricError unless precomputed sentence embeddings emb [n, E, D] can condition this model."""
        if self.text_source == "damsm":
            raise MetricError(f"--text-embeddings: this {self.kind} model was trained on the DAMSM sentence features; "
                              "evaluate it without --text-embeddings")
        dim = int(getattr(self.G.config, "text_dim", -1))
        if emb.ndim != 3 or emb.shape[2] != dim:
            raise MetricError(f"--text-embeddings: embeddings of shape {tuple(emb.shape)}, but the model was trained "
                              f"on {dim}-d ones (expected [images, captions, {dim}])")

    @torch.no_grad()
    def style_z(self, images):
        """z [n, z_dim] of uint8 images [n, S, S, 3] (the model's final size) by the style encoder S(x) -> z."""
        if self.style_encoder is None:
            raise MetricError(f"--style-from: this {self.kind} model has no style encoder (train a gancls model with "
                              "--train-style-encoder)")
        x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [n, 3, S, S]
        return self.style_encoder(x.to(self.device)).float().cpu()

    def encode(self, text):
        """(token ids: list[int], out-of-vocabulary words: list[str]) of a caption."""
        return self._vocab.encode(text)

    def decode(self, ids):
        """Words of token ids (stops at 0)."""
        return self._vocab.decode(ids)

    @torch.no_grad()
    def text_features(self, tokens, lengths):
        """tokens [n, T], lengths [n] -> (e [n, D, T] word features, e_bar [n, D] sentence), on the model's device."""
        return self.text_encoder(torch.as_tensor(tokens).to(self.device), torch.as_tensor(lengths))

    @torch.no_grad()
    def synthesize(self, e_bar, e, mask, z, eps, return_attn=False):
        """One batch from given features and noise: e_bar [b, D], e [b, D, T], mask [b, T] True = padding,
        z [b, z_dim], eps [b, cond_dim]. Returns (images: [x_i [b, 3, s_i, s_i] float CPU], attn: [beta_i [b, T, s^2]])."""
        d = self.device
        out = self.G(z.to(d), e_bar.to(d), e.to(d), mask.to(d), eps=eps.to(d), return_attn=return_attn)
        attn = [b.float().cpu() for b in out.get("attn", [])] if return_attn else []
        return [x.float().cpu() for x in out["images"]], attn

    @torch.no_grad()
    def generate_embedded(self, t, indices, seed=0, batch_size=50):
        """Images of every stage for precomputed sentence embeddings t [n, D] (a model trained on --text-embeddings);
        image j uses noise (seed, indices[j]) as `generate`. Returns {"images": [x_i [n, 3, s_i, s_i] float CPU]}."""
        t = torch.as_tensor(t, dtype=torch.float32)
        z, eps = noise(seed, indices, self.z_dim, self.cond_dim)
        d = self.device
        imgs = []
        for s in range(0, len(t), batch_size):  # baselines' G ignores word features and mask
            out = self.G(z[s : s + batch_size].to(d), t[s : s + batch_size].to(d), None, None,
                         eps=eps[s : s + batch_size].to(d))
            imgs.append([x.float().cpu() for x in out["images"]])
        return {"images": [torch.cat([b[i] for b in imgs]) for i in range(len(imgs[0]))] if imgs else []}

    @torch.no_grad()
    def generate(self, tokens, lengths, indices, seed=0, return_attn=False, batch_size=50, z=None):
        """Images of every stage for captions tokens [n, T] / lengths [n]; image j uses noise (seed, indices[j]),
        or z [n, z_dim] when given (the conditioning noise eps still comes from (seed, indices[j])).

        Returns {"images": [x_i [n, 3, s_i, s_i] float CPU in [-1, 1]], "attn": [beta_i [n, T, s_{i-1}^2]]}.
        Raises MetricError for a model that cannot embed captions (see check_captions).
        """
        from t2icli.models.attngan import word_mask

        self.check_captions()
        tokens, lengths = torch.as_tensor(tokens), torch.as_tensor(lengths)
        z_seed, eps = noise(seed, indices, self.z_dim, self.cond_dim)
        z = z_seed if z is None else torch.as_tensor(z, dtype=torch.float32)
        imgs, attns = [], []
        for s in range(0, len(tokens), batch_size):
            tok = tokens[s : s + batch_size]
            e, e_bar = self.text_features(tok, lengths[s : s + batch_size])
            x, a = self.synthesize(e_bar, e, word_mask(tok.to(self.device)), z[s : s + batch_size],
                                   eps[s : s + batch_size], return_attn)
            imgs.append(x)
            attns.append(a)
        n_stages = len(imgs[0]) if imgs else len(self.sizes)
        out = {"images": [torch.cat([b[i] for b in imgs]) for i in range(n_stages)] if imgs else []}
        out["attn"] = ([torch.cat([a[i] for a in attns]) for i in range(len(attns[0]))]
                       if return_attn and attns and attns[0] else [])
        return out


def load_model(run, device="cpu"):
    """Load RUN/generator.pt (or the file) of any kind (attngan, stackgan2, stackgan, gancls) as a GeneratorModel.
    Raises MetricError naming --model if it can't."""
    from t2icli.models.export import ExportError, load_generator

    try:
        G, text_encoder, config, vocab, style = load_generator(run, device)
    except ExportError as exc:
        raise MetricError(f"--model: {exc}") from None
    return GeneratorModel(G, text_encoder, config, vocab, device, style_encoder=style)


def test_captions(ds, n_samples, seed=0):
    """The caption list eval cycles over: every caption of every image of split ds, in order, repeated up to n_samples.

    Captions longer than the word limit are cut to a random ordered subset (rng of (seed, caption row)), as the
    trainers do. Returns {"tokens": int64 [n, T], "lengths": [n], "rows": caption row [n], "images": image index [n]}.
    """
    n_caps = int(ds.image_captions[-1] - ds.image_captions[0])
    if n_caps == 0:
        raise MetricError(f"{ds.path}: split {ds.split} has no captions")
    image_of_row = np.repeat(np.arange(len(ds)), np.diff(ds.image_captions))  # [n_caps]
    rows = np.arange(int(n_samples)) % n_caps
    tokens, lengths = caption_tokens(ds, rows, seed)
    return {"tokens": tokens, "lengths": lengths, "rows": rows, "images": image_of_row[rows]}


def caption_tokens(ds, rows, seed=0):
    """Token ids [n, word_limit] and lengths [n] of caption rows `rows` of split ds, as evaluation encodes them:
    captions longer than the word limit cut to a random ordered subset (rng of (seed, row)); an all-OOV caption is
    one <end> token of length 1 (as the trainers see it)."""
    from t2icli.data.text import cut_caption

    tokens = np.zeros((len(rows), ds.word_limit), np.int64)
    lengths = np.zeros(len(rows), np.int64)
    for j, c in enumerate(rows):
        ids = ds.caption_ids(int(c))
        if len(ids) == 0:
            ids = np.zeros(1, np.int64)
        tokens[j], lengths[j] = cut_caption(ids, ds.word_limit, np.random.default_rng([int(seed), int(c), 0xC0]))
    return tokens, np.maximum(lengths, 1)


def eval_word_limit(meta):
    """The evaluation configs' caption word limit for a prepared data set's dataset.json `meta`: 20 for COCO
    (taoxugit/AttnGAN code/cfg/eval_coco.yml:30), else 25 (eval_bird.yml:30; DM-GAN's eval configs agree)."""
    return 20 if meta.get("source") == "coco" else 25


def generate_from_test_captions(model, data, n_samples, seed=0, split="test", batch_size=50, progress=None,
                                text_embeddings=None, word_limit=None, rounding="truncate", all_stages=False):
    """Final-stage uint8 images [n, S, S, 3] generated from the test captions (cycled up to n_samples); with
    all_stages, a list of every stage's uint8 images [n, s_i, s_i, 3] (the last one the final stage's).

    Image j comes from caption j mod n_captions with noise (seed, j). text_embeddings: the split's char-CNN-RNN
    embeddings file (a model trained on --text-embeddings): caption k of image i is then conditioned on row
    (i, k mod E) of it, as in training, instead of being encoded. word_limit: captions longer than this are cut
    (None: the evaluation configs' limit, eval_word_limit). rounding: to_uint8's ("truncate" as the references).
    Returns (images uint8 numpy, captions dict of `test_captions`, ds). Raises MetricError if the model's
    vocabulary is not the data's, DataError for a bad file.
    """
    from t2icli.data import PreparedDataset, load_meta

    meta = load_meta(data)
    if split not in meta["splits"]:
        split = "train"
    word_limit = eval_word_limit(meta) if word_limit is None else int(word_limit)
    ds = PreparedDataset(data, split, train=False, seed=seed, word_limit=word_limit)
    if list(ds.vocab) != list(model.vocab):
        raise MetricError(f"--model was trained on a different vocabulary ({len(model.vocab)} words) than --data "
                          f"{os.fspath(data)} ({len(ds.vocab)} words)")
    caps = test_captions(ds, n_samples, seed)
    t = None
    if text_embeddings is not None:
        from t2icli.data.embeddings import embeddings_for_split

        emb = embeddings_for_split(text_embeddings, data, split)  # [n_images, E, D]
        model.check_embeddings(emb)
        k = caps["rows"] - np.asarray(ds.image_captions)[caps["images"]]  # caption k of its image
        t = torch.from_numpy(emb[caps["images"], k % emb.shape[1]])  # [n, D]
    out = []
    for s in range(0, len(caps["rows"]), batch_size):
        idx = np.arange(s, min(s + batch_size, len(caps["rows"])))
        if t is not None:
            x = model.generate_embedded(t[idx], idx, seed=seed, batch_size=batch_size)
        else:
            x = model.generate(caps["tokens"][idx], caps["lengths"][idx], idx, seed=seed, batch_size=batch_size)
        out.append([to_uint8(im, rounding) for im in (x["images"] if all_stages else x["images"][-1:])])
        if progress:
            progress(int(idx[-1]) + 1, len(caps["rows"]))
    stages = [np.concatenate([b[i] for b in out]) for i in range(len(out[0]))]
    return (stages if all_stages else stages[-1]), caps, ds
