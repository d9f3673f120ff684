"""Where the pretrained models shipped inside the package live: `t2i sample` and `t2i serve` use them when no --model is given.

A shipped model is a folder `<ROOT>/<name>/` holding the generator export `generator.pt` (weights only, loadable with
`torch.load(weights_only=True)`), the DAMSM export it was trained with `damsm.pt` (so `t2i eval --model` scores
R-precision with the model's own encoders), the run's `config.json` and its `eval.json` (`t2i eval --json` output).
`scripts/train_pretrained.sh` trains and installs one (`install_model`). Until one is committed the lookup answers
None and the commands ask for --model.

`<ROOT>/evaluators/` holds the evaluation networks of the default `t2i prep toybirds` folder (the attribute
classifier and the data-FID network, files of metrics.attributes / metrics.data_fid's DATA/cache format, keyed by
the hashes of the training arrays and the recipe): `t2i eval` on a fresh default prep loads them instead of
training its own, so every run, on every machine, is scored by the same networks (`install_evaluators`).
"""

import json
import os
import shutil

__all__ = ["ROOT", "DEFAULT", "EVALUATORS", "shipped_model", "install_model", "evaluator_path", "install_evaluators"]

ROOT = os.path.dirname(os.path.abspath(__file__))  # read at every call, so tests can point it at a temporary folder
DEFAULT = "toybirds"
FILES = ("generator.pt", "damsm.pt", "config.json", "damsm_config.json", "eval.json")
EVALUATORS = ("attr_classifier.pt", "data_fid.pt")  # metrics.attributes.CACHE_NAME, metrics.data_fid.CACHE_NAME


def shipped_model(name=DEFAULT):
    """The folder of the shipped pretrained model `name` (ROOT/name, holding generator.pt), or None when absent."""
    folder = os.path.join(ROOT, name)
    return folder if os.path.isfile(os.path.join(folder, "generator.pt")) else None


def install_model(gan_run, damsm_run, eval_json, name=DEFAULT):
    """Copy a trained generator run into ROOT/name as a shipped model: its generator.pt (with the DAMSM run's path,
    which names a folder of the training machine, dropped: evaluation finds damsm.pt beside it), the DAMSM export,
    the run's config.json, the DAMSM run's as damsm_config.json and `eval_json` (the `t2i eval --json` output).
    Both exports are read with weights_only=True (export.read_*), so what is written loads without pickled code.
    Everything is read and written to ROOT/name.tmp before the folder is replaced, so a failure leaves the previous
    model in place. Returns the folder."""
    from t2icli.models.export import read_damsm, read_generator
    from t2icli.fileio import atomic_torch_save

    blob = read_generator(gan_run)
    damsm = read_damsm(damsm_run)
    if list(damsm["vocab"]) != list(blob["vocab"]):
        raise ValueError(f"{damsm_run} and {gan_run} have different vocabularies: not the GAN's DAMSM run")
    with open(eval_json, encoding="utf-8") as f:
        evaluation = json.load(f)
    with open(os.path.join(gan_run, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    damsm_cfg = os.path.join(damsm_run if os.path.isdir(damsm_run) else os.path.dirname(damsm_run), "config.json")
    if not os.path.isfile(damsm_cfg):
        raise FileNotFoundError(f"{damsm_cfg}: missing (the DAMSM run's training config ships beside its export)")
    with open(damsm_cfg, encoding="utf-8") as f:
        damsm_config = json.load(f)  # the export keeps the model's config, not how it was trained
    folder = os.path.join(ROOT, name)
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    blob["damsm_run"] = None
    atomic_torch_save(blob, os.path.join(tmp, "generator.pt"))
    atomic_torch_save(damsm, os.path.join(tmp, "damsm.pt"))
    for fname, obj in (("config.json", config), ("damsm_config.json", damsm_config), ("eval.json", evaluation)):
        with open(os.path.join(tmp, fname), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def evaluator_path(fname):
    """Where the shipped evaluation network `fname` (one of EVALUATORS) lives: ROOT/evaluators/fname."""
    return os.path.join(ROOT, "evaluators", fname)


def install_evaluators(data):
    """Copy the evaluation networks cached in prepared dataset `data` (DATA/cache/, written by `t2i eval --metric
    attr|fid` with the default recipes) into ROOT/evaluators/. Each file is checked to be a weights-only cache file
    before anything is replaced. Returns the list of files written."""
    import io

    import torch

    from t2icli.fileio import atomic_write_bytes

    contents = []  # every file read and checked once, before anything is replaced
    for fname in EVALUATORS:
        src = os.path.join(data, "cache", fname)
        if not os.path.isfile(src):
            raise FileNotFoundError(f"{src}: missing (run `t2i eval --metric all --data {data}` first)")
        with open(src, "rb") as f:
            raw = f.read()
        blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        if not (isinstance(blob, dict) and {"format", "key", "state", "info"} <= set(blob)):
            raise ValueError(f"{src}: not an evaluation network cache file")
        contents.append(raw)
    os.makedirs(os.path.join(ROOT, "evaluators"), exist_ok=True)
    for fname, raw in zip(EVALUATORS, contents):
        atomic_write_bytes(evaluator_path(fname), raw)
    return [evaluator_path(fname) for fname in EVALUATORS]
