"""Post-hoc labelling: an unconditional generator made conditional by search (after Segal et al.
2021, who searched a generator's latent for images a classifier assigns a finding).

An unconditional model draws images without labels, so it cannot serve the augmentation test, which
needs images for given findings. Instead of retraining it with labels, draw ``pool`` candidates for
each requested label row, let a *labeller* (a classifier trained on the real training images) read
every candidate, and keep the one whose predicted findings best explain the row: the highest
Bernoulli log-likelihood

    sum_k  y_k log p_k + (1 - y_k) log(1 - p_k)        over the 14 findings.

Nothing of the generator changes: the labels are chosen among its samples, so an image can carry
a finding only as far as the generator already draws it, and as far as the labeller can see it.
The labeller must not be the network that later judges the images (the shipped ruler): images
chosen by a network always look right to that same network.

``PosthocLabelled`` is a ``GenerativeModel``: its latent for one image is the pool of the base
model's latents, (pool, *latent), so every sampling path of the study (``study.samples``, timing,
scoring) takes it as it takes any conditional model. Without labels it returns each pool's first
candidate, i.e. the base model's own samples.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from cxrnb.errors import CxrnbError
from cxrnb.labels import FINDINGS
from cxrnb.models.base import GenerativeModel

POOL = 16            # candidates drawn per requested label row
EPS = 1e-6           # probabilities are clamped to [EPS, 1 - EPS] before the logarithm


def label_fit(y: Tensor, p: Tensor) -> Tensor:
    """Bernoulli log-likelihood of label rows ``y`` (N, 14) under probabilities ``p`` (N, P, 14)
    of P candidates each: (N, P), higher is a better fit."""
    p = p.clamp(EPS, 1 - EPS)
    y = y[:, None, :]
    return (y * p.log() + (1 - y) * (1 - p).log()).sum(-1)


Labeller = Callable[[Tensor], Tensor]     # images (N, 1, S, S) in [0, 1] -> (N, 14) probabilities


class PosthocLabelled(GenerativeModel):
    """``model`` (any unconditional generator) sampled for given labels by choosing, for each label
    row, the best of ``pool`` of its samples as read by ``labeller``."""

    conditional = True

    def __init__(self, model: GenerativeModel, labeller: Labeller, pool: int = POOL,
                 labeller_name: str = "a labeller"):
        super().__init__()
        if model.conditional:
            raise CxrnbError(f"{model.preset or type(model).__name__} is already conditional: "
                             "post-hoc labelling is for unconditional models")
        if pool < 1:
            raise CxrnbError(f"pool must be >= 1 candidate per label row (got {pool})")
        self.model, self.labeller, self.pool, self.labeller_name = model, labeller, pool, labeller_name
        self.family, self.input_spec, self.latent_dim = model.family, model.input_spec, model.latent_dim
        self.sample_steps = model.sample_steps
        self.preset = f"{model.preset} · labelled post hoc" if model.preset else None

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, pool, *latent): each image's pool of the base model's latents."""
        z = self.model.sample_latent(n * self.pool, generator)
        return z.view(n, self.pool, *z.shape[1:])

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        raise CxrnbError("a post-hoc labelled model chooses among decoded images: call generate")

    @torch.no_grad()
    def generate(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Pools of latents (n, pool, *latent) -> n images in [0, 1]: per row of ``y`` the candidate
        the labeller finds most consistent with it (``label_fit``); without ``y``, each pool's first."""
        if y is None:
            return self.model.generate(z[:, 0])
        n, pool = z.shape[:2]
        images = self.model.generate(z.flatten(0, 1))
        images = images.view(n, pool, *images.shape[1:])
        want = self.condition(y, n)[:, :len(FINDINGS)]
        p = self.labeller(images.flatten(0, 1)).to(want.device, torch.float32).view(n, pool, -1)
        best = label_fit(want, p).argmax(1)
        return images[torch.arange(n, device=images.device), best.to(images.device)]

    def param_counts(self) -> dict[str, int]:
        return self.model.param_counts()

    def describe(self) -> str:
        """How the images are chosen, in words (results.md names each generator with it)."""
        return (f"labelled post hoc: for each requested label row, the best of {self.pool} samples of "
                f"{self.model.preset}, judged by how well the findings {self.labeller_name} predicts in each "
                "explain the row (Bernoulli log-likelihood)")
