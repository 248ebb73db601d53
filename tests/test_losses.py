"""The three VAE loss reductions against hand computations and torch.distributions, and the models
that use them (VAE, GMVAE) against the same formulas."""

import math

import pytest
import torch
from torch.distributions import Normal

from cxrnb.errors import CxrnbError
from cxrnb.models import build
from cxrnb.models.losses import calibrated_gaussian_nll, objective
from cxrnb.models.vae import VAE, kl_standard_normal

# Two 1 x 2 x 2 "images" and their reconstructions, small enough to compute by hand.
X = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]], [[[1.0, 1.0], [0.0, 0.0]]]])
X_HAT = torch.tensor([[[[0.1, 0.9], [0.5, 0.3]]], [[[1.0, 0.8], [0.2, 0.0]]]])
KL = torch.tensor([3.0, 5.0])               # nats per image
# squared errors: image 0: 0.01 + 0.01 + 0 + 0.04 = 0.06; image 1: 0 + 0.04 + 0.04 + 0 = 0.08
SSE = (0.06, 0.08)
MSE = sum(SSE) / 8


def test_paper_is_pixel_mean_mse_plus_beta_times_batch_mean_kl():
    out = objective(X_HAT, X, KL, beta=0.5, reduction="paper")
    assert out["loss"].item() == pytest.approx(MSE + 0.5 * 4.0)
    assert out["recon"].item() == pytest.approx(MSE) and out["kl"].item() == pytest.approx(4.0)


def test_upstream_sums_the_kl_over_the_batch_too():
    out = objective(X_HAT, X, KL, beta=0.5, reduction="upstream")
    assert out["loss"].item() == pytest.approx(MSE + 0.5 * 8.0)
    assert out["kl"].item() == pytest.approx(4.0)          # logged per image, like the others


def test_elbo_is_a_gaussian_log_likelihood_with_the_maximum_likelihood_sigma():
    sigma2 = MSE                                            # the ML variance of the batch's residuals
    by_hand = [s / (2 * sigma2) + 4 * 0.5 * math.log(sigma2) + 4 * 0.5 * math.log(2 * math.pi) for s in SSE]
    torch.testing.assert_close(calibrated_gaussian_nll(X_HAT, X), torch.tensor(by_hand))
    reference = -Normal(X_HAT, math.sqrt(sigma2)).log_prob(X).flatten(1).sum(1)
    torch.testing.assert_close(calibrated_gaussian_nll(X_HAT, X), reference)
    out = objective(X_HAT, X, KL, beta=1.0, reduction="elbo")
    assert out["loss"].item() == pytest.approx(sum(by_hand) / 2 + 4.0, rel=1e-6)
    assert out["mse"].item() == pytest.approx(MSE)


def test_elbo_sigma_is_floored_for_a_perfect_reconstruction():
    nll = calibrated_gaussian_nll(X, X)
    assert torch.isfinite(nll).all() and nll[0].item() == pytest.approx(4 * (-6.0 + 0.5 * math.log(2 * math.pi)))


def test_unknown_reduction_is_one_clear_error():
    with pytest.raises(CxrnbError, match="unknown loss reduction 'sum'; valid: paper, upstream, elbo"):
        objective(X_HAT, X, KL, 1.0, "sum")
    with pytest.raises(CxrnbError, match="unknown loss reduction"):
        VAE(64, reduction="sum")


@pytest.mark.parametrize("reduction", ["paper", "upstream", "elbo"])
def test_vae_loss_uses_its_reduction(reduction):
    model = VAE(64, beta=0.1, reduction=reduction).eval()
    x = model.input_spec.to_model(torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8))
    torch.manual_seed(1)
    out = model.loss(x)
    mu, logvar = model.encode(x)
    torch.manual_seed(1)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    expected = objective(model.decode(z), x, kl_standard_normal(mu, logvar), 0.1, reduction)
    for key in ("loss", "recon", "kl", "mse"):
        assert out[key].item() == pytest.approx(expected[key].item(), rel=1e-5)


def test_kl_warmup_ramps_beta_and_resumes_from_the_state_dict():
    model = VAE(32, beta=0.5, reduction="elbo", kl_warmup=4).train()
    x = model.input_spec.to_model(torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8))
    weights = []
    for _ in range(6):
        weights.append(model.kl_weight())
        model.loss(x)
    assert weights == [0.125, 0.25, 0.375, 0.5, 0.5, 0.5]
    again = VAE(32, beta=0.5, reduction="elbo", kl_warmup=4)
    again.load_state_dict(model.state_dict())
    assert again.kl_weight() == 0.5
    model.eval().loss(x)                                    # evaluating does not advance the ramp
    assert int(model.steps) == 6


def test_elbo_presets_and_the_paper_presets_unchanged():
    assert build("VAE-beta0.002").reduction == "paper"
    for reduction in ("upstream", "elbo"):
        for beta in (1, 0.1, 0.002):
            model = build(f"VAE-{reduction}-beta{beta:g}", image_size=64)
            assert (model.reduction, model.beta) == (reduction, beta)
    gm = build("FS-GMVAE-elbo", image_size=64)
    assert gm.conditional and gm.reduction == "elbo" and not gm.freeze_encoder and not gm.pretrained
    assert gm.latent_dim == 2000 and gm.n_components == 300
    assert build("GMVAE-V8", image_size=64, weights=None).reduction == "paper"


def test_gmvae_elbo_is_on_the_grey_image_in_pixels():
    model = build("GMVAE-elbo", image_size=64, z_dim=8, k=3).eval()
    x = model.input_spec.to_model(torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8))
    torch.manual_seed(3)
    out = model.loss(x)
    torch.manual_seed(3)
    mean, logvar = model.encode(x)
    z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
    grey = model.decode_unit(z).mean(1, keepdim=True)
    nll = calibrated_gaussian_nll(grey, x[:, :1])            # 3 equal channels in [0, 1]
    assert out["recon"].item() == pytest.approx(nll.mean().item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(nll.mean().item() + out["kl"].item(), rel=1e-5)
