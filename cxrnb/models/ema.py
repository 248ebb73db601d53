"""An exponential moving average of a network's weights, for sampling.

A GAN's generator moves at every step as the two networks chase each other; the average of its
recent weights draws steadier, usually better images than the last ones (Yazıcı et al. 2019; the
small-data GAN recipes of Karras et al. 2020 and Zhao et al. 2020 sample from it). The average is a
copy of the network, outside the optimiser, updated after each optimiser step:

    shadow <- d * shadow + (1 - d) * weights,    d = min(decay, (1 + n) / (10 + n)) after n updates,

the warm-up of ``diffusers.training_utils.EMAModel`` (the DDPM's EMA uses the same formula), so
that a short run is not dominated by the random initial weights. Floating-point buffers (BatchNorm's
running statistics) are averaged the same way, so the copy's eval-mode normalisation follows its
weights; integer buffers (BatchNorm's batch counter) are copied. As a submodule the copy is saved in
every checkpoint and restored on resume.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """``shadow``: a frozen copy of ``net`` that ``update(net)`` moves towards ``net``'s weights."""

    def __init__(self, net: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.shadow = copy.deepcopy(net).requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def decay_now(self) -> float:
        """The decay of the next update: the warm-up (1 + n) / (10 + n), capped at ``decay``."""
        n = int(self.updates)
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """shadow <- d * shadow + (1 - d) * net, for parameters and floating-point buffers."""
        d = self.decay_now()
        for e, p in zip(self.shadow.parameters(), net.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.shadow.buffers(), net.buffers()):
            if e.is_floating_point():
                e.lerp_(b, 1 - d)
            else:
                e.copy_(b)
        self.updates += 1

    def forward(self, *args, **kwargs):
        return self.shadow(*args, **kwargs)
