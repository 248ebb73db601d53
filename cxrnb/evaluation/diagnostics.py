"""Is the posterior alive? Collapse diagnostics for models with an encoder (VAE, GMVAE).

A VAE whose KL term wins sets q(z|x) = p(z) for every image: the decoder then ignores z and draws
one average image, whatever the latent. Four numbers tell that apart from a working model:

* **KL** per image (nats), and per latent dimension for a N(0, I) prior: ~0 everywhere is collapse.
* **Active units** (Burda et al. 2016, "Importance Weighted Autoencoders", §5.2): dimension d is
  active when Cov_x(E_q[z_d | x]) > 0.01, i.e. its posterior mean varies across images.
  On a simplex (the Dirichlet VAE) raw coordinates are the wrong scale: K = 50 weights of mean 1/50
  vary by far less than 0.01 even when the encoder uses them all. There a component is active when
  its posterior mean's *centred log-ratio* coordinate, clr(p)_k = log p_k - mean_j log p_j, varies
  across images by more than 1% of that coordinate's variance under the prior Dir(alpha0), which is
  psi_1(alpha0) (K - 1) / K (psi_1 the trigamma function). That is Burda's ratio: 0.01 is 1% of the
  unit variance of a N(0, I) prior coordinate. For E_q[z] = alpha / sum(alpha), clr is simply
  log alpha centred over the components, so the count is scale-free in alpha.
* **Reconstruction MSE** of held-out images beside the **mean-image MSE**, the error of answering
  every image with the mean training image: a model that does not beat that baseline has learned
  nothing about the particular image. Reconstructions decode one (seeded) draw of q(z|x), as the
  ELBO's reconstruction term does, not the posterior mean: a collapsed VAE's decoder has only ever
  seen z ~ N(0, I), and its posterior mean (~0) is a point it never decoded in training, so decoding
  it would overstate the error of a model whose real failure is ignoring z.

``Diagnostics.collapsed`` calls a posterior collapsed when no unit is active or when its
reconstructions are not at least ``COLLAPSE_MARGIN`` (5%) better than the mean image: a latent
that buys less than that carries next to nothing about the image.

Everything here is computed in eval mode with the global random state untouched, so calling it
during training (``train(..., monitor=...)``) never changes the run it watches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cxrnb.models.base import GenerativeModel, Prior

ACTIVE_THRESHOLD = 0.01      # Burda et al. 2016
COLLAPSE_MARGIN = 0.05       # reconstructions must beat the mean image by this fraction


def active_units(means: Tensor, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Dimensions whose posterior mean varies across images by more than ``threshold`` (variance)."""
    return int((means.double().var(0) > threshold).sum())


def clr(p: Tensor) -> Tensor:
    """Centred log-ratio coordinates of points on the simplex (N, K): log p minus its row mean."""
    log_p = p.double().log()
    return log_p - log_p.mean(1, keepdim=True)


def dirichlet_clr_variance(alpha0: float, k: int) -> float:
    """Var(clr(z)_k) for z ~ Dir(alpha0 * 1_K): log z_k = log G_k - log sum G with G_j ~ Gamma(alpha0)
    independent, the sum cancels in clr, and Var(log G) = psi_1(alpha0), so the variance of
    (1 - 1/K) log G_k - 1/K sum_{j != k} log G_j is psi_1(alpha0) (K - 1) / K."""
    return float(torch.polygamma(1, torch.tensor(float(alpha0), dtype=torch.float64))) * (k - 1) / k


def count_active(model: GenerativeModel, means: Tensor) -> int:
    """Active units of posterior means (N, D) under the model's prior (module docstring): Burda's
    rule for a Gaussian latent, the clr rule for a Dirichlet one."""
    if model.prior == Prior.DIRICHLET:
        k = means.shape[1]
        return active_units(clr(means), ACTIVE_THRESHOLD * dirichlet_clr_variance(model.alpha0, k))
    return active_units(means)


def kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu_d, exp(logvar_d)) || N(0, 1)) of each dimension, averaged over images: (D,)."""
    return (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).mean(0)


@dataclass
class Diagnostics:
    kl: float                    # nats per image: the model's own KL term (Monte-Carlo for a mixture)
    active_units: int
    mse: float                   # reconstruction from one draw of q(z|x), pixel mean, [0, 1] grey
    mean_image_mse: float        # the mean training image as every reconstruction
    kl_per_dim: np.ndarray | None = None   # (D,), for a N(0, I) prior only

    @property
    def collapsed(self) -> bool:
        """No active unit, or reconstructions not 5% better than the mean image (module docstring)."""
        return self.active_units == 0 or not self.mse < (1 - COLLAPSE_MARGIN) * self.mean_image_mse

    def scalars(self) -> dict[str, float]:
        return {"kl": self.kl, "active_units": float(self.active_units), "heldout_mse": self.mse,
                "mean_image_mse": self.mean_image_mse}


@contextmanager
def _seeded_eval(model: GenerativeModel, seed: int) -> Iterator[None]:
    """Eval mode without gradients (``model.evaluating``) and a random stream seeded with ``seed``
    (the posterior draws, the same on every call); afterwards the model's mode and the global
    random state are as they were, so a call during training never changes the run it watches."""
    with model.evaluating(), torch.random.fork_rng(
            devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _decode_draw(model: GenerativeModel, mu: Tensor, second: Tensor, y: Tensor) -> Tensor:
    """One draw of q(z|x) from ``encode``'s pair, decoded to [0, 1] grey: the reconstruction scored."""
    z = model.draw_posterior(mu, second)
    return model.input_spec.to_unit(model.decode(z, model.condition(y, len(z))).float())


@torch.no_grad()
def diagnose(model: GenerativeModel, u8: Tensor, y: Tensor, mean_image: Tensor,
             batch: int = 128, seed: int = 0) -> Diagnostics:
    """The four numbers on uint8 images (N, 1, S, S) with labels (N, 15); ``mean_image`` (S, S) or
    (1, S, S) in [0, 1] is the training split's mean."""
    means, kls, sq_err, kl_dims = [], [], 0.0, []
    with _seeded_eval(model, seed):
        for i in range(0, len(u8), batch):
            x = model.input_spec.to_model(u8[i:i + batch].to(model.device))
            mu, logvar = (t.float() for t in model.encode(x))
            grey = _decode_draw(model, mu, logvar, y[i:i + batch].to(model.device))
            truth = u8[i:i + batch].to(model.device).float().div(255)
            sq_err += float(F.mse_loss(grey, truth, reduction="sum"))
            kls.append(model.posterior_kl(mu, logvar).double().sum())
            means.append(mu.cpu())
            if model.prior == Prior.NORMAL:
                kl_dims.append(kl_per_dim(mu, logvar).cpu() * len(x))
    n, pixels = len(u8), u8[0].numel()
    truth = u8.float().div(255)
    mean_image = mean_image.float().reshape(1, *truth.shape[1:])
    return Diagnostics(
        kl=float(sum(kls)) / n, active_units=count_active(model, torch.cat(means)),
        mse=sq_err / (n * pixels),
        mean_image_mse=float(F.mse_loss(mean_image.expand_as(truth), truth)),
        kl_per_dim=(torch.stack(kl_dims).sum(0) / n).numpy() if kl_dims else None)


@torch.no_grad()
def reconstruct(model: GenerativeModel, u8: Tensor, y: Tensor | None = None, seed: int = 0) -> Tensor:
    """Held-out images reconstructed as ``diagnose`` scores them: one seeded draw of q(z|x), decoded;
    (N, 1, S, S) in [0, 1]. The global random state is left as it was."""
    with _seeded_eval(model, seed):
        mu, logvar = (t.float() for t in model.encode(model.input_spec.to_model(u8.to(model.device))))
        return _decode_draw(model, mu, logvar, y.to(model.device) if y is not None else y).cpu()


def monitor(u8: Tensor, y: Tensor, mean_image: Tensor) -> Callable[[GenerativeModel], dict[str, float]]:
    """A training-loop monitor: the diagnostics on fixed held-out images, as loggable scalars."""
    return lambda model: diagnose(model, u8, y, mean_image).scalars()
