"""The three ways to weigh a VAE's reconstruction against its KL, and why they matter.

Every VAE objective here is ``reconstruction + beta * KL``; what differs is how each term is reduced
over pixels, latent dimensions and the batch. That choice sets the *effective* beta, and it alone
decides whether the posterior carries information (notebook 02 measures it):

``paper``     what §5.2 says: the pixel-*mean* squared error (``F.mse_loss``) plus beta times the KL
              summed over the latent dimensions, both averaged over the batch.
``upstream``  what the authors' code does (juanpajedrez/CS231N-Final-Proj, ``src/train/vae.py``):
              the same pixel-mean MSE plus beta times the KL summed over the latent dimensions *and
              the batch*, so the KL weighs ``batch_size`` (64) times more than in ``paper``.
``elbo``      the evidence lower bound per image in nats: a Gaussian log-likelihood summed over the
              pixels plus the KL, averaged over the batch; beta = 1 is the standard VAE.

The ``elbo`` likelihood is a Gaussian with one *calibrated* sigma (Rybkin et al. 2021, "sigma-VAE"):
sigma^2 is set to its maximum-likelihood value, the batch's pixel-mean squared error, at every step.
Why not a Bernoulli (binary cross-entropy)? Histogram-equalised X-rays are continuous grey levels
spread evenly over [0, 1], not binary; the Bernoulli's implied noise is fixed by the pixel value
(variance p(1 - p)) and its minimum is not a density. The calibrated Gaussian is a proper density
whose noise level the data sets, so ``recon + kl`` is a true negative ELBO and the balance between
the two terms is not a hand-tuned constant.

How strong is the paper's KL? Multiplying its objective by D / (2 sigma^2), which moves no minimum,
turns the pixel-mean MSE into the Gaussian negative log-likelihood with noise sigma^2 and the KL
weight beta into ``beta * D / (2 sigma^2)`` (``effective_beta``). At 64 px (D = 4096) and
sigma^2 = 0.035 (the error of the mean training image on the CXR14 subset), beta = 0.002 is a KL
weight of ~117 and beta = 1 of ~58,500; ``upstream`` multiplies both by the batch size.

Every objective returns the same logged scalars so runs compare directly: ``loss`` (minimised),
``recon`` (its reconstruction term), ``kl`` (nats per image) and ``mse`` (pixel-mean squared error).
"""

from __future__ import annotations

import math
from enum import StrEnum

import torch.nn.functional as F
from torch import Tensor

from cxrnb.errors import CxrnbError


class Reduction(StrEnum):
    """How ``reconstruction + beta * KL`` is reduced (module docstring)."""

    PAPER = "paper"
    UPSTREAM = "upstream"
    ELBO = "elbo"


MIN_LOG_SIGMA = -6.0       # sigma >= 0.0025 (under one grey level of 255): keeps log sigma finite


def check_reduction(reduction: str) -> Reduction:
    """``reduction`` as a ``Reduction``, or a one-line error naming the valid ones."""
    try:
        return Reduction(reduction)
    except ValueError:
        raise CxrnbError(f"unknown loss reduction {reduction!r}; valid: {', '.join(Reduction)} "
                         "(see cxrnb/models/losses.py)") from None


def calibrated_gaussian_nll(x_hat: Tensor, x: Tensor) -> Tensor:
    """-log N(x; x_hat, sigma^2 I) per image (nats, summed over pixels), sigma^2 = the batch's MSE.

    With sigma at its maximum-likelihood value the negative log-likelihood of one image is
    ``sse / (2 sigma^2) + D log sigma + D/2 log(2 pi)``; averaged over the batch it is
    ``D/2 (1 + log(2 pi) + log mse)``. sigma is not detached: at the optimum its gradient is zero.
    """
    sse = (x_hat - x).pow(2).flatten(1).sum(1)
    d = sse.new_tensor(x[0].numel())
    log_sigma = (0.5 * (sse.mean() / d).log()).clamp(min=MIN_LOG_SIGMA)
    return sse / (2 * (2 * log_sigma).exp()) + d * log_sigma + 0.5 * d * math.log(2 * math.pi)


def objective(x_hat: Tensor, x: Tensor, kl: Tensor, beta: float, reduction: str) -> dict[str, Tensor]:
    """``recon + beta * KL`` under ``reduction``; ``kl`` is per image (B,), in nats."""
    x_hat, x, kl = x_hat.float(), x.float(), kl.float()
    mse = F.mse_loss(x_hat, x)
    reduction = check_reduction(reduction)
    if reduction == Reduction.PAPER:
        recon, kl_term = mse, kl.mean()
    elif reduction == Reduction.UPSTREAM:
        recon, kl_term = mse, kl.sum()
    else:
        recon, kl_term = calibrated_gaussian_nll(x_hat, x).mean(), kl.mean()
    return {"loss": recon + beta * kl_term, "recon": recon.detach(), "kl": kl.mean().detach(),
            "mse": mse.detach()}


def effective_beta(reduction: str, beta: float, pixels: int, noise_var: float, batch_size: int = 64,
                   recon_scale: float = 1.0) -> float:
    """The KL weight ``reduction`` amounts to on the per-image ELBO's scale, for Gaussian pixel noise
    ``noise_var``; ``recon_scale`` is how much the reconstruction term is scaled beyond the [0, 1]
    pixel-mean MSE (1/std^2 averaged over channels for ImageNet-normalised inputs)."""
    reduction = check_reduction(reduction)
    if reduction == Reduction.ELBO:
        return beta
    weight = beta * pixels / (2 * noise_var * recon_scale)
    return weight * batch_size if reduction == Reduction.UPSTREAM else weight
