"""Collapse diagnostics against hand computations, and their use during training."""

import numpy as np
import pytest
import torch

from cxrnb.evaluation.diagnostics import Diagnostics, active_units, diagnose, kl_per_dim, monitor, reconstruct
from cxrnb.models.vae import VAE, kl_standard_normal
from cxrnb.training.loop import TrainConfig, train
from tests.test_train import ToyLoader


def test_active_units_count_dimensions_whose_mean_varies_by_more_than_001():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(50, 6)) * np.array([0.0, 0.05, 0.09, 0.11, 1.0, 3.0])
    expected = int((means.var(axis=0, ddof=1) > 0.01).sum())         # Burda et al.: Cov_x(E[z|x])
    assert active_units(torch.from_numpy(means)) == expected
    assert active_units(torch.zeros(10, 4)) == 0


def test_kl_per_dim_sums_to_the_closed_form_kl():
    mu, logvar = torch.randn(7, 5), torch.randn(7, 5)
    torch.testing.assert_close(kl_per_dim(mu, logvar).sum(), kl_standard_normal(mu, logvar).mean())


@pytest.fixture(scope="module")
def toy_vae():
    torch.manual_seed(0)
    return VAE(32, reduction="elbo")


def test_diagnose_matches_a_hand_computation(toy_vae, one_thread):
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (9, 1, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.zeros(9, 15)
    mean_image = torch.rand(32, 32, generator=g)
    before = torch.get_rng_state()
    d = diagnose(toy_vae, u8, y, mean_image, batch=4)          # three batches
    assert torch.equal(torch.get_rng_state(), before)           # the run it watches is untouched
    x = u8.float() / 255
    torch.manual_seed(0)                                        # diagnose's seed: the same posterior draws
    with torch.no_grad():
        mu, logvar = toy_vae.eval().encode(x)
        recon = torch.cat([toy_vae.decode(m + torch.randn_like(m) * (0.5 * v).exp())
                           for m, v in zip(mu.split(4), logvar.split(4))])
    torch.set_rng_state(before)
    assert d.mse == pytest.approx(((recon - x) ** 2).mean().item(), rel=1e-5)
    torch.testing.assert_close(reconstruct(toy_vae, u8[:4]), recon[:4])
    assert d.mean_image_mse == pytest.approx(((mean_image - x) ** 2).mean().item(), rel=1e-6)
    assert d.kl == pytest.approx(kl_standard_normal(mu, logvar).mean().item(), rel=1e-5)
    assert d.active_units == active_units(mu)
    np.testing.assert_allclose(d.kl_per_dim, kl_per_dim(mu, logvar).numpy(), rtol=1e-4, atol=1e-7)
    assert d.collapsed == (d.active_units == 0 or d.mse >= 0.95 * d.mean_image_mse)
    assert Diagnostics(kl=5, active_units=3, mse=0.0340, mean_image_mse=0.0351).collapsed      # 3% better
    assert not Diagnostics(kl=5, active_units=3, mse=0.0330, mean_image_mse=0.0351).collapsed  # 6% better


def test_a_collapsed_posterior_is_called_collapsed(toy_vae):
    collapsed = VAE(32)
    with torch.no_grad():                                       # posterior = prior for every image
        for layer in (collapsed.mean, collapsed.logvar):
            layer.weight.zero_()
            layer.bias.zero_()
    u8 = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    d = diagnose(collapsed, u8, torch.zeros(6, 15), torch.full((32, 32), 0.5))
    assert d.active_units == 0 and d.kl == pytest.approx(0, abs=1e-6) and d.collapsed


def test_the_monitor_logs_heldout_rows_without_changing_training(tmp_path, one_thread):
    loader = ToyLoader(n=12, batch_size=4, size=32)
    u8, y = torch.from_numpy(loader.images[:5]), torch.from_numpy(loader.labels[:5])
    cfg = dict(max_steps=5, monitor_every=2, progress=False, sample_at=(), device="cpu", n_samples=4)
    torch.manual_seed(0)
    plain = train(VAE(32, reduction="elbo"), loader, TrainConfig(out_dir=str(tmp_path / "a"), **cfg))
    torch.manual_seed(0)
    watched = train(VAE(32, reduction="elbo"), loader, TrainConfig(out_dir=str(tmp_path / "b"), **cfg),
                    monitor=monitor(u8, y, torch.full((32, 32), 0.5)))
    trained = watched.frame[watched.frame.part == "model"].reset_index(drop=True)
    assert trained.equals(plain.frame.reset_index(drop=True))   # identical losses, step by step
    held = watched.frame[watched.frame.part == "heldout"]
    assert sorted(held.iteration.unique()) == [0, 2, 4, 5]      # start, every 2, the end
    assert set(held.name) == {"kl", "active_units", "heldout_mse", "mean_image_mse"}
