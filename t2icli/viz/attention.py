"""AttnGAN-style attention pictures: a caption's words in a row, under each word its attention map blended over the image."""

import numpy as np

__all__ = ["heat_colours", "blend_attention", "save_attention_figure", "save_attention_blocks"]


def heat_colours(a):
    """a: float [H, W] in [0, 1] -> float [H, W, 3] in [0, 1], black -> red -> yellow -> white."""
    a = np.asarray(a, np.float32)[..., None]
    return np.concatenate([np.clip(3 * a, 0, 1), np.clip(3 * a - 1, 0, 1), np.clip(3 * a - 2, 0, 1)], -1)


def blend_attention(image, attn, alpha=0.6):
    """image: uint8 [S, S, 3]; attn: float [h, w] (one word's weights over the regions of the stage that attended).

    The map is upsampled bilinearly to S x S, min-max normalised, coloured and blended over the image's grey
    version (weight alpha on the heat). Returns uint8 [S, S, 3].
    """
    import torch
    import torch.nn.functional as F

    S = image.shape[0]
    a = torch.as_tensor(np.asarray(attn, np.float32))[None, None]  # [1, 1, h, w]
    a = F.interpolate(a, size=(S, S), mode="bilinear", align_corners=False)[0, 0].numpy()  # [S, S]
    a = (a - a.min()) / max(float(a.max() - a.min()), 1e-12)
    grey = np.asarray(image, np.float32).mean(-1, keepdims=True).repeat(3, -1) / 255.0  # [S, S, 3]
    mix = (1 - alpha) * grey + alpha * heat_colours(a)
    return np.clip(np.rint(mix * 255), 0, 255).astype(np.uint8)


def save_attention_figure(path, rows, words, tile=64, title=None):
    """Write one attention picture.

    rows: list of (label: str, image: uint8 [S, S, 3], attn: float [T, h, w]) - one row per (image, attention
    stage); words: the T words (the caption's words the model saw). Layout: an optional title line, a header
    row with the words, then per row [label | image | one blended map per word]. Returns `path`.
    """
    from PIL import Image, ImageDraw

    T = len(words)
    label_w, head_h = 84, 14
    top = (14 if title else 0) + head_h
    W = label_w + (1 + T) * (tile + 2) + 2
    H = top + len(rows) * (tile + 2) + 2
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((3, 1), str(title)[: W // 6], fill=(0, 0, 0))
    y0 = 14 if title else 0
    draw.text((label_w + 4, y0 + 1), "image", fill=(0, 0, 0))
    for t, w in enumerate(words):
        draw.text((label_w + (1 + t) * (tile + 2) + 4, y0 + 1), str(w)[: max(1, tile // 6)], fill=(0, 0, 0))
    for r, (label, image, attn) in enumerate(rows):
        y = top + r * (tile + 2) + 2
        big = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((tile, tile), Image.BILINEAR))
        for k, line in enumerate(str(label).split("\n")[:4]):
            draw.text((3, y + 2 + 12 * k), line, fill=(0, 0, 0))
        canvas.paste(Image.fromarray(big), (label_w + 2, y))
        for t in range(T):
            over = blend_attention(big, attn[t])
            canvas.paste(Image.fromarray(over), (label_w + (1 + t) * (tile + 2) + 2, y))
    from t2icli.viz.grid import save_png

    return save_png(canvas, path)


def save_attention_blocks(path, images, words, alphas, tile=None):
    """Write a word-attention picture of several captions: per image a block of its words in a row over
    [image | its map of each word blended over it] (DAMSM's and the trainers' snapshots).

    images: uint8 [K, S, S, 3]; words: K lists of words; alphas: K float tensors/arrays [T_k, h, w] (T_k =
    len(words[k])). Returns `path`.
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
        big = np.asarray(Image.fromarray(np.ascontiguousarray(images[k])).resize((tile, tile), Image.BILINEAR))
        canvas.paste(Image.fromarray(big), (0, y + text_h))
        draw.text((2, y + 1), "image", fill=(0, 0, 0))
        for t, word in enumerate(words[k]):
            x = (t + 1) * tile
            canvas.paste(Image.fromarray(blend_attention(big, np.asarray(alphas[k][t], np.float32))), (x, y + text_h))
            draw.text((x + 2, y + 1), word[: max(1, tile // 6)], fill=(0, 0, 0))
    return save_png(canvas, path)
