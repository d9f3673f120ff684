"""Where the pretrained models shipped inside the package live: `t2i sample` and `t2i serve` use them when no --model is given.

A shipped model is a folder `<ROOT>/<name>/` holding the generator export `generator.pt` (weights only, loadable with
`torch.load(weights_only=True)`), the run's `config.json` and its `eval.json` (`t2i eval --json` output). Until one is
committed the lookup answers None and the commands ask for --model.
"""

import os

__all__ = ["ROOT", "DEFAULT", "shipped_model"]

ROOT = os.path.dirname(os.path.abspath(__file__))  # read at every call, so tests can point it at a temporary folder
DEFAULT = "toybirds"


def shipped_model(name=DEFAULT):
    """The folder of the shipped pretrained model `name` (ROOT/name, holding generator.pt), or None when absent."""
    folder = os.path.join(ROOT, name)
    return folder if os.path.isfile(os.path.join(folder, "generator.pt")) else None
