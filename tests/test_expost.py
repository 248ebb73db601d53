"""The ex-post GMM sampler (models/expost.py): the mixture it fits and draws from, checked against
the known toy distributions it was fitted to; its component choice; its save / load round trip; the
Dirichlet VAE's simplex; and the blank-frame count."""

import math

import pandas as pd
import pytest
import torch

from cxrnb.evaluation.metrics import blank_frames
from cxrnb.models import expost
from cxrnb.models.dirvae import DirichletVAE
from cxrnb.models.vae import VAE


def two_gaussians(n: int, seed: int):
    """n points of 0.3 N(m1, C1) + 0.7 N(m2, C2) in 3-D, far apart along the first axis."""
    g = torch.Generator().manual_seed(seed)
    m = torch.tensor([[-6.0, 0.0, 1.0], [6.0, 2.0, 0.0]], dtype=torch.float64)
    c1 = torch.diag(torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64))
    c2 = torch.tensor([[1.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=torch.float64)
    first = torch.rand(n, generator=g) < 0.3
    eps = torch.randn(n, 3, generator=g, dtype=torch.float64)
    x = torch.where(first[:, None], m[0] + eps @ torch.linalg.cholesky(c1).T, m[1] + eps @ torch.linalg.cholesky(c2).T)
    return x, (torch.tensor([0.3, 0.7], dtype=torch.float64), m, torch.stack([c1, c2]))


def test_fitted_mixture_matches_the_toy_and_its_draws_match_the_mixture():
    x, (w, m, c) = two_gaussians(6000, seed=0)
    val, _ = two_gaussians(2000, seed=1)
    mixture, table = expost.fit_mixture(x, val, components=(1, 2, 3, 4), variance_kept=1.0)
    assert table[table.chosen].components.item() == 2
    weights, means, covs = mixture.in_coordinates()
    order = means[:, 0].argsort()                       # the component at x < 0 first
    weights, means, covs = weights[order], means[order], covs[order]
    # the hand check: the known weights, means and covariances, to a few standard errors at n = 6000
    assert torch.allclose(weights, w, atol=0.02)
    assert torch.allclose(means, m, atol=0.08)
    assert torch.allclose(covs, c, atol=0.1)
    # draws come from that mixture: split by side, their moments are the fitted component's
    z = mixture.draw(40000, torch.Generator().manual_seed(0))
    for side, k in ((z[:, 0] < 0, 0), (z[:, 0] >= 0, 1)):
        part = z[side]
        assert abs(len(part) / len(z) - float(weights[k])) < 0.01
        assert torch.allclose(part.mean(0), means[k], atol=0.03)
        assert torch.allclose(part.T.cov(), covs[k], atol=0.05)


def test_validation_picks_the_true_number_of_components():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]], dtype=torch.float64)
    draw = lambda n: centres[torch.randint(3, (n,), generator=g)] + torch.randn(n, 2, generator=g, dtype=torch.float64)  # noqa: E731
    _, table = expost.fit_mixture(draw(1500), draw(1500), components=range(1, 7))
    chosen = table[table.chosen].iloc[0]
    assert chosen.components == 3
    # and the training likelihood alone would have taken more components
    assert table.loc[table["train log-lik"].idxmax()].components > 3


def test_principal_directions_hold_the_variance_and_the_rest_is_held_at_the_mean():
    g = torch.Generator().manual_seed(0)
    z = torch.zeros(500, 10, dtype=torch.float64)
    z[:, :2] = torch.randn(500, 2, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0])
    z[:, 2:] = 1e-3 * torch.randn(500, 8, generator=g, dtype=torch.float64) + 5.0
    center, directions, kept = expost.principal_basis(z)
    assert directions.shape == (2, 10)
    assert kept > 0.99
    assert torch.allclose(center[2:], torch.full((8,), 5.0, dtype=torch.float64), atol=1e-3)
    mixture, _ = expost.fit_mixture(z, z, components=(1,))
    draws = mixture.draw(1000, torch.Generator().manual_seed(0))
    assert torch.allclose(draws[:, 2:], center[2:].expand(1000, -1), atol=1e-3)


def test_alr_is_a_bijection_of_the_open_simplex():
    p = torch.tensor([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]], dtype=torch.float64)
    y = expost.alr(p)
    hand = torch.tensor([[math.log(0.2 / 0.5), math.log(0.3 / 0.5)], [math.log(7.0), math.log(2.0)]],
                        dtype=torch.float64)
    assert torch.allclose(y, hand)
    assert torch.allclose(expost.alr_inverse(y), p)


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_save_load_gives_the_same_samples_for_the_same_seed(tmp_path):
    torch.manual_seed(0)
    model = VAE(image_size=32, reduction="elbo").eval()
    model.preset = "VAE-elbo-beta1"
    sampler = expost.ExPostSampler.fit(model, _images(40), _images(20, seed=1), components=(1, 2))
    assert sampler.preset == "VAE-elbo-beta1 · GMM sampler"
    a = sampler.sample(6, seed=3)
    assert a.shape == (6, 1, 32, 32) and 0 <= a.min() and a.max() <= 1
    path = sampler.save(tmp_path / expost.FILE, {"fitted to": "toy"})
    loaded = expost.ExPostSampler.load(path, model)
    assert torch.equal(loaded.sample(6, seed=3), a)
    assert not torch.equal(loaded.sample(6, seed=4), a)
    assert expost.ExPostSampler.read_meta(path) == {"fitted to": "toy"}
    pd.testing.assert_frame_equal(loaded.selection, sampler.selection)
    assert "GMM sampler" in expost.describe(loaded)


def test_dirichlet_vae_samples_stay_on_the_simplex():
    torch.manual_seed(0)
    model = DirichletVAE(image_size=32, k=6).eval()
    sampler = expost.ExPostSampler.fit(model, _images(40), _images(20, seed=1), components=(1, 2))
    assert sampler.coordinates == expost.Coordinates.ALR
    z = sampler.sample_latent(200, torch.Generator().manual_seed(0))
    assert z.shape == (200, 6) and (z > 0).all()
    assert torch.allclose(z.sum(1), torch.ones(200), atol=1e-5)


def test_conditional_models_are_refused():
    from cxrnb.models import build
    model = build("FS-GMVAE-elbo", image_size=32, weights=None)
    with pytest.raises(Exception, match="unconditional"):
        expost.ExPostSampler.fit(model, _images(8), _images(4))


def test_blank_frames_counts_the_near_uniform_images():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(50, 1, 16, 16, generator=g)                 # std 1/sqrt(12) per image, about
    flat = 0.8 + 0.01 * torch.randn(7, 1, 16, 16, generator=g)     # std 0.01: blank
    busy = torch.rand(5, 1, 16, 16, generator=g)
    n, threshold = blank_frames(torch.cat([flat, busy]), real)
    assert n == 7
    assert abs(threshold - 0.25 / math.sqrt(12)) < 0.01
