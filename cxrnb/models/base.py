"""The contract between models and everything else (training loop, metrics, explorer, plots).

A model is a plain ``nn.Module``. The training loop knows nothing about VAEs or GANs: it reads the
model's ``schedule`` (which optimiser takes how many steps per batch), asks ``optimizer(part)`` for
the paper's Adam settings, and calls ``loss(x, y, part)``, which returns a dict of scalars whose
``"loss"`` entry is minimised and whose other entries are logged.

Everything downstream of training sees images through ``generate``: 1 channel, values in [0, 1],
whatever the model's own input space (1 or 3 channels, tanh or sigmoid range, ImageNet-normalised).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import torch
from torch import Tensor, nn

from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS

# The ImageNet statistics the paper's GMVAE V3-V6 normalise with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x: Tensor, inverse: bool = False) -> Tensor:
    """(x - mean) / std per channel with ImageNet's statistics (its first C channels), or the inverse."""
    c = x.shape[1]
    mean = torch.tensor(IMAGENET_MEAN[:c], device=x.device, dtype=x.dtype).view(1, c, 1, 1)
    std = torch.tensor(IMAGENET_STD[:c], device=x.device, dtype=x.dtype).view(1, c, 1, 1)
    return x * std + mean if inverse else (x - mean) / std


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
            return imagenet_normalize(x)
        return x * 2 - 1 if self.value_range == "tanh" else x.contiguous()

    def to_unit(self, x: Tensor) -> Tensor:
        """Model-space images -> 1-channel [0, 1] (channel mean), the inverse of ``to_model``."""
        if self.imagenet_norm:
            x = imagenet_normalize(x, inverse=True)
        elif self.value_range == "tanh":
            x = (x + 1) / 2
        return x.mean(1, keepdim=True).clamp(0, 1)


class Family(StrEnum):
    """The model families the study compares; a preset names its family (presets.py)."""

    GAN = "gan"
    VAE = "vae"
    GMVAE = "gmvae"
    DIRVAE = "dirvae"            # its own family: its prior, not only its loss, differs from the VAE's
    DIFFUSION = "diffusion"


class Prior(StrEnum):
    """The distribution of z: N(0, I), a Gaussian mixture (GMVAE), or a Dirichlet on the simplex."""

    NORMAL = "normal"
    MIXTURE = "mixture"
    DIRICHLET = "dirichlet"


class Part(StrEnum):
    """The parts of a training schedule: one optimiser each (the GAN's D and G, or the whole model)."""

    MODEL = "model"
    D = "d"
    G = "g"


def count_params(module: nn.Module) -> int:
    """The number of parameters of ``module``: the one way the parts of Table 5 are counted."""
    return sum(p.numel() for p in module.parameters())


def adam(params: Iterable[nn.Parameter], fused: bool, adamw: bool = False, **settings) -> torch.optim.Optimizer:
    """Adam (or AdamW) with ``settings``; ``fused``: one kernel per step instead of torch's loop over
    the parameter tensors (on a CPU that loop was ~30% of a batch-8 VAE step, bench.md), the same
    update to float rounding. ``fused=False`` leaves torch's default kernel choice."""
    return (torch.optim.AdamW if adamw else torch.optim.Adam)(params, fused=True if fused else None, **settings)


class GenerativeModel(nn.Module):
    """Base class: subclasses set the attributes and implement the methods below."""

    family: Family
    preset: str | None = None                         # the preset it was built from (presets.build)
    input_spec: InputSpec = InputSpec()
    latent_dim: int = 0
    prior: Prior = Prior.NORMAL
    # (part, steps per batch) in order; e.g. ((MODEL, 1),) or the LSGAN's ((D, 1), (G, 3)).
    schedule: tuple[tuple[Part, int], ...] = ((Part.MODEL, 1),)
    conditional: bool = False                         # True when decode/generate use labels y
    has_encoder: bool = False                         # encode, posterior_kl, draw_posterior (VAEs)
    pretrained: bool | None = None                    # ImageNet encoder loaded (None: no such encoder)
    reduction: str | None = None                      # the VAE loss's reduction (losses.Reduction)
    sample_steps: int | None = None                   # network passes per sample beyond one (DDPM)
    n_components: int = 0                             # mixture components of the prior (GMVAE)
    # Table 5's parts: label -> submodule attribute; param_counts counts each, and their total.
    counted_parts: dict[str, str] = {}

    def optimizer(self, part: Part, fused: bool = True) -> torch.optim.Optimizer:
        """The paper's optimiser for one part (Adam; lr and betas per family), see ``adam``."""
        raise NotImplementedError

    def loss(self, x: Tensor, y: Tensor, part: Part = Part.MODEL) -> dict[str, Tensor]:
        """Scalars for one step of ``part`` on a batch; ``"loss"`` is minimised, the rest logged."""
        raise NotImplementedError

    def after_step(self, part: Part) -> None:
        """Called by the training loop after each optimiser step of ``part`` (e.g. to update EMA
        weights); nothing by default."""

    def draw_device(self, generator: torch.Generator | None) -> torch.device:
        """Where random draws are made: on the generator's own device (a CPU generator gives the same
        numbers whatever device the model is on), else on the model's; callers move them to the model."""
        return generator.device if generator is not None else self.device

    def gaussian(self, *shape: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard-normal noise of ``shape`` on the model's device (drawn on ``draw_device``)."""
        return torch.randn(*shape, generator=generator, device=self.draw_device(generator)).to(self.device)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws from the prior (on the model's device): N(0, I) unless a model overrides it."""
        return self.gaussian(n, self.latent_dim, generator=generator)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images -> the posterior's (mean, second parameter), for models with ``has_encoder``."""
        raise CxrnbError(f"{type(self).__name__} has no encoder")

    def posterior_kl(self, first: Tensor, second: Tensor) -> Tensor:
        """KL(q(z|x) || p(z)) per image from ``encode``'s pair."""
        raise CxrnbError(f"{type(self).__name__} has no encoder")

    def draw_posterior(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """One reparameterised draw of q(z|x) = N(mu, exp(logvar)): mu + eps * exp(logvar / 2)
        (Kingma & Welling 2014); the Dirichlet VAE overrides it."""
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp()

    def condition(self, y: Tensor | None, n: int) -> Tensor | None:
        """The labels a conditional model decodes ``n`` latents with: ``y`` (one multi-hot row over
        ``LABELS``, or one per latent) as float rows on the model's device; None for a model
        without labels. A conditional model without ``y`` is a one-line error."""
        if not self.conditional:
            return None
        if y is None:
            raise CxrnbError(f"{self.preset or type(self).__name__} is conditional: give labels y (pass y: one "
                             f"multi-hot row over cxrnb.labels.LABELS per latent, ({n}, {len(LABELS)}), or one "
                             f"row ({len(LABELS)},) for all)")
        y = torch.as_tensor(y).to(self.device, torch.float32)
        return y.expand(n, -1) if y.dim() == 1 else y

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

    @torch.no_grad()
    def generate(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Latents -> 1-channel images in [0, 1], what metrics and plots consume."""
        return self.input_spec.to_unit(self.decode(z, y).float())

    def param_counts(self) -> dict[str, int]:
        """Parameter counts by the parts the paper's Table 5 names (``counted_parts``), plus "total"."""
        counts = {label: count_params(getattr(self, attr)) for label, attr in self.counted_parts.items()}
        return {**counts, "total": sum(counts.values()) if counts else count_params(self)}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
