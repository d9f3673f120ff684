"""Exponential moving average of a model's weights (AttnGAN keeps one of G and samples from it)."""

import copy

import torch

__all__ = ["EMA"]


class EMA:
    """shadow <- beta * shadow + (1 - beta) * model for parameters; buffers (BN statistics) are copied.

    `shadow` is a deep copy of the model in eval mode with gradients off; `state_dict()` / `load_state_dict()`
    are the shadow's, for checkpoints.
    """

    def __init__(self, model, beta=0.999):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"EMA beta must be in [0, 1), got {beta}")
        self.beta = float(beta)
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        """One EMA step towards `model`'s current weights."""
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p.detach(), 1.0 - self.beta)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)

    def state_dict(self):
        return self.shadow.state_dict()

    def load_state_dict(self, state):
        self.shadow.load_state_dict(state)
