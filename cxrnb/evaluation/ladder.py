"""A calibration ladder: known degradations of real images, scored like models.

A Fréchet distance means nothing on its own: its size depends on the feature space, the number
of images and the data. Real test images that were only flipped, slightly blurred, reduced to
16 px or made noisy, and the mean training image plus noise (no anatomy variation at all), are
scored by the same ``evaluate.evaluate`` call as the models (its ``ladder`` argument), so every
model's number sits on a visible scale: "between a 1-px blur and a 2-px blur", "worse than 16 px".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import Tensor

from cxrnb.data.tensors import as_unit_images, noisy
from cxrnb.errors import CxrnbError

NOISE_SIGMA = 0.1          # grey levels in [0, 1]
LOW_RES = 16               # px


def blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur with a kernel of ±3σ (reflected borders), σ in pixels."""
    return TF.gaussian_blur(x, kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)


def low_res(x: Tensor, size: int = LOW_RES) -> Tensor:
    """Down to ``size`` px by area averaging (each low-res pixel the mean of its block), back up
    bilinearly: the detail a ``size``-px image cannot hold is gone, the layout stays."""
    if x.shape[-1] % size or x.shape[-2] % size:
        raise CxrnbError(f"low_res needs a side divisible by {size}, got {tuple(x.shape[-2:])}")
    small = F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(small, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)


def ladder(real_test, train_mean, seed: int = 0) -> dict[str, Tensor]:
    """{rung: images}, image i of every rung made from ``real_test[i]`` (float (N, 1, H, W) in
    [0, 1]); ``train_mean`` is the mean training image ((1, H, W) or (H, W), float [0, 1] or uint8).
    Ordered from mild to severe as they usually score; ``evaluate`` prefixes the names "ladder: ".
    """
    x = as_unit_images(real_test)
    mean = torch.as_tensor(train_mean)
    if mean.numel() != x.shape[-2] * x.shape[-1]:
        raise CxrnbError(f"mean image {tuple(mean.shape)} and test images "
                         f"{tuple(x.shape[-2:])} differ in size")
    mean = as_unit_images(mean.reshape(1, 1, *x.shape[-2:]))
    g = torch.Generator().manual_seed(seed)
    return {"flipped": x.flip(-1),
            "blur σ=1 px": blur(x, 1.0),
            "blur σ=2 px": blur(x, 2.0),
            f"noise σ={NOISE_SIGMA:g}": noisy(x, NOISE_SIGMA, g),
            f"{LOW_RES} px and back": low_res(x),
            f"mean training image + noise σ={NOISE_SIGMA:g}":
                noisy(mean.expand(len(x), -1, -1, -1), NOISE_SIGMA, g)}
