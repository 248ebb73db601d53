"""Image tensors in the one form metrics, classifiers and plots read: float (N, 1, H, W) in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def as_unit_images(x) -> Tensor:
    """uint8 (N, H, W) / (N, 1, H, W) or float in [0, 1], numpy or torch -> float32 (N, 1, H, W)."""
    x = torch.as_tensor(np.asarray(x)) if not isinstance(x, Tensor) else x
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return x.unsqueeze(1) if x.dim() == 3 else x


def noisy(x: Tensor, sigma: float, g: torch.Generator) -> Tensor:
    """Additive Gaussian noise of std ``sigma``, clipped to [0, 1]."""
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)
