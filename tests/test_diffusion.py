"""The DDPM: forward noising against the closed form, DDIM steps against the DDIM update by hand,
EMA against a hand computation and through checkpoint resume, and a short run in which it learns."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import UNet2DModel
from test_train import ToyLoader

from cxrnb import study
from cxrnb.errors import CxrnbError
from cxrnb.models import build
from cxrnb.models.diffusion import T_TRAIN, unet
from cxrnb.report import sentences
from cxrnb.training.loop import TrainConfig, train

S = 16
TINY = dict(image_size=S, channels=(8, 16), sample_steps=4)


def tiny(**kw):
    torch.manual_seed(0)
    return build("DDPM", **{**TINY, **kw})


def cosine_alpha_bar(T=T_TRAIN, s=0.008):
    """Nichol & Dhariwal (2021), eq. 17: abar(t) = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2),
    as betas beta_t = min(1 - abar(t+1)/abar(t), 0.999), then abar_t = prod_{s<=t} (1 - beta_s)."""
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2   # noqa: E731
    betas = np.array([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)], dtype=np.float64)
    return np.cumprod(1 - betas)


def test_forward_noising_is_the_closed_form(one_thread):
    model = tiny()
    abar = cosine_alpha_bar()
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(5, 1, S, S, generator=gen) * 2 - 1
    eps = torch.randn(5, 1, S, S, generator=gen)
    t = torch.tensor([0, 10, 500, 900, 999])
    a = torch.tensor(abar[t.numpy()], dtype=torch.float32).view(-1, 1, 1, 1)
    expected = a.sqrt() * x0 + (1 - a).sqrt() * eps
    torch.testing.assert_close(model.q_sample(x0, t, eps), expected, atol=1e-5, rtol=1e-5)
    # the ends of the schedule: almost the clean image at t = 0, almost pure noise at t = T - 1
    assert abar[0] > 0.9999 and abar[-1] < 1e-6


def test_ddim_steps_are_the_ddim_update_and_decode_is_deterministic(one_thread):
    model = tiny().eval()
    abar = torch.tensor(cosine_alpha_bar(), dtype=torch.float32)
    z = model.sample_latent(3, torch.Generator().manual_seed(0))
    assert z.shape == (3, 1, S, S)
    steps = list(model.denoise(z))
    ts = [t for t, _, _ in steps]
    assert ts == [999, 749, 499, 249]                      # "trailing": starts from pure noise
    for _, x, x0 in steps:
        assert x.shape == x0.shape == (3, 1, S, S)
    # one step by hand (Song et al. eq. 12, eta = 0): x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t),
    # clipped to [-1, 1]; x_t' = sqrt(abar_t') x0_hat + sqrt(1 - abar_t') eps
    (t, x, x0), (t_next, x_next, _) = steps[0], steps[1]
    with torch.no_grad():
        eps = model.ema(x, torch.tensor(t))
    x0_hand = ((x - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()).clamp(-1, 1)
    torch.testing.assert_close(x0, x0_hand, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x_next, abar[t_next].sqrt() * x0_hand + (1 - abar[t_next]).sqrt() * eps,
                               atol=1e-5, rtol=1e-5)
    # decode: the same noise gives the same image, other noise another; generate is in [0, 1]
    a, b = model.generate(z), model.generate(z.clone())
    assert torch.equal(a, b) and a.shape == (3, 1, S, S) and 0 <= a.min() and a.max() <= 1
    torch.testing.assert_close(model.decode(z), steps[-1][2])
    assert not torch.equal(model.generate(model.sample_latent(3, torch.Generator().manual_seed(1))), a)


def test_ema_follows_the_weights_by_hand(one_thread):
    model = tiny(ema_decay=0.5)
    theta = [p.detach().clone() for p in model.net.parameters()]
    expected = [p.detach().clone() for p in model.ema.parameters()]
    for n in range(4):
        with torch.no_grad():                               # a fake optimiser step
            for p in model.net.parameters():
                p.add_(0.1)
        theta = [t + 0.1 for t in theta]
        d = min(0.5, (1 + n) / (10 + n))                      # 0.1, 2/11, 3/12, 4/13 ... capped at 0.5
        assert model.ema_decay_now() == pytest.approx(d)
        model.after_step("model")
        expected = [d * e + (1 - d) * t for e, t in zip(expected, theta)]
    for e, got in zip(expected, model.ema.parameters()):
        torch.testing.assert_close(got, e)
    assert int(model.ema_updates) == 4 and "ema_updates" in model.state_dict()


def test_param_count_and_the_ema_copy_is_neither_counted_nor_optimised(one_thread):
    model = build("DDPM", image_size=64)
    reference = UNet2DModel(**unet(64, (32, 64, 128, 128)).config)   # diffusers' own count of that config
    n = sum(p.numel() for p in reference.parameters())
    assert model.param_counts() == {"unet": n, "total": n}
    assert sum(p.numel() for p in model.parameters()) == 2 * n       # the EMA copy is there, not counted
    optimised = {id(p) for g in model.optimizer("model").param_groups for p in g["params"]}
    assert optimised == {id(p) for p in model.net.parameters()}
    assert not optimised & {id(p) for p in model.ema.parameters()}
    assert model.family == "diffusion" and model.latent_dim == 64 * 64 and not model.has_encoder
    assert model.input_spec.value_range == "tanh" and model.input_spec.channels == 1


@pytest.mark.parametrize("kw, message", [(dict(image_size=17), "multiple of 2"),
                                         (dict(channels=(8, 12)), "multiple of 8"),
                                         (dict(sample_steps=0), "sample_steps"),
                                         (dict(ema_decay=1.0), "ema_decay")])
def test_bad_settings_are_one_line_errors(kw, message):
    with pytest.raises(CxrnbError, match=message):
        tiny(**kw)


def test_checkpoint_resume_keeps_the_ema(tmp_path, one_thread):
    def run(out, steps):
        cfg = TrainConfig(max_steps=steps, out_dir=str(out), device="cpu", progress=False, n_samples=4,
                          sample_at=(), checkpoint_every=None, checkpoint_minutes=None)
        model = tiny()
        train(model, ToyLoader(n=32, batch_size=8), cfg)
        return model

    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4)                       # loads the 2-step checkpoint, trains 2 more
    assert int(resumed.ema_updates) == int(straight.ema_updates) == 4
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name                     # weights and EMA weights, bit for bit
    assert not torch.equal(straight.ema.unet.conv_out.weight, straight.net.unet.conv_out.weight)


def test_a_short_phantom_run_learns_and_reloads(phantom_root, tmp_path, one_thread):
    runs = tmp_path / "runs"
    run = study.train_run("DDPM", str(phantom_root), max_images=32, batch_size=8, device="cpu",
                          runs_dir=runs, sample_at=[0, 20], progress=False, config={"max_steps": 60, "n_samples": 4},
                          lr=2e-3, **TINY)
    loss = study.curves(run)["loss"]
    assert loss.iloc[-15:].mean() < 0.7 * loss.iloc[:5].mean()   # eps-MSE falls from ~1
    assert set(run.history.samples) == {0, 20, 60}
    again = study.load_run("DDPM", runs, str(phantom_root), device="cpu")
    for a, b in zip(run.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())
    x = study.samples(again, n=3, seed=0, size=64)
    assert x.shape == (3, 1, 64, 64) and torch.equal(x, study.samples(run, n=3, seed=0, size=64))
    assert study.seconds_per_image(again, n=2) > 0
    rows, ts = study.trajectory(again, n=2, frames=3)
    assert ts == [999, 499, 249] and len(rows) == 4 and all(v.shape == (3, 1, S, S) for v in rows.values())
    # the trajectory's last predicted x_0 is the sample itself
    z = again.model.sample_latent(2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(rows["sample 2: predicted x_0"][-1], again.model.generate(z)[1])


def test_convergence_sentence_reads_the_windows():
    falling = pd.Series(np.linspace(1.0, 0.2, 100), index=range(1, 101))
    text = sentences.convergence(falling)
    assert "still falling" in text and "0.1% of the ~100,000" in text
    flat = pd.Series(np.tile([0.3, 0.31], 50), index=range(1, 101))
    assert "flat within batch noise" in sentences.convergence(flat)
    assert "too few" in sentences.convergence(pd.Series([1.0, 0.9], index=[1, 2]))


def test_the_conditional_variant_uses_its_labels(tmp_path, one_thread):
    model = tiny(conditional=True).eval()
    emb = 4 * TINY["channels"][0]                              # diffusers' time-embedding width
    assert model.param_counts()["label_embedding"] == 15 * emb + emb
    assert model.param_counts()["total"] == model.param_counts()["unet"] + 15 * emb + emb
    with torch.no_grad():
        model.net.labels.weight.normal_()                      # an untrained embedding could be ignored
        model.ema.labels.weight.copy_(model.net.labels.weight)
    z = model.sample_latent(2, torch.Generator().manual_seed(0))
    y0, y1 = torch.zeros(2, 15), torch.eye(15)[:2]
    assert torch.equal(model.generate(z, y0), model.generate(z, y0.clone()))
    assert not torch.equal(model.generate(z, y0), model.generate(z, y1))
    with pytest.raises(CxrnbError, match="conditional: give labels"):
        model.decode(z)
    cfg = TrainConfig(max_steps=2, out_dir=str(tmp_path), device="cpu", progress=False, n_samples=4,
                      sample_at=(0,), checkpoint_every=None, checkpoint_minutes=None)
    trained = tiny(conditional=True)
    before = trained.ema.labels.weight.clone()
    history = train(trained, ToyLoader(n=32, batch_size=8), cfg)  # fixed label batch for the grids
    assert set(history.samples) == {0, 2} and not torch.equal(trained.ema.labels.weight, before)


def test_ddim_with_the_exact_noise_predictor_recovers_the_data(one_thread):
    """For data that is one image c, the optimal eps-predictor is (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t)
    (hand-computed abar); DDIM with it must land on c from any noise: the sampler's wiring is right."""
    model = tiny().eval()
    abar = torch.tensor(cosine_alpha_bar(), dtype=torch.float32)
    c = torch.linspace(-0.9, 0.9, S * S).view(1, 1, S, S)

    class Oracle(torch.nn.Module):
        def forward(self, x, t, y=None):
            a = abar[int(t)]
            return (x - a.sqrt() * c) / (1 - a).sqrt()

    model.ema = Oracle()
    z = model.sample_latent(3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.decode(z), c.expand(3, -1, -1, -1), atol=1e-4, rtol=0)


def test_parameter_table_beside_table5(one_thread):
    from cxrnb.bench.table5 import beside_table5

    model = tiny(image_size=64)
    table = beside_table5(model).set_index("model")
    assert list(table.index) == ["LSGAN", "VAE-beta0.1", "DDPM"] and set(table["image size"]) == {64}
    assert table.loc["DDPM", "parameters"] == model.param_counts()["total"]
    assert table.loc["LSGAN", "parameters"] == build("LSGAN", image_size=64).param_counts()["total"]
    assert table.loc["LSGAN", "paper parameters (128 px)"] == 6_402_880              # SPEC.md, Table 5
    assert table.loc["VAE-beta0.1", "paper parameters (128 px)"] == 32_674_945
