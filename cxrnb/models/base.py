"""The contract between models and everything else (training loop, metrics, explorer, plots).

A model is a plain ``nn.Module``. The training loop knows nothing about VAEs or GANs: it reads the
model's ``schedule`` (which optimiser takes how many steps per batch), asks ``optimizer(part)`` for
the paper's Adam settings, and calls ``loss(x, y, part)``, which returns a dict of scalars whose
``"loss"`` entry is minimised and whose other entries are logged.

Everything downstream of training sees images through ``generate``: 1 channel, values in [0, 1],
whatever the model's own input space (1 or 3 channels, tanh or sigmoid range, ImageNet-normalised).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from cxrnb.errors import CxrnbError

# The ImageNet statistics the paper's GMVAE V3-V6 normalise with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """How a model wants its images presented; the Dataset builds tensors to this spec."""

    size: int = 128
    channels: int = 1                                 # 1 (VAE, GAN) or 3 (GMVAE, VGG/DenseNet encoders)
    value_range: Literal["tanh", "unit"] = "tanh"     # [-1, 1] or [0, 1] before any normalisation
    imagenet_norm: bool = False                       # then (x - mean) / std per channel, x in [0, 1]

    def to_model(self, u8: Tensor) -> Tensor:
        """uint8 greyscale batch (B, H, W) or (B, 1, H, W) -> float tensor in the model's space."""
        x = u8.float().div_(255.0)
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if self.imagenet_norm:
            mean = torch.tensor(IMAGENET_MEAN[: self.channels], device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(IMAGENET_STD[: self.channels], device=x.device).view(1, -1, 1, 1)
            return (x - mean) / std
        return x * 2 - 1 if self.value_range == "tanh" else x.contiguous()

    def to_unit(self, x: Tensor) -> Tensor:
        """Model-space images -> 1-channel [0, 1] (channel mean), the inverse of ``to_model``."""
        if self.imagenet_norm:
            mean = torch.tensor(IMAGENET_MEAN[: x.shape[1]], device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(IMAGENET_STD[: x.shape[1]], device=x.device).view(1, -1, 1, 1)
            x = x * std + mean
        elif self.value_range == "tanh":
            x = (x + 1) / 2
        return x.mean(1, keepdim=True).clamp(0, 1)


class GenerativeModel(nn.Module):
    """Base class: subclasses set the attributes and implement the methods below."""

    family: str = "base"                              # "vae" | "gmvae" | "gan" | "dirvae" | "diffusion"
    input_spec: InputSpec = InputSpec()
    latent_dim: int = 0
    prior: str = "normal"                             # of z: "normal" (N(0, I)), "mixture" (GMVAE),
                                                      # "dirichlet" (DirVAE: z on the simplex)
    # (part, steps per batch) in order; e.g. (("model", 1),) or the LSGAN's (("d", 1), ("g", 3)).
    schedule: tuple[tuple[str, int], ...] = (("model", 1),)
    conditional: bool = False                         # True when decode/generate use labels y

    def optimizer(self, part: str) -> torch.optim.Optimizer:
        """The paper's optimiser for one part (Adam; lr and betas per family)."""
        raise NotImplementedError

    def loss(self, x: Tensor, y: Tensor, part: str = "model") -> dict[str, Tensor]:
        """Scalars for one step of ``part`` on a batch; ``"loss"`` is minimised, the rest logged."""
        raise NotImplementedError

    def after_step(self, part: str) -> None:
        """Called by the training loop after each optimiser step of ``part`` (e.g. to update EMA
        weights); nothing by default."""

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws from the prior (on the model's device)."""
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Latents (and labels for conditional models) -> images in the model's input space."""
        raise NotImplementedError

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (BatchNorm's running statistics, no dropout) and no gradients for the block, then
        the mode it had: looking at a model during training never changes the run."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The decoded posterior mean, ``encode(x)[0]``: the deterministic reconstruction of x, for the
        models with an encoder (VAE, GMVAE, Dirichlet VAE)."""
        if not callable(getattr(self, "encode", None)):
            raise CxrnbError(f"{type(self).__name__} has no encoder, so it cannot reconstruct an image")
        return self.decode(self.encode(x)[0], y)

    @torch.no_grad()
    def generate(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Latents -> 1-channel images in [0, 1], what metrics and plots consume."""
        return self.input_spec.to_unit(self.decode(z, y).float())

    def param_counts(self) -> dict[str, int]:
        """Parameter counts by the parts the paper's Table 5 names, plus "total"."""
        return {"total": sum(p.numel() for p in self.parameters())}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
