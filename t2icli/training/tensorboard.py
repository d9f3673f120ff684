"""`--tensorboard`: the scalars of every stats.jsonl record and the snapshot grids, as TensorBoard events in RUN/tensorboard/.

Written by rank 0 through torch.utils.tensorboard (the optional `tensorboard` package: `pip install -e .[tensorboard]`),
from the same records the loop appends to stats.jsonl, so the two never disagree. Scalars are named by their path in the
record (`train/d`, `gen_rprecision/mean`, `test/loss`, `lr/G`, `images_per_s`); a record naming a grid PNG
(`snapshot`) or an attention picture (`attention`) adds it as the image `fakes` / `attention` at the record's step.
"""

import os

from t2icli.errors import ConfigError

__all__ = ["TensorBoard", "check_available"]

# Record entries that are not curves: counters, bookkeeping, wall-clock totals.
_SKIP = {"step", "epoch", "final", "snapshot", "attention", "phase", "stage", "stage1_end", "stage1_stop", "n",
         "n_negatives", "cpu_seconds", "wall_seconds", "train_seconds", "snapshot_seconds", "eval_seconds", "last"}


def check_available():
    """Raise ConfigError naming --tensorboard when the tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--tensorboard needs the tensorboard package ({exc}); install it with "
                          "`pip install -e .[tensorboard]` (or `pip install tensorboard`)") from None


def scalars(rec, prefix=""):
    """{name: float} of the numeric entries of a stats record, nested dicts flattened with '/'."""
    out = {}
    for key, value in rec.items():
        if key in _SKIP or value is None or isinstance(value, bool):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalars(value, name + "/"))
        elif isinstance(value, (int, float)):
            out[name] = float(value)
    return out


class TensorBoard:
    """An event-file writer for one run folder: write(rec) for each stats record, close() at the end."""

    def __init__(self, run_dir):
        """Open (or append to) the event files of RUN/tensorboard/."""
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.writer = SummaryWriter(os.path.join(run_dir, "tensorboard"))

    def write(self, rec):
        step = int(rec.get("step", 0))
        for name, value in scalars(rec).items():
            self.writer.add_scalar(name, value, step)
        for key, tag in (("snapshot", "fakes"), ("attention", "attention")):
            if rec.get(key):
                import numpy as np
                from PIL import Image

                with Image.open(os.path.join(self.run_dir, rec[key])) as im:
                    self.writer.add_image(tag, np.asarray(im.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()
