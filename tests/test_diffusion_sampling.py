"""The DDPM's additions: DPM-Solver++ against the exact noise predictor, min-SNR-gamma weights against a
hand computation from the schedule, classifier-free guidance against its formula and label dropout
against its rate."""

import pytest
import torch
from test_diffusion import TINY, S, cosine_alpha_bar

from cxrnb.errors import CxrnbError
from cxrnb.models import build
from cxrnb.models.diffusion import T_TRAIN, Solver


def tiny(preset="DDPM", **kw):
    torch.manual_seed(0)
    return build(preset, **{**TINY, **kw})


class Oracle(torch.nn.Module):
    """The optimal eps-predictor for data that is one image c: (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t)."""

    def __init__(self, c):
        super().__init__()
        self.c, self.abar = c, torch.tensor(cosine_alpha_bar(), dtype=torch.float32)

    def forward(self, x, t, y=None):
        a = self.abar[int(t)]
        return (x - a.sqrt() * self.c) / (1 - a).sqrt()


@pytest.mark.parametrize("steps", [5, 20])
def test_dpm_solver_with_the_exact_noise_predictor_recovers_the_data(steps, one_thread):
    model = tiny(solver="dpm-solver++", sample_steps=steps).eval()
    c = torch.linspace(-0.9, 0.9, S * S).view(1, 1, S, S)
    model.ema = Oracle(c)
    z = model.sample_latent(3, torch.Generator().manual_seed(0))
    trail = list(model.denoise(z))
    assert len(trail) == steps and trail[0][0] == T_TRAIN - 1       # "trailing": from pure noise
    assert [t for t, _, _ in trail] == sorted((t for t, _, _ in trail), reverse=True)
    torch.testing.assert_close(model.decode(z), c.expand(3, -1, -1, -1), atol=1e-4, rtol=0)


def test_the_last_dpm_step_lands_on_the_last_predicted_x0(one_thread):
    """decode keeps the last predicted x_0: DPM-Solver++'s last step is first order onto sigma = 0,
    so its prev_sample is that prediction (clipped), for any network."""
    from cxrnb.models.diffusion import make_sampler

    model = tiny(solver="dpm-solver++", sample_steps=4).eval()
    z = model.sample_latent(2, torch.Generator().manual_seed(1))
    sampler = make_sampler(Solver.DPM_SOLVER)
    sampler.set_timesteps(4)
    x = z
    for t in sampler.timesteps:
        eps = model.ema(x, t)
        x = sampler.step(eps, int(t), x).prev_sample
    torch.testing.assert_close(model.decode(z), x, atol=1e-5, rtol=0)
    assert not torch.equal(model.decode(z), tiny(sample_steps=4).eval().decode(z))   # DDIM differs


def test_sampling_switches_solver_and_steps_for_the_block_only(one_thread):
    model = tiny().eval()
    z = model.sample_latent(2, torch.Generator().manual_seed(0))
    with model.sampling(Solver.DPM_SOLVER, 3) as m:
        assert m is model and model.solver == Solver.DPM_SOLVER and model.sample_steps == 3
        assert len(list(model.denoise(z))) == 3
        inside = model.decode(z)
    assert model.solver == Solver.DDIM and model.sample_steps == TINY["sample_steps"]
    fresh = tiny(solver="dpm-solver++", sample_steps=3).eval()
    assert torch.equal(inside, fresh.decode(z))                    # the same as a model built that way
    with pytest.raises(CxrnbError, match="unknown solver"):
        with model.sampling("euler"):
            pass
    with pytest.raises(CxrnbError, match="no unconditional prediction"):
        with model.sampling(guidance_scale=2.0):
            pass


def test_min_snr_weights_are_the_hand_computation(one_thread):
    model = tiny(snr_gamma=5.0)
    abar = model.noise.alphas_cumprod.double()
    t = torch.tensor([0, 10, 100, 300, 500, 700, 999])
    snr = abar[t] / (1 - abar[t])                                   # Hang et al. 2023, eps-prediction
    expected = torch.minimum(snr, torch.full_like(snr, 5.0)) / snr
    torch.testing.assert_close(model.loss_weights(t).double(), expected, rtol=1e-5, atol=1e-7)
    # low noise (SNR > 5) is down-weighted, high noise keeps weight 1
    assert model.loss_weights(t)[0] < 0.01 and model.loss_weights(t)[-1] == 1
    # the schedule is the cosine one the pixel tests check
    torch.testing.assert_close(abar, torch.tensor(cosine_alpha_bar(), dtype=torch.float64), rtol=1e-4, atol=1e-7)
    assert torch.equal(tiny().loss_weights(t), torch.ones(len(t)))


def test_the_weighted_loss_is_the_weighted_eps_mse(one_thread):
    model = tiny(snr_gamma=5.0)
    x = torch.rand(6, 1, S, S, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.manual_seed(3)
    out = model.loss(x)
    torch.manual_seed(3)                                            # the same t and eps, by hand
    t = torch.randint(0, T_TRAIN, (6,))
    eps = torch.randn_like(x)
    with torch.no_grad():
        pred = model.net(model.q_sample(x, t, eps), t)
    per_image = ((pred - eps) ** 2).mean((1, 2, 3))
    torch.testing.assert_close(out["loss"].detach(), (model.loss_weights(t) * per_image).mean())
    torch.testing.assert_close(out["mse"], per_image.mean())


def test_guidance_scale_0_is_the_unconditional_prediction_and_2_the_formula(one_thread):
    model = tiny("DDPM-cfg").eval()
    assert model.label_dropout == 0.1 and model.guidance_scale == 2.0
    with torch.no_grad():                                           # an untrained embedding could be ignored
        for p in (model.ema.labels.weight, model.ema.null):
            p.normal_()
    x = torch.randn(3, 1, S, S, generator=torch.Generator().manual_seed(0))
    t, y = torch.tensor(500), torch.eye(15)[:3]
    with torch.no_grad():
        uncond = model.ema(x, t, None)
        cond = model.ema(x, t, y)
        null = model.ema.null.expand(3, -1)
        by_hand = model.ema.unet(x, t, class_labels=null).sample       # "no label" = the null embedding
        with model.sampling(guidance_scale=0.0):
            w0 = model.guided_eps(x, t, y)
        with model.sampling(guidance_scale=1.0):
            w1 = model.guided_eps(x, t, y)
        w2 = model.guided_eps(x, t, y)
    assert torch.equal(uncond, by_hand) and torch.equal(w0, uncond) and torch.equal(w1, cond)
    assert not torch.allclose(cond, uncond)
    torch.testing.assert_close(w2, uncond + 2.0 * (cond - uncond))
    assert model.passes_per_sample() == 2 * TINY["sample_steps"]
    # guided samples differ from unguided ones from the same noise and labels
    z = model.sample_latent(2, torch.Generator().manual_seed(0))
    with model.sampling(guidance_scale=1.0):
        plain = model.generate(z, y[:2])
    assert not torch.equal(model.generate(z, y[:2]), plain)


def test_label_dropout_drops_at_its_rate_and_puts_the_null_embedding_there(one_thread):
    model = tiny("DDPM-cfg")
    torch.manual_seed(0)
    n, p = 20_000, model.label_dropout
    drop = model.label_drop(n)
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(drop.float().mean().item() - p) < 4 * sd               # binomial: within 4 sd of 0.1
    y = torch.eye(15)[torch.arange(8) % 15]
    mask = torch.tensor([True, False] * 4)
    with torch.no_grad():
        model.net.null.normal_()
        emb = model.net.embed(y, mask)
        assert torch.equal(emb[mask], model.net.null.expand(4, -1))
        assert torch.equal(emb[~mask], model.net.labels(y[~mask]))
    # the loss draws the mask: training without labels for some images changes the loss
    x, y = torch.rand(32, 1, S, S) * 2 - 1, torch.eye(15)[torch.arange(32) % 15]
    model.label_dropout = 0.5                                         # some of the 32 dropped, surely
    torch.manual_seed(1)
    a = model.loss(x, y)["loss"]
    model.label_dropout = 0.0
    torch.manual_seed(1)
    b = model.loss(x, y)["loss"]
    assert torch.isfinite(a) and not torch.equal(a, b)
    assert "null" in dict(model.net.named_parameters())               # trained, and in the EMA copy
    assert model.param_counts()["label_embedding"] == 15 * 32 + 32 + 32
    assert tiny("DDPM-cond").net.null is None and tiny().label_drop(4) is None


@pytest.mark.parametrize("kw, message", [(dict(snr_gamma=0.0), "snr_gamma"),
                                         (dict(label_dropout=0.1), "needs conditional"),
                                         (dict(guidance_scale=3.0), "label_dropout > 0"),
                                         (dict(solver="heun"), "unknown solver")])
def test_bad_new_settings_are_one_line_errors(kw, message):
    with pytest.raises(CxrnbError, match=message):
        tiny(**kw)


def test_a_solver_row_is_the_same_weights_with_its_own_solver(one_thread, tmp_path):
    """scoring.solver_run: its images are those of the model inside ``sampling(solver, steps)``, the
    run's own model keeps its solver, the run's weight snapshots load into it (so a quality curve can
    be drawn with the few-step solver), and a model without a solver is a one-line error."""
    import copy
    import dataclasses

    from latent_toy import NoEncoder

    from cxrnb.provenance import Provenance
    from cxrnb.study.scoring import solver_run

    @dataclasses.dataclass
    class R:                                 # the fields of study.Run that solver_run reads
        preset: str
        model: object
        prov: Provenance

    model = tiny().eval()
    model.preset = "DDPM"
    prov = Provenance(source="synthetic phantom", n_images=1, image_size=S)
    fast = solver_run(R("DDPM", model, prov), "dpm-solver++", 3)
    assert fast.preset == "DDPM · dpm-solver++ 3 steps" and fast.model.sample_steps == 3
    z = model.sample_latent(2, torch.Generator().manual_seed(0))
    with model.sampling(Solver.DPM_SOLVER, 3):
        expected = model.decode(z)
    assert torch.equal(fast.model.decode(z), expected)
    assert model.solver == Solver.DDIM and model.sample_steps == TINY["sample_steps"] and model.preset == "DDPM"
    from cxrnb.training.checkpoint import load_snapshot, save_snapshot
    other = copy.deepcopy(fast.model)
    assert load_snapshot(save_snapshot(tmp_path, model, 4, 0.5, 2.0), other)["iteration"] == 4
    assert other.solver == Solver.DPM_SOLVER and torch.equal(other.decode(z), expected)
    with pytest.raises(CxrnbError, match="not a diffusion model"):
        solver_run(R("toy", NoEncoder(), prov), "ddim", 3)
