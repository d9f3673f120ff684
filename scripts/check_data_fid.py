"""Does data-FID see realism on this data set? Scores degraded real images with `t2i eval`'s data-FID.

    python scripts/check_data_fid.py --data data/toybirds [--n 1000] [--seed 1]

Takes n real train images (a draw other than the floor's), and scores them as they are, blurred (Gaussian, 0.5 / 1 /
2 px), with pixel noise (sd 20) and as 8 px colour blobs (downsampled to 8 px and back): a feature space that measures
realism ranks them real < blur 0.5 < blur 1 < blur 2 and puts the blobs far above the floor. Trains (or reuses, from
DATA/cache/) the same feature network as `t2i eval --fid-backbone data`. Prints one JSON object on stdout.
"""

import argparse
import json

import numpy as np
from PIL import Image, ImageFilter

from t2icli.data import PreparedDataset
from t2icli.metrics.data_fid import data_fid


def _blur(images, radius):
    return np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(radius))) for im in images])


def _blobs(images, px=8):
    size = images.shape[1]
    return np.stack([np.asarray(Image.fromarray(im).resize((px, px), Image.BILINEAR).resize((size, size),
                                                                                            Image.BILINEAR))
                     for im in images])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="prepared data set")
    ap.add_argument("--n", type=int, default=1000, help="real train images per variant")
    ap.add_argument("--seed", type=int, default=1, help="draw of the real images (the floor uses seed 0's)")
    ap.add_argument("--fid-steps", type=int, default=None, help="the feature network's steps (default: t2i eval's)")
    args = ap.parse_args()
    train = PreparedDataset(args.data, "train", train=False)
    rng = np.random.default_rng(args.seed)
    real = np.asarray(train.images_uint8[np.sort(rng.choice(len(train), min(args.n, len(train)), replace=False))])
    if real.shape[1] != real.shape[2]:
        raise SystemExit(f"--data {args.data}: stored images are not square")
    variants = {
        "real": real,
        "blur 0.5 px": _blur(real, 0.5),
        "blur 1 px": _blur(real, 1.0),
        "blur 2 px": _blur(real, 2.0),
        "noise sd 20": np.clip(real.astype(np.int16) + rng.normal(0, 20, real.shape), 0, 255).astype(np.uint8),
        "8 px blobs": _blobs(real),
    }
    out, floor = {}, None
    for name, images in variants.items():
        r = data_fid(images, args.data, seed=0, steps=args.fid_steps)
        out[name], floor = round(r["value"], 1), round(r["floor"], 1)
    ordered = out["real"] < out["blur 0.5 px"] < out["blur 1 px"] < out["blur 2 px"]
    print(json.dumps({"data": args.data, "n": len(real), "floor": floor, "data_fid": out,
                      "blur_ordered": bool(ordered)}, indent=1))


if __name__ == "__main__":
    main()
