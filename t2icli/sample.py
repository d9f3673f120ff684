"""`t2i sample`'s library side: images (and attention pictures) from captions, and sentence-feature interpolation.

Image k of a caption uses noise seeded by (seed, k) (t2icli.metrics.generate.noise), so it is the same
whatever --n. Out-of-vocabulary words are dropped (reported through `warn`); a caption that is empty or
has no known word is a SampleError before anything is generated.
"""

import os
import re

import numpy as np
import torch

from t2icli.errors import T2IError

__all__ = ["SampleError", "encode_captions", "caption_words", "caption_images", "caption_grid", "output_paths", "sample",
           "interpolation_images", "interpolation_grid", "interpolate", "sample_style", "STAGES"]

STAGES = ("last", "all")
MAX_ATTN_IMAGES = 4  # rows of an attention picture: the first images of the caption, one row per attention stage


class SampleError(T2IError):
    """A caption or option `t2i sample` cannot use (the message names it)."""


def _short(text, limit=60):
    """`text` with whitespace collapsed, cut to `limit` characters (+ "...") for messages and labels."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _word_limit(model):
    """The most words the model's text encoder reads (its DAMSM's word limit, e.g. 18), or 0 when not recorded."""
    return int((getattr(model, "config", None) or {}).get("damsm_config", {}).get("word_limit") or 0)


def encode_captions(model, captions, warn=None):
    """Token ids of each caption: list of (ids list[int], words list[str]). Raises SampleError for an empty caption,
    one with no words (only punctuation) or no known word; calls warn(message) naming the out-of-vocabulary words
    of the others. A caption with more known words than the model's word limit (its DAMSM's, e.g. 18) keeps the
    first word-limit words, with a warning: the text encoder was never trained on longer captions."""
    limit = _word_limit(model)
    out = []
    for text in captions:
        if not str(text).strip():
            raise SampleError("an empty caption: give some words, e.g. \"a small red bird\"")
        ids, oov = model.encode(text)
        if not ids and not oov:
            raise SampleError(f"caption {_short(text)!r} has no words (only punctuation or symbols): "
                              "give some words, e.g. \"a small red bird\"")
        if not ids:
            raise SampleError(f"caption {_short(text)!r}: none of its words is in the model's vocabulary "
                              f"({len(model.vocab)} words)")
        if oov and warn:
            shown = ", ".join(oov[:20]) + (f", ... ({len(oov)} in all)" if len(oov) > 20 else "")
            warn(f"warning: caption {_short(text)!r}: not in the vocabulary, ignored: {shown}")
        if limit and len(ids) > limit:
            if warn:
                warn(f"warning: caption {_short(text)!r}: {len(ids)} known words, the model reads at most {limit}; "
                     f"using the first {limit}")
            ids = ids[:limit]
        out.append((ids, model.decode(ids)))
    return out


def caption_words(model, text):
    """Every word of a caption as the model reads it, in order: list of (word, status), status "known" (embedded;
    the known words are, in order, the words of `encode_captions`), "oov" (not in the vocabulary: dropped) or
    "cut" (a known word past the model's word limit: dropped)."""
    from t2icli.data.text import tokenize

    vocab, limit, n_known, out = set(model.vocab[1:]), _word_limit(model), 0, []
    for w in tokenize(text):
        if w not in vocab:
            out.append((w, "oov"))
        else:
            n_known += 1
            out.append((w, "cut" if limit and n_known > limit else "known"))
    return out


def caption_images(model, ids, n, seed=0, return_attn=False, batch_size=16):
    """Images of every stage for one caption's token ids (list[int], T words), image k with noise (seed, k).

    Returns {"images": [uint8 [n, s_i, s_i, 3] for each stage i], "attn": [{"stage": i (0-based index of the stage
    that attended), "regions": r (= s_{i-1}, the side of the region grid it attended over), "maps": float32
    [n, T, r, r]} for each attention stage]} ("attn" is [] unless return_attn).
    """
    from t2icli.metrics.generate import to_uint8

    tok, length = _tokens(ids)
    res = model.generate(tok.expand(n, -1), length.expand(n), np.arange(n), seed=seed, return_attn=return_attn,
                         batch_size=batch_size)
    attn = []
    for i, beta in enumerate(res["attn"], start=1):  # beta [n, T, s_{i-1}^2]: stage i attends over stage i-1's regions
        r = model.sizes[i - 1]
        attn.append({"stage": i, "regions": r, "maps": beta[:, : len(ids)].reshape(n, len(ids), r, r).numpy()})
    return {"images": [to_uint8(x) for x in res["images"]], "attn": attn}


def caption_grid(model, text, images, stage="last"):
    """The picture `t2i sample` writes for one caption, as a PIL image: a row of its n images (stage="all": one row
    per stage, labelled with its size), columns #0..#n-1. images: per-stage uint8 [n, s, s, 3] (caption_images)."""
    from t2icli.viz.grid import image_grid

    n = len(images[-1])
    if stage == "all":
        rows = [[im for im in imgs] for imgs in images]
        labels = [f"{_short(text, 200)} ({s} px)" for s in model.sizes]
    else:
        rows, labels = [[im for im in images[-1]]], [_short(text, 200)]
    return image_grid(rows, row_labels=labels, col_labels=[f"#{k}" for k in range(n)], tile=max(64, model.sizes[-1]))


def _slug(text, limit=40):
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "caption"


def output_paths(out, captions):
    """PNG path of each caption: `out` itself for one caption and out ending in .png; otherwise files
    `<k>-<words>.png` in folder `out` (or `<stem>-<k>.png` beside out.png for several captions)."""
    out = os.fspath(out)
    if out.lower().endswith(".png"):
        if len(captions) == 1:
            return [out]
        stem = out[:-4]
        return [f"{stem}-{k:02d}.png" for k in range(len(captions))]
    return [os.path.join(out, f"{k:02d}-{_slug(c)}.png") for k, c in enumerate(captions)]


def _attn_path(png):
    return png[:-4] + "-attn.png"


def _tokens(ids):
    return torch.tensor([ids], dtype=torch.int64), torch.tensor([len(ids)])


def _check_text(model):
    """SampleError unless the model can embed caption text (a char-CNN-RNN-trained baseline cannot)."""
    from t2icli.metrics.common import MetricError

    try:
        model.check_captions()
    except MetricError as exc:
        raise SampleError(str(exc)) from None


def _check_stage(model, stage, save_attn):
    _check_text(model)
    if stage not in STAGES:
        raise SampleError(f"--stage {stage!r}: choose from {', '.join(STAGES)}")
    if save_attn and not model.attention:
        raise SampleError(f"--save-attn: this {model.kind} model has no word attention (AttnGAN models have)")


def sample(model, captions, out, n=8, seed=0, stage="last", save_attn=False, warn=None, batch_size=16):
    """Write one PNG per caption (a row of n images; stage="all": one row per stage) and, with save_attn, an
    attention picture `<png stem>-attn.png`. model: a t2icli.metrics.generate.GeneratorModel.

    Returns [{"caption", "words", "png", "attention": path or None}]. Raises SampleError before generating.
    """
    from t2icli.viz.attention import save_attention_figure
    from t2icli.viz.grid import save_png

    if n < 1:
        raise SampleError(f"--n {n}: must be >= 1")
    _check_stage(model, stage, save_attn)
    encoded = encode_captions(model, captions, warn)
    paths = output_paths(out, captions)
    for p in paths:
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    results = []
    for text, (ids, words), png in zip(captions, encoded, paths):
        res = caption_images(model, ids, n, seed=seed, return_attn=save_attn, batch_size=batch_size)
        stage_imgs = res["images"]  # S x uint8 [n, s, s, 3]
        save_png(caption_grid(model, text, stage_imgs, stage), png)
        attn_png = None
        if save_attn:
            attn_rows = []
            for k in range(min(n, MAX_ATTN_IMAGES)):
                for a in res["attn"]:  # maps [n, T, r, r]: stage a["stage"]'s attention over r x r regions
                    i, r = a["stage"], a["regions"]
                    attn_rows.append((f"image #{k}\nstage {i}\n{r}px regions", stage_imgs[i][k], a["maps"][k]))
            attn_png = save_attention_figure(_attn_path(png), attn_rows, words, tile=max(64, model.sizes[-1]),
                                             title=_short(text, 200))
        results.append({"caption": text, "words": words, "png": png, "attention": attn_png})
    return results


@torch.no_grad()
def interpolation_images(model, caption_a, caption_b, steps=8, n=1, seed=0, warn=None):
    """Final-stage images along the straight line between two captions' features at fixed noise (GAN-INT-CLS 5.4).

    For t in linspace(0, 1, steps): e_bar_t = (1 - t) e_bar_A + t e_bar_B, and the word features e_t likewise
    (both captions 0-padded to the longer one; a word slot is attended when either caption has a word there,
    only A's at t = 0 and only B's at t = 1). Noise z and the conditioning eps are those of image k (seed, k),
    the same at every t. Returns (ts: list[float] [steps], images: uint8 [steps, n, S, S, 3]).
    Raises SampleError before generating.
    """
    from t2icli.metrics.generate import noise, to_uint8

    if steps < 2:
        raise SampleError(f"--steps {steps}: needs >= 2")
    _check_text(model)
    (ids_a, _), (ids_b, _) = encode_captions(model, [caption_a, caption_b], warn)
    T = max(len(ids_a), len(ids_b))
    tok = torch.zeros(2, T, dtype=torch.int64)
    tok[0, : len(ids_a)] = torch.tensor(ids_a)
    tok[1, : len(ids_b)] = torch.tensor(ids_b)
    e, e_bar = model.text_features(tok, torch.tensor([len(ids_a), len(ids_b)]))  # [2, D, T], [2, D]
    pad = (tok == 0).to(e.device)  # [2, T] True = padding
    z, eps = noise(seed, range(n), model.z_dim, model.cond_dim)  # [n, .]
    ts = [float(t) for t in np.linspace(0.0, 1.0, steps)]
    cols = []
    for t in ts:
        e_t = ((1 - t) * e[0] + t * e[1]).expand(n, -1, -1)  # [n, D, T]
        eb_t = ((1 - t) * e_bar[0] + t * e_bar[1]).expand(n, -1)  # [n, D]
        mask = pad[0] if t == 0.0 else pad[1] if t == 1.0 else pad[0] & pad[1]  # [T]
        imgs, _ = model.synthesize(eb_t, e_t, mask.expand(n, -1), z, eps)
        cols.append(to_uint8(imgs[-1]))  # [n, S, S, 3]
    return ts, np.stack(cols)


def interpolation_grid(model, caption_a, caption_b, images, ts):
    """The picture `t2i sample --interpolate` writes, as a PIL image: one row per noise draw, one column per t.
    images: uint8 [steps, n, S, S, 3] and ts [steps] from interpolation_images."""
    from t2icli.viz.grid import image_grid

    steps, n = images.shape[:2]
    rows = [[images[j][k] for j in range(steps)] for k in range(n)]
    return image_grid(rows, row_labels=[f"#{k}: {_short(caption_a, 100)} -> {_short(caption_b, 100)}" for k in range(n)],
                      col_labels=[f"t={t:.2f}" for t in ts], tile=max(64, model.sizes[-1]))


def interpolate(model, caption_a, caption_b, out, steps=8, n=1, seed=0, warn=None):
    """Write the images of `interpolation_images` as one PNG: n rows x steps columns (`out`, or
    out/interpolation.png for a folder). Returns {"png", "steps", "captions", "images": uint8 [steps, n, S, S, 3]}."""
    from t2icli.viz.grid import save_png

    ts, images = interpolation_images(model, caption_a, caption_b, steps=steps, n=n, seed=seed, warn=warn)
    png = os.fspath(out)
    if not png.lower().endswith(".png"):
        os.makedirs(png, exist_ok=True)
        png = os.path.join(png, "interpolation.png")
    else:
        os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    save_png(interpolation_grid(model, caption_a, caption_b, images, ts), png)
    return {"png": png, "steps": int(steps), "captions": [caption_a, caption_b], "images": images}


def read_style_image(path, size):
    """IMAGE file -> uint8 [1, size, size, 3] (RGB, resized with PIL's antialiased bicubic). SampleError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((int(size), int(size)), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8)[None]
    except (OSError, UnidentifiedImageError) as exc:
        raise SampleError(f"--style-from {path}: not a readable image ({exc})") from None


@torch.no_grad()
def sample_style(model, captions, style_image, out, seed=0, stage="last", warn=None):
    """Style transfer of GAN-INT-CLS (section 4.4): z = S(IMAGE), then x = G(z, t) for each caption: the caption's
    content in the pose/background of IMAGE. Writes one PNG per caption (paths as `sample`): the style image, then
    the generated image (stage="all": one row per stage). model: a GeneratorModel with a style encoder.

    Returns [{"caption", "words", "png", "attention": None}]. Raises SampleError before generating.
    """
    from t2icli.metrics.common import MetricError
    from t2icli.metrics.generate import to_uint8
    from t2icli.viz.grid import save_image_grid

    _check_stage(model, stage, False)
    if model.style_encoder is None:
        raise SampleError(f"--style-from: this {model.kind} model has no style encoder (only GAN-INT-CLS models "
                          "trained with --train-style-encoder have one)")
    encoded = encode_captions(model, captions, warn)
    style = read_style_image(style_image, model.sizes[-1])  # [1, S, S, 3]
    try:
        z = model.style_z(style)  # [1, z_dim]
    except MetricError as exc:
        raise SampleError(str(exc)) from None
    paths = output_paths(out, captions)
    results = []
    for text, (ids, words), png in zip(captions, encoded, paths):
        os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
        tok, length = _tokens(ids)
        res = model.generate(tok, length, np.arange(1), seed=seed, z=z)
        imgs = [to_uint8(x)[0] for x in res["images"]]  # stages x [s, s, 3]
        if stage == "all":
            rows = [[style[0], im] for im in imgs]
            labels = [f"{_short(text, 200)} ({s} px)" for s in model.sizes]
        else:
            rows, labels = [[style[0], imgs[-1]]], [_short(text, 200)]
        save_image_grid(png, rows, row_labels=labels, col_labels=["style", "generated"],
                        tile=max(64, model.sizes[-1]))
        results.append({"caption": text, "words": words, "png": png, "attention": None})
    return results
