"""StackGAN's distributed char-CNN-RNN sentence embeddings (`char-CNN-RNN-embeddings.pickle`), loaded safely.

The file is a (usually Python 2) pickle of a list of float32 arrays [E, 1024], one per image (E = 10 captions), or of
one array [n_images, E, 1024], in the order of the split's `filenames.pickle`. A pickle can run code while it loads,
so it is read with an unpickler whose `find_class` allows only the few numpy globals an array needs; the result must
be a finite float array [n, E, D] (an object array is refused).

`embeddings_for_split` maps the rows to a prepared split's images: by name when a `filenames.pickle` lies beside
the embeddings file (StackGAN's Data/<dataset>/<split>/ layout; names `<class>/<stem>` against the prepared
dataset's captions.jsonl "file"), else by position, which needs the same number of images.
"""

import json
import os
import pickle

import numpy as np

from t2icli.data.format import DataError
from t2icli.data.safe_pickle import _NoGlobalsUnpickler, load_string_list

__all__ = ["load_char_cnn_rnn", "embeddings_for_split", "MAX_BYTES"]

#: Larger files are refused before unpickling (CUB train: ~360 MB; COCO train: ~1.7 GB).
MAX_BYTES = 4 << 30

# The globals a pickled numpy array (protocols 0-5, numpy 1.x and 2.x, Python 2 or 3) may name; none runs code.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _NumpyArrayUnpickler(_NoGlobalsUnpickler):
    """Refuses every global but those that rebuild numpy arrays."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            if module == "_codecs":
                import codecs

                return codecs.encode
            import importlib

            try:
                return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):  # numpy 1.x has no numpy._core, 2.x warns on numpy.core
                alt = module.replace("numpy._core", "numpy.core") if "_core" in module else module.replace(
                    "numpy.core", "numpy._core")
                return getattr(importlib.import_module(alt), name)
        raise pickle.UnpicklingError(f"refused to load global {module}.{name} (only numpy arrays are allowed)")


def load_char_cnn_rnn(path):
    """Read a char-CNN-RNN embeddings pickle -> float32 numpy [n_images, E, D]. Raises DataError naming the path
    (unreadable, too large, a global other than numpy's array builders, not a finite float array [n, E, D])."""
    flag = f"--text-embeddings {path}"
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise DataError(f"{flag}: cannot read ({exc})") from None
    if size > MAX_BYTES:
        raise DataError(f"{flag}: larger than {MAX_BYTES >> 30} GB; expected a char-CNN-RNN embeddings pickle")
    try:
        with open(path, "rb") as f:
            obj = _NumpyArrayUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - malformed input fails in many ways
        raise DataError(f"{flag}: not a safe pickle of numpy arrays ({exc})") from None
    try:
        if isinstance(obj, (list, tuple)):
            if not obj or not all(isinstance(a, np.ndarray) for a in obj):
                raise ValueError("expected a non-empty list of arrays [E, D], one per image")
            if any(a.dtype == object for a in obj):
                raise ValueError("object arrays are not allowed")
            arr = np.stack([np.asarray(a, np.float32) for a in obj])
        elif isinstance(obj, np.ndarray):
            if obj.dtype == object:
                raise ValueError("object arrays are not allowed")
            arr = np.asarray(obj, np.float32)
        else:
            raise ValueError(f"found a {type(obj).__name__}")
    except ValueError as exc:
        raise DataError(f"{flag}: expected per-image sentence embeddings [n_images, E, D] ({exc})") from None
    if arr.ndim == 2:  # one embedding per image
        arr = arr[:, None, :]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise DataError(f"{flag}: expected per-image sentence embeddings [n_images, E, D], found shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(f"{flag}: holds non-finite values")
    return np.ascontiguousarray(arr)


def _split_files(data, split):
    with open(os.path.join(os.fspath(data), split, "captions.jsonl"), encoding="utf-8") as f:
        return [json.loads(line).get("file", "") for line in f if line.strip()]


def _key(name):
    return os.path.splitext(str(name).strip().replace("\\", "/"))[0]


def embeddings_for_split(path, data, split="train", log=None):
    """The embeddings of `path` in the order of split `split` of prepared dataset `data`: float32 [n, E, D].

    With a filenames.pickle beside `path`, rows are matched by image name; every image of the split must be named
    there (extra names are ignored). Without it, the file must hold exactly one row per image of the split, in the
    split's order. Raises DataError naming --text-embeddings and the counts.
    """
    emb = load_char_cnn_rnn(path)
    files = _split_files(data, split)
    names_path = os.path.join(os.path.dirname(os.path.abspath(path)), "filenames.pickle")
    flag = f"--text-embeddings {path}"
    if os.path.isfile(names_path):
        names = load_string_list(names_path)
        if len(names) != len(emb):
            raise DataError(f"{flag}: {len(emb)} images' embeddings, but {names_path} names {len(names)} images")
        row = {_key(n): k for k, n in enumerate(names)}
        missing = [f for f in files if _key(f) not in row]
        if missing:
            raise DataError(f"{flag}: {len(missing)} of the {len(files)} {split} images of --data {data} are not in "
                            f"{names_path} (e.g. {missing[:3]}); give the embeddings of the same split")
        if log:
            log(f"text embeddings: {len(files)} {split} images matched by name through {names_path}")
        return np.ascontiguousarray(emb[[row[_key(f)] for f in files]])
    if len(emb) != len(files):
        raise DataError(f"{flag}: {len(emb)} images' embeddings, but the {split} split of --data {data} has "
                        f"{len(files)} images (no filenames.pickle beside it to match them by name)")
    if log:
        log(f"text embeddings: no filenames.pickle beside {path}; rows taken in the {split} split's image order")
    return emb
