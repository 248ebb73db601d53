"""Ex-post density estimation (Ghosh et al. 2020, "From Variational to Deterministic Autoencoders",
§4): sample a trained VAE where its data is, not where its prior is.

A VAE's decoder has only ever decoded the training images' posteriors. When the aggregate posterior
q(z) = mean_x q(z|x) does not fill the prior, prior draws land in holes the decoder never saw (blank
or washed-out frames). Ghosh et al. fit a Gaussian mixture to the training images' posterior means
after training and sample that instead; nothing about the model changes.

The steps here, one owner each:

1. **Coordinates** (``Coordinates``): the posterior means in a flat Euclidean space a Gaussian fits.
   Gaussian VAE and GMVAE: the means themselves, what the decoder reads. Dirichlet VAE: its means lie
   on the simplex, where a Gaussian would put mass outside it; they are mapped by the *additive
   log-ratio* alr(p)_i = log(p_i / p_K), i < K (Aitchison 1982), a bijection between the open simplex
   and R^(K-1), and mapped back by softmax([y, 0]), so every draw is a point of the simplex.
2. **Principal directions**: at most ``max_dims`` principal directions of the training coordinates
   are modelled, those holding ``variance_kept`` of their variance; the rest are held at the
   training mean. A full covariance in a 1024- or 2000-dimensional latent cannot be estimated from a
   thousand images, and most of a VAE's dimensions carry no variance (inactive units).
3. **The mixture**: scikit-learn's ``GaussianMixture`` for each number of components and covariance
   type of the grid; the one with the highest mean log-likelihood of the *validation* images'
   coordinates is kept (the training likelihood would always prefer more components).
4. **Sampling**: drawn from the kept mixture's parameters with a torch generator (a component per
   draw from the weights, then mean + Cholesky factor x noise), so a seed gives the same samples on
   every call and after ``save`` / ``load``.

``ExPostSampler`` is a ``GenerativeModel`` whose ``sample_latent`` is the fitted mixture and whose
``decode`` is the trained model's, so every sampling path of the study (``study.samples``, timing,
scoring) takes it as it takes the model; ``sample(n, seed)`` returns images directly.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import Tensor

from cxrnb.errors import CxrnbError
from cxrnb.models.base import GenerativeModel, Prior
from cxrnb.paths import atomic

COMPONENTS = (1, 2, 4, 8, 16, 32)     # the mixture sizes tried
COVARIANCES = ("full", "diag")        # sklearn's covariance types tried
MAX_DIMS = 64                         # principal directions modelled at most
VARIANCE_KEPT = 0.99                  # ... or fewer, when they already hold this share of the variance
REG_COVAR = 1e-6                      # sklearn's default: added to each covariance's diagonal
FILE = "expost.pt"                    # beside the run's checkpoint


class Coordinates(StrEnum):
    """Where the mixture is fitted: the posterior means themselves, or their additive log-ratios."""

    MEAN = "posterior mean"
    ALR = "additive log-ratio"


def coordinates_for(model: GenerativeModel) -> Coordinates:
    return Coordinates.ALR if model.prior == Prior.DIRICHLET else Coordinates.MEAN


def alr(p: Tensor) -> Tensor:
    """Points of the open simplex (N, K) -> R^(K-1): log(p_i / p_K)."""
    log_p = p.double().log()
    return log_p[:, :-1] - log_p[:, -1:]


def alr_inverse(y: Tensor) -> Tensor:
    """R^(K-1) -> the simplex: softmax([y, 0]), the inverse of ``alr``."""
    return torch.softmax(torch.cat([y, torch.zeros_like(y[:, :1])], 1), 1)


@dataclass
class Mixture:
    """A Gaussian mixture in the kept principal coordinates, and the map back to the latent."""

    weights: Tensor          # (k,)
    means: Tensor            # (k, m)
    covariances: Tensor      # (k, m, m), diagonal ones stored full
    center: Tensor           # (d,) the training coordinates' mean
    directions: Tensor       # (m, d) orthonormal rows: the principal directions kept

    def to_coordinates(self, s: Tensor) -> Tensor:
        """Principal coordinates (n, m) -> coordinates (n, d)."""
        return self.center + s @ self.directions

    def in_coordinates(self) -> tuple[Tensor, Tensor, Tensor]:
        """(weights, means (k, d), covariances (k, d, d)) of the mixture in the coordinates: the
        principal space's mixture pushed through the affine map (rank m covariances)."""
        u = self.directions
        return self.weights, self.to_coordinates(self.means), u.T @ self.covariances @ u

    def draw(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws (n, d), float64, on the CPU: a component each from the weights, then its Gaussian."""
        which = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covariances)
        s = self.means[which] + (chol[which] @ eps[:, :, None])[:, :, 0]
        return self.to_coordinates(s)

    def state(self) -> dict[str, Tensor]:
        return {k: getattr(self, k) for k in ("weights", "means", "covariances", "center", "directions")}


def principal_basis(z: Tensor, max_dims: int = MAX_DIMS,
                    variance_kept: float = VARIANCE_KEPT) -> tuple[Tensor, Tensor, float]:
    """(center (d,), directions (m, d), share of the variance they hold) of coordinates z (n, d)."""
    center = z.mean(0)
    _, s, vh = torch.linalg.svd(z - center, full_matrices=False)
    var = s.pow(2)
    share = var.cumsum(0) / var.sum().clamp_min(1e-300)
    m = min(max_dims, int((share < variance_kept).sum()) + 1, len(s))
    return center, vh[:m], float(share[m - 1])


def _fit_one(train: np.ndarray, k: int, covariance: str, seed: int) -> GaussianMixture:
    with warnings.catch_warnings():       # a size that does not converge still has a likelihood to compare
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(k, covariance_type=covariance, reg_covar=REG_COVAR, max_iter=200,
                               n_init=1, random_state=seed).fit(train)


def _full_covariances(gm: GaussianMixture) -> np.ndarray:
    c = gm.covariances_
    return np.stack([np.diag(v) for v in c]) if gm.covariance_type == "diag" else c


def fit_mixture(train: Tensor, val: Tensor, components=COMPONENTS, covariances=COVARIANCES,
                max_dims: int = MAX_DIMS, variance_kept: float = VARIANCE_KEPT,
                seed: int = 0) -> tuple[Mixture, pd.DataFrame]:
    """The mixture of the grid with the best mean validation log-likelihood, fitted to ``train``
    (n, d) coordinates; and the selection table (one row per candidate, ``chosen`` marking it).
    Sizes with fewer than two training points per component are not tried."""
    train, val = train.double(), val.double()
    if len(train) < 2 or len(val) < 1:
        raise CxrnbError(f"ex-post sampling needs >= 2 training and >= 1 validation images; got "
                         f"{len(train)} and {len(val)}")
    center, directions, kept = principal_basis(train, max_dims, variance_kept)
    tr = ((train - center) @ directions.T).numpy()
    va = ((val - center) @ directions.T).numpy()
    rows, fitted = [], {}
    for k in (k for k in components if 2 * k <= len(tr)):
        for cov in covariances:
            row = {"components": k, "covariance": cov, "dims": tr.shape[1], "variance kept": kept,
                   "train log-lik": np.nan, "val log-lik": np.nan}
            try:
                gm = fitted[k, cov] = _fit_one(tr, k, cov, seed)
                row.update({"train log-lik": gm.score(tr), "val log-lik": gm.score(va)})
            except ValueError:          # a component collapsed onto too few points: not a candidate
                pass
            rows.append(row)
    table = pd.DataFrame(rows)
    if table["val log-lik"].isna().all():
        raise CxrnbError("no Gaussian mixture could be fitted to the training posterior means "
                         "(every candidate had a collapsed component)")
    best = table["val log-lik"].idxmax()
    table["chosen"] = table.index == best
    gm = fitted[table.components[best], table.covariance[best]]
    mixture = Mixture(torch.from_numpy(gm.weights_).double(), torch.from_numpy(gm.means_).double(),
                      torch.from_numpy(_full_covariances(gm)).double(), center, directions)
    return mixture, table


@torch.no_grad()
def posterior_means(model: GenerativeModel, u8: Tensor, batch: int = 256) -> Tensor:
    """E_q[z | x] of uint8 images (N, 1, S, S), (N, D) float64 on the CPU, in eval mode."""
    with model.evaluating():
        return torch.cat([model.encode(model.input_spec.to_model(u8[i:i + batch].to(model.device)))[0]
                          .flatten(1).double().cpu() for i in range(0, len(u8), batch)])


class ExPostSampler(GenerativeModel):
    """A trained VAE-family model sampled from a mixture fitted to its training posterior means."""

    def __init__(self, model: GenerativeModel, mixture: Mixture, coordinates: Coordinates,
                 selection: pd.DataFrame):
        super().__init__()
        if not model.has_encoder or model.conditional:
            raise CxrnbError(f"{model.preset or type(model).__name__}: ex-post sampling needs an "
                             f"unconditional model with an encoder (VAE, GMVAE, Dirichlet VAE)")
        self.model, self.mixture, self.coordinates, self.selection = model, mixture, coordinates, selection
        self.family, self.input_spec, self.latent_dim = model.family, model.input_spec, model.latent_dim
        self.preset = f"{model.preset} · GMM sampler" if model.preset else None

    @classmethod
    def fit(cls, model: GenerativeModel, train_u8: Tensor, val_u8: Tensor, seed: int = 0,
            **grid) -> ExPostSampler:
        """Fit to the posterior means of ``train_u8``, choosing the mixture on ``val_u8`` (``fit_mixture``'s
        ``grid`` arguments: components, covariances, max_dims, variance_kept)."""
        coordinates = coordinates_for(model)
        to = alr if coordinates == Coordinates.ALR else (lambda z: z)
        mixture, table = fit_mixture(to(posterior_means(model, train_u8)), to(posterior_means(model, val_u8)),
                                     seed=seed, **grid)
        return cls(model, mixture, coordinates, table)

    @property
    def chosen(self) -> pd.Series:
        """The selection table's chosen row (components, covariance, dims, likelihoods)."""
        return self.selection[self.selection.chosen].iloc[0]

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws of the mixture, as latents the decoder reads (on the simplex for a Dirichlet VAE).
        Drawn on the CPU (a CUDA generator is refused): the same seed, the same latents anywhere."""
        if generator is not None and generator.device.type != "cpu":
            raise CxrnbError("the ex-post sampler draws on the CPU: pass a CPU torch.Generator")
        y = self.mixture.draw(n, generator)
        z = alr_inverse(y) if self.coordinates == Coordinates.ALR else y
        return z.float().to(self.device)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.model.decode(z, y)

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """``n`` images (n, 1, S, S) in [0, 1] from seed ``seed``, as ``generate`` makes them."""
        with self.evaluating():
            return self.generate(self.sample_latent(n, torch.Generator().manual_seed(seed))).cpu()

    def save(self, path: str | Path, meta: dict | None = None) -> Path:
        """The fitted mixture (not the model: it is the run's checkpoint) and its selection table,
        written atomically; ``meta`` records what it was fitted to (e.g. the model's digest)."""
        state = {"mixture": self.mixture.state(), "coordinates": str(self.coordinates),
                 "selection": self.selection.to_dict(orient="list"), "meta": dict(meta or {})}
        with atomic(path) as tmp:
            torch.save(state, tmp)
        return Path(path)

    @staticmethod
    def read_meta(path: str | Path) -> dict:
        return torch.load(path, map_location="cpu", weights_only=True)["meta"]

    @classmethod
    def load(cls, path: str | Path, model: GenerativeModel) -> ExPostSampler:
        """The sampler saved at ``path``, around ``model`` (the model it was fitted to)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(model, Mixture(**state["mixture"]), Coordinates(state["coordinates"]),
                   pd.DataFrame(state["selection"]))


def describe(sampler: ExPostSampler) -> str:
    """The chosen mixture in words, with the candidates' validation likelihoods."""
    c = sampler.chosen
    return (f"{sampler.preset}: {c.components} {c.covariance}-covariance component(s) in {c.dims} principal "
            f"direction(s) of the training posterior means ({c['variance kept']:.1%} of their variance; "
            f"{sampler.coordinates}), chosen among {len(sampler.selection)} candidates by mean validation "
            f"log-likelihood ({c['val log-lik']:.4g} per image; training {c['train log-lik']:.4g})")
