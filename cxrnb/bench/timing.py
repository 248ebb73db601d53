"""How the benches time a training step: on a random batch, after warm-up, between device syncs."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from cxrnb.runtime import synchronize


def random_batch(n: int, size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A batch shaped like the loader's (uint8 images, multi-hot labels): speed does not depend on
    the pixels, so timings need no data on disk."""
    gen = torch.Generator().manual_seed(seed)
    u8 = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=gen)
    return u8, (torch.rand(n, 15, generator=gen) < 0.2).float()


def throughput(step: Callable[[Tensor, Tensor], object], u8: Tensor, y: Tensor,
               device: torch.device, steps: int = 3, warmup: int = 1) -> float:
    """Training images per second of ``step`` on one batch, timed after ``warmup`` untimed steps
    (the first step pays for cuDNN autotuning, allocator growth and lazy initialisation)."""
    for _ in range(warmup):
        step(u8, y)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(u8, y)
    synchronize(device)
    return steps * u8.shape[0] / (time.perf_counter() - t0)
