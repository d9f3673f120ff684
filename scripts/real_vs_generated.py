"""Real test birds beside generated ones: one row per test image (its caption on the left), the real image, then
--n images generated from that caption by each --model (same noise for every model).

    python scripts/real_vs_generated.py --data data/toybirds --model runs/attngan [--model t2icli/pretrained/toybirds]
        --out real_vs_generated.png [--rows 8] [--n 3] [--seed 0]

Rows are test images spread evenly over the split (image i*N/rows), each with its first caption, cut to the eval word
limit as `t2i eval` cuts it. Image k of a row uses the noise of (seed, k), as `t2i sample --seed` does. Prints the PNG's
path on stdout.
"""

import argparse
import os
import sys

import numpy as np

from t2icli.data import PreparedDataset, load_meta
from t2icli.metrics.generate import caption_tokens, eval_word_limit, load_model, to_uint8
from t2icli.viz.grid import save_image_grid


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="prepared data set (its test split)")
    ap.add_argument("--model", action="append", required=True, help="a run folder or generator.pt; repeatable")
    ap.add_argument("--label", action="append", default=None, help="column label of each --model (default: its name)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--n", type=int, default=3, help="generated images per model and row")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.rows < 1 or args.n < 1:
        ap.error("--rows and --n must be >= 1")
    labels = args.label or [os.path.basename(os.path.normpath(m)) for m in args.model]
    if len(labels) != len(args.model):
        ap.error("give one --label per --model")

    meta = load_meta(args.data)
    split = "test" if "test" in meta["splits"] else "train"
    ds = PreparedDataset(args.data, split, train=False, seed=args.seed, word_limit=eval_word_limit(meta))
    images = np.linspace(0, len(ds) - 1, args.rows).round().astype(int)  # [rows] image indices
    caption_rows = np.asarray(ds.image_captions)[images]  # the first caption of each image
    tokens, lengths = caption_tokens(ds, np.repeat(caption_rows, args.n), args.seed)  # row r, draw k -> r * n + k
    draws = np.tile(np.arange(args.n), args.rows)  # noise index k of each image
    tiles = [[ds.images_uint8[int(i)]] for i in images]  # [rows][1 + models * n] of [S, S, 3]
    for m in args.model:
        model = load_model(m, "cpu")
        if list(model.vocab) != list(ds.vocab):
            sys.exit(f"--model {m} was trained on another vocabulary than --data {args.data}")
        x = to_uint8(model.generate(tokens, lengths, draws, seed=args.seed)["images"][-1])  # [rows * n, S, S, 3]
        for r in range(args.rows):
            tiles[r].extend(x[r * args.n:(r + 1) * args.n])
    cols = ["real"] + [lab if k == 0 else f"#{k}" for lab in labels for k in range(args.n)]
    save_image_grid(args.out, tiles, row_labels=[ds.caption_texts(int(i))[0] for i in images], col_labels=cols,
                    tile=max(64, ds.images_uint8.shape[1]), label_width=220)
    print(os.path.abspath(args.out))


if __name__ == "__main__":
    main()
