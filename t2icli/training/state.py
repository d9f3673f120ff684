"""The checkpoint object every trainer shares: named training state (networks, optimisers, EMA) saved and restored.

A trainer lists what its checkpoints hold once, as {name: object with state_dict()/load_state_dict() or None}; this
module turns that into the checkpoint dict (plus the loop's counters, the RNG states and descriptive entries such as
the kind, the model config and the vocabulary) and back. Checkpoint files themselves (atomic writes, keep-K, resume
discovery) are training/run.py's.
"""

import torch

from t2icli.training.run import RunError, rng_state, set_rng_state

__all__ = ["TrainState", "StateList", "set_lr"]


def set_lr(opt, lr):
    """Set every parameter group of optimiser `opt` to learning rate `lr` (the trainers' schedules: each computes its
    rate, this applies it; learning_rates() reads it back)."""
    for group in opt.param_groups:
        group["lr"] = lr


class StateList:
    """Several stateful objects (e.g. one optimiser per stage) saved as one list entry."""

    def __init__(self, objects):
        self.objects = list(objects)

    def state_dict(self):
        return [o.state_dict() for o in self.objects]

    def load_state_dict(self, states):
        if len(states) != len(self.objects):
            raise ValueError(f"{len(states)} saved states for {len(self.objects)} objects")
        for o, s in zip(self.objects, states):
            o.load_state_dict(s)


class TrainState:
    """Named training state.

    items: {name: object or None}. An object is saved as its state_dict() under its name; None is saved as None
    (e.g. no style encoder), and an object whose entry is missing or None in a checkpoint is an error naming it
    (`missing[name]` gives the reason to show). meta: descriptive entries saved as they are (kind, model_config,
    vocab, ...).
    """

    def __init__(self, items, meta=None, missing=None):
        self.items = dict(items)
        self.meta = dict(meta or {})
        self.missing = dict(missing or {})

    def modules(self):
        """The torch modules among the items (checked for finite weights before a save)."""
        return [(n, o) for n, o in self.items.items() if isinstance(o, torch.nn.Module)]

    def learning_rates(self):
        """{name: learning rate} of every optimiser among the items (name[i] for the i-th of a StateList)."""
        rates = {}
        for name, obj in self.items.items():
            opts = obj.objects if isinstance(obj, StateList) else [obj]
            for i, opt in enumerate(opts):
                if isinstance(opt, torch.optim.Optimizer):
                    rates[f"{name}[{i}]" if isinstance(obj, StateList) else name] = opt.param_groups[0]["lr"]
        return rates

    def nonfinite(self):
        """Names of the modules holding a NaN or infinite parameter ([] when every weight is finite)."""
        return [n for n, m in self.modules() if not all(bool(torch.isfinite(p).all()) for p in m.parameters())]

    def state_dict(self, counters):
        """The checkpoint dict: meta entries, counters ({"step", "epoch", "batch", ...}), RNG states and every item."""
        state = dict(self.meta)
        state.update(counters)
        state["rng"] = rng_state()
        for name, obj in self.items.items():
            state[name] = None if obj is None else obj.state_dict()
        return state

    def load_state_dict(self, ckpt, path):
        """Restore every item and the RNG states from checkpoint dict `ckpt` (read from `path`). Raises RunError
        naming the path and the missing entry."""
        for name, obj in self.items.items():
            if obj is None:
                continue
            if ckpt.get(name) is None:
                why = self.missing.get(name, f"the checkpoint has no {name!r} entry")
                raise RunError(f"--resume {path}: {why}")
            obj.load_state_dict(ckpt[name])
        set_rng_state(ckpt["rng"])
