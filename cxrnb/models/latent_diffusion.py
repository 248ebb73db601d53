"""Latent diffusion in a trained VAE's latent space (Rombach et al. 2022; in a VAE's own latent, as
Vahdat et al. 2021's LSGM and the "two-stage VAE" of Dai & Wipf 2019): the VAE sampled where its data
is, as the ex-post GMM (``models.expost``) does, with a denoiser in place of the mixture.

A pixel DDPM must learn the whole image distribution from scratch; a denoiser in a trained VAE's
latent learns only where the training images' posteriors lie, a density of a few dozen numbers, and
trains in seconds on a CPU. The price is a ceiling: its samples are decodings, no sharper than the
VAE's reconstructions of real images (notebook 07 scores those beside it).

The steps, one owner each:

1. **Coordinates**: the training images' posterior means, in ``expost``'s coordinates (the means
   themselves; additive log-ratios for a Dirichlet VAE), projected on their leading principal
   directions (``expost.principal_basis``) and divided by each direction's standard deviation, so
   the diffusion's N(0, I) end matches their scale; the other directions stay at the training mean.
2. **The denoiser**: an MLP v_theta(x_t, t) with a sinusoidal time embedding, trained on the
   v-MSE of ``diffusion``'s forward process (the same cosine schedule, diffusers' DDPMScheduler),
   its validation loss measured on the held-out images' coordinates. It predicts the velocity
   v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022), not the noise: at the last
   timesteps abar_t is ~1e-9 and an eps-prediction's x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
   multiplies its error by 10^4. The pixel DDPM clips that x_0 to the pixel range; coordinates have
   no range to clip to (an eps-trained toy diverged to |x| ~ 100 without it).
3. **Sampling**: DPM-Solver++ (second order, Lu et al. 2022, diffusers' scheduler) in
   ``sample_steps`` steps from x_T ~ N(0, I) drawn with a CPU generator, then back to the latent and
   through the VAE's decoder.

``LatentDiffusionSampler`` is a ``GenerativeModel`` like ``ExPostSampler``: every sampling path of
the study takes it as it takes the model.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from torch import Tensor, nn

from cxrnb.errors import CxrnbError
from cxrnb.models import expost
from cxrnb.models.base import Family, GenerativeModel, count_params
from cxrnb.models.diffusion import SCHEDULE, T_TRAIN, Solver, make_sampler
from cxrnb.paths import atomic

MAX_DIMS = 64             # principal directions modelled, as the ex-post GMM's
HIDDEN = 256              # the denoiser's width
ITERATIONS = 4000         # its training steps (batch BATCH): seconds on a 2-core CPU
BATCH = 256
LR = 1e-3
SAMPLE_STEPS = 20         # DPM-Solver++ steps per sample
FILE = "latent_diffusion.pt"   # beside the run's checkpoint


def time_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of timesteps t (n,) -> (n, dim), as the U-Net's (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], 1)


class LatentDenoiser(nn.Module):
    """v_theta(x_t, t) on vectors: the time embedding and x_t into three SiLU layers."""

    def __init__(self, dims: int, hidden: int = HIDDEN):
        super().__init__()
        self.dims, self.hidden = dims, hidden
        self.time = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU())
        self.inp = nn.Linear(dims, hidden)
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                  nn.SiLU(), nn.Linear(hidden, dims))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=x.device).expand(len(x))
        return self.body(self.inp(x) + self.time(time_embedding(t, self.hidden)))


def forward_process() -> DDPMScheduler:
    """q(x_t | x_0) of the pixel DDPM: the same T and cosine schedule."""
    return DDPMScheduler(num_train_timesteps=T_TRAIN, beta_schedule=SCHEDULE, prediction_type="epsilon")


def train_denoiser(train: Tensor, val: Tensor, iterations: int = ITERATIONS, batch: int = BATCH,
                   lr: float = LR, seed: int = 0, hidden: int = HIDDEN) -> tuple[LatentDenoiser, dict]:
    """The denoiser fitted to coordinates ``train`` (n, m) by the v-MSE at uniform timesteps, and its
    final training and validation losses (the validation one at fixed noise and timesteps; predicting
    0 scores about 1 on whitened coordinates)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net, noise = LatentDenoiser(train.shape[1], hidden), forward_process()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    train, val = train.float(), val.float()
    start, losses = time.perf_counter(), []
    for _ in range(iterations):
        x0 = train[torch.randint(len(train), (batch,), generator=g)]
        eps = torch.randn(x0.shape, generator=g)
        t = torch.randint(T_TRAIN, (batch,), generator=g)
        loss = (net(noise.add_noise(x0, eps, t), t) - noise.get_velocity(x0, eps, t)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    with torch.no_grad():
        gv = torch.Generator().manual_seed(seed + 1)
        eps, t = torch.randn(val.shape, generator=gv), torch.randint(T_TRAIN, (len(val),), generator=gv)
        val_loss = float((net(noise.add_noise(val, eps, t), t) - noise.get_velocity(val, eps, t)).pow(2).mean())
    tail = losses[-max(1, iterations // 20):]
    return net.eval(), {"iterations": iterations, "seconds": seconds, "train loss": sum(tail) / len(tail),
                        "val loss": val_loss}


@torch.no_grad()
def solve(v_fn, x_T: Tensor, steps: int = SAMPLE_STEPS) -> Tensor:
    """x_T -> x_0 by DPM-Solver++ with velocity predictor ``v_fn(x, t)``, unclipped (coordinates are
    not bounded as pixels are)."""
    sampler = make_sampler(Solver.DPM_SOLVER, clip=False, prediction="v_prediction")
    sampler.set_timesteps(steps)
    x = x_T
    for t in sampler.timesteps:
        x = sampler.step(v_fn(x, int(t)), int(t), x).prev_sample
    return x


class LatentDiffusionSampler(GenerativeModel):
    """A trained VAE-family model sampled by a diffusion model fitted to its training posterior means."""

    family = Family.DIFFUSION
    solver = Solver.DPM_SOLVER           # in the latent: what its sample_steps count

    def __init__(self, model: GenerativeModel, net: LatentDenoiser, center: Tensor, directions: Tensor,
                 scale: Tensor, coordinates: expost.Coordinates, fit: dict, sample_steps: int = SAMPLE_STEPS):
        super().__init__()
        if not model.has_encoder or model.conditional:
            raise CxrnbError(f"{model.preset or type(model).__name__}: latent diffusion needs an "
                             f"unconditional model with an encoder (VAE, GMVAE, Dirichlet VAE)")
        self.model, self.net, self.coordinates, self.fit_info = model, net, coordinates, dict(fit)
        self.register_buffer("center", center.double())
        self.register_buffer("directions", directions.double())
        self.register_buffer("scale", scale.double())
        self.input_spec, self.latent_dim, self.prior = model.input_spec, model.latent_dim, model.prior
        self.sample_steps = sample_steps
        self.preset = f"{model.preset} · latent diffusion" if model.preset else None

    @classmethod
    def fit(cls, model: GenerativeModel, train_u8: Tensor, val_u8: Tensor, seed: int = 0,
            max_dims: int = MAX_DIMS, iterations: int = ITERATIONS, **kwargs) -> LatentDiffusionSampler:
        """Fit the denoiser to the posterior means of ``train_u8`` (validation loss on ``val_u8``)."""
        coordinates = expost.coordinates_for(model)
        to = expost.alr if coordinates == expost.Coordinates.ALR else (lambda z: z)
        train, val = to(expost.posterior_means(model, train_u8)), to(expost.posterior_means(model, val_u8))
        if len(train) < 2 or len(val) < 1:
            raise CxrnbError(f"latent diffusion needs >= 2 training and >= 1 validation images; got "
                             f"{len(train)} and {len(val)}")
        center, directions, kept = expost.principal_basis(train, max_dims, variance_kept=1.0)
        s = (train - center) @ directions.T
        scale = s.std(0).clamp_min(1e-12)
        net, info = train_denoiser(s / scale, ((val - center) @ directions.T) / scale, iterations=iterations,
                                   seed=seed, **kwargs)
        return cls(model, net, center, directions, scale, coordinates,
                   {**info, "dims": int(directions.shape[0]), "variance kept": kept})

    def velocity(self, x: Tensor, t: int) -> Tensor:
        return self.net(x.float(), torch.tensor(t)).to(x.dtype)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n latents the decoder reads: DPM-Solver++ from N(0, I) in the whitened principal
        coordinates, drawn on the CPU (a CUDA generator is refused), then back to the latent."""
        if generator is not None and generator.device.type != "cpu":
            raise CxrnbError("latent diffusion draws on the CPU: pass a CPU torch.Generator")
        x_T = torch.randn(n, self.directions.shape[0], generator=generator)
        with torch.no_grad():
            s = solve(self.velocity, x_T.to(self.net.inp.weight.device), self.sample_steps).double().cpu()
        y = self.center.cpu() + (s * self.scale.cpu()) @ self.directions.cpu()
        z = expost.alr_inverse(y) if self.coordinates == expost.Coordinates.ALR else y
        return z.float().to(self.device)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.model.decode(z, y)

    def passes_per_sample(self) -> int:
        """Denoiser passes per image (each far cheaper than the decoder's one)."""
        return self.sample_steps

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """``n`` images (n, 1, S, S) in [0, 1] from seed ``seed``."""
        with self.evaluating():
            return self.generate(self.sample_latent(n, torch.Generator().manual_seed(seed))).cpu()

    def describe(self) -> str:
        f = self.fit_info
        return (f"{self.preset}: an MLP denoiser ({count_params(self.net):,} weights) in {f['dims']} whitened "
                f"principal directions of the training posterior means ({f['variance kept']:.1%} of their variance; "
                f"{self.coordinates}), {f['iterations']:,} iterations in {f['seconds']:.1f} s (v-MSE "
                f"{f['train loss']:.3f} training, {f['val loss']:.3f} held out), sampled by {self.sample_steps} "
                f"DPM-Solver++ steps")

    def save(self, path: str | Path, meta: dict | None = None) -> Path:
        """The denoiser and coordinates (not the model: it is the run's checkpoint), atomically;
        ``meta`` records what it was fitted to."""
        state = {"net": self.net.state_dict(), "dims": self.net.dims, "hidden": self.net.hidden,
                 "center": self.center, "directions": self.directions, "scale": self.scale,
                 "coordinates": str(self.coordinates), "fit": self.fit_info, "sample_steps": self.sample_steps,
                 "meta": dict(meta or {})}
        with atomic(path) as tmp:
            torch.save(state, tmp)
        return Path(path)

    @staticmethod
    def read_meta(path: str | Path) -> dict:
        return torch.load(path, map_location="cpu", weights_only=True)["meta"]

    @classmethod
    def load(cls, path: str | Path, model: GenerativeModel) -> LatentDiffusionSampler:
        s = torch.load(path, map_location="cpu", weights_only=True)
        net = LatentDenoiser(s["dims"], s["hidden"])
        net.load_state_dict(s["net"])
        return cls(model, net.eval(), s["center"], s["directions"], s["scale"],
                   expost.Coordinates(s["coordinates"]), s["fit"], s["sample_steps"])

