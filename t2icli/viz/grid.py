"""Image grids with a caption per row and a title per column, written atomically as PNG (generator snapshots)."""

import io
import os
import textwrap

import numpy as np

__all__ = ["to_uint8", "wrap_text", "fit_text", "image_grid", "save_image_grid", "png_bytes", "save_png"]


def to_uint8(x):
    """Images in [-1, 1], float tensor [B, 3, H, W] (or numpy), -> uint8 numpy [B, H, W, 3] (clipped, rounded)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def wrap_text(text, width_px, char_px=6):
    """Split `text` into lines that fit `width_px` pixels with PIL's default font (about 6 px per character)."""
    return textwrap.wrap(str(text), max(4, width_px // char_px)) or [""]


def fit_text(draw, text, width_px):
    """`text` as it fits `width_px` pixels in `draw`'s font: whole, or cut and ended with ".." (a column title never
    runs into the next column's)."""
    text = str(text)
    if draw.textlength(text) <= width_px:
        return text
    while text and draw.textlength(text + "..") > width_px:
        text = text[:-1]
    return text + ".."


def save_image_grid(path, tiles, row_labels=None, col_labels=None, tile=None, label_width=180, pad=2):
    """Write a grid of images as one PNG (the picture of `image_grid`, same arguments). Returns `path`."""
    return save_png(image_grid(tiles, row_labels, col_labels, tile, label_width, pad), path)


def image_grid(tiles, row_labels=None, col_labels=None, tile=None, label_width=180, pad=2):
    """A grid of images as one PIL image (RGB).

    tiles: R rows of C uint8 images [h, w, 3] (sizes may differ: each is resized, nearest, to `tile` px, default
    the largest side); row_labels: R strings drawn, wrapped, in a column on the left (e.g. the caption);
    col_labels: C strings drawn above the columns (e.g. "16px"), each cut to its column's width.
    """
    from PIL import Image, ImageDraw

    R = len(tiles)
    C = max(len(r) for r in tiles) if R else 0
    tile = int(tile or max(max(im.shape[0], im.shape[1]) for r in tiles for im in r))
    left = label_width if row_labels else 0
    top = 14 if col_labels else 0
    lines = [wrap_text(t, label_width - 4) for t in (row_labels or [])]
    row_h = max([tile] + [12 * len(ls) + 4 for ls in lines])
    W, H = left + C * (tile + pad) + pad, top + R * (row_h + pad) + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, label in enumerate(col_labels or []):
        draw.text((left + pad + j * (tile + pad) + 2, 1), fit_text(draw, label, tile - 2), fill=(0, 0, 0))
    for i, row in enumerate(tiles):
        y = top + pad + i * (row_h + pad)
        if row_labels:
            for k, line in enumerate(lines[i]):
                draw.text((3, y + 2 + 12 * k), line, fill=(0, 0, 0))
        for j, im in enumerate(row):
            img = Image.fromarray(np.ascontiguousarray(im))
            if img.size != (tile, tile):
                img = img.resize((tile, tile), Image.NEAREST)
            canvas.paste(img, (left + pad + j * (tile + pad), y))
    return canvas


def png_bytes(image):
    """The PNG file bytes of a PIL image or of a uint8 array [H, W, 3]."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.ascontiguousarray(image))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def save_png(image, path):
    """Write PIL `image` as a PNG at `path` atomically (temporary sibling, fsync, rename). Returns the path."""
    from t2icli.fileio import atomic_write_bytes

    path = os.fspath(path)
    atomic_write_bytes(path, png_bytes(image))
    return path
