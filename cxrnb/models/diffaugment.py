"""Differentiable augmentation for GANs on little data (DiffAugment, Zhao et al. 2020).

A discriminator trained on a few thousand images memorises them and stops giving the generator a
useful gradient. Augmenting only the real images would teach the generator to draw the augmentations;
DiffAugment applies the *same differentiable ops* to real and to generated images, every time the
discriminator sees them (both networks' steps), so the discriminator never sees the bare training set
and the generator's gradient flows back through the ops to its weights.

The ops here are the two of the paper's "translation,cutout" policy, in its order and with its
defaults (the official ``DiffAugment_pytorch.py``):

* translation: shift each image by up to 1/8 of its size in each direction (integer pixels), with
  zeros shifted in;
* cutout: set a square of half the image size to zero, its centre anywhere in the image (clipped at
  the borders).

Zero is mid-grey in the GAN's [-1, 1] range. Every call draws fresh parameters per image (the paper
augments real and fake batches with independent draws); ``draw`` and ``apply`` are separate so that
one draw can be applied to two batches, which is how the tests check that real and fake get the same
transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Draw:
    """One image batch's augmentation parameters: per image, its shift (rows, columns), and the
    top-left corner (row, column) of its cutout square, which may lie outside the image."""

    shift: Tensor       # (B, 2) integers in [-max_shift, max_shift]
    corner: Tensor      # (B, 2) integers
    cutout_size: tuple[int, int]


def translate(x: Tensor, shift: Tensor) -> Tensor:
    """out[b, :, i, j] = x[b, :, i + shift[b, 0], j + shift[b, 1]], zero outside the image: a gather
    from the zero-padded image (padding 1 and clamped indices, as the official code does)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1))
    rows = (torch.arange(h, device=x.device)[None, :] + shift[:, :1] + 1).clamp(0, h + 1)     # (B, H)
    cols = (torch.arange(w, device=x.device)[None, :] + shift[:, 1:] + 1).clamp(0, w + 1)     # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)           # (B,H,W,C) ->


def cutout(x: Tensor, corner: Tensor, size: tuple[int, int]) -> Tensor:
    """x with the ``size`` rectangle whose top-left corner is ``corner`` (per image) set to zero."""
    _, _, h, w = x.shape
    r = torch.arange(h, device=x.device)[None, :] - corner[:, :1]           # (B, H): row within the square
    c = torch.arange(w, device=x.device)[None, :] - corner[:, 1:]
    inside = ((r >= 0) & (r < size[0]))[:, :, None] & ((c >= 0) & (c < size[1]))[:, None, :]
    return x * (~inside)[:, None].to(x.dtype)


@dataclass(frozen=True)
class DiffAugment:
    """The "translation,cutout" policy: ``translation`` and ``cutout`` as fractions of the image size
    (the paper's 1/8 and 1/2)."""

    translation: float = 0.125
    cutout: float = 0.5

    def draw(self, n: int, size: tuple[int, int], generator: torch.Generator | None = None,
             device: torch.device | str = "cpu") -> Draw:
        """Fresh parameters for ``n`` images of ``size`` (H, W), drawn as the official code does: shifts
        uniform in [-s, s] with s = round(size / 8); cutout centres uniform over the image (one more
        position when the square's side is even, as there), the corner half a side before."""
        where = generator.device if generator is not None else device
        h, w = size
        sh, sw = int(h * self.translation + 0.5), int(w * self.translation + 0.5)
        ch, cw = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
        shift = torch.stack([torch.randint(-sh, sh + 1, (n,), generator=generator, device=where),
                             torch.randint(-sw, sw + 1, (n,), generator=generator, device=where)], 1)
        centre = torch.stack([torch.randint(0, h + 1 - ch % 2, (n,), generator=generator, device=where),
                              torch.randint(0, w + 1 - cw % 2, (n,), generator=generator, device=where)], 1)
        corner = centre - torch.tensor([ch // 2, cw // 2], device=where)
        return Draw(shift.to(device), corner.to(device), (ch, cw))

    def apply(self, x: Tensor, draw: Draw) -> Tensor:
        """Translation, then cutout (the paper's order), with the parameters of ``draw``."""
        return cutout(translate(x, draw.shift), draw.corner, draw.cutout_size)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``x`` augmented with fresh parameters (from ``generator``, else torch's global one)."""
        return self.apply(x, self.draw(len(x), tuple(x.shape[-2:]), generator, x.device))
