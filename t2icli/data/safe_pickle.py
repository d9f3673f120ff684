"""Restricted unpickling of untrusted pickle files that should hold only lists of strings (AttnGAN's filenames.pickle).

A pickle can run any code while it loads: every callable it invokes has to be looked up
by `find_class` first, so an unpickler whose `find_class` refuses everything can build
only plain containers and scalars (lists, tuples, dicts, str, bytes, numbers). The result
is then checked to be a list or tuple of strings. Python 2 pickles (as published with
AttnGAN) are read with latin-1 for their byte strings.
"""

import io
import pickle

from t2icli.data.format import DataError

#: A filenames pickle larger than this is refused before unpickling (CUB's is ~300 KB).
MAX_BYTES = 64 << 20


class _NoGlobalsUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global (class or function) and every persistent id."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refused to load global {module}.{name} (only lists of strings are allowed)")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id (only lists of strings are allowed)")


def loads_string_list(data, name="<bytes>"):
    """Unpickle `data` (bytes) that must hold a list or tuple of str; returns list[str].

    Raises DataError naming `name` for anything else (globals, dicts, numbers, malformed data);
    nothing in the pickle is executed.
    """
    try:
        obj = _NoGlobalsUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # malformed input fails in many ways (UnpicklingError, EOFError, ...)
        raise DataError(f"{name}: not a safe pickle of a list of strings ({exc})") from None
    if not isinstance(obj, (list, tuple)):
        raise DataError(f"{name}: expected a pickled list of strings, found {type(obj).__name__}")
    for k, v in enumerate(obj):
        if not isinstance(v, str):
            raise DataError(f"{name}: expected a pickled list of strings, item {k} is {type(v).__name__}")
    return list(obj)


def load_string_list(path):
    """Read a pickle file that must hold a list/tuple of str (e.g. train/filenames.pickle); returns list[str]."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(data) > MAX_BYTES:
        raise DataError(f"{path}: larger than {MAX_BYTES >> 20} MB; expected a small pickled list of file names")
    return loads_string_list(data, name=str(path))
