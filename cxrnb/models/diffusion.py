"""A denoising diffusion model (DDPM, Ho et al. 2020), the paper's §6 future work, behind the same
contract as the VAE and the LSGAN.

The parts ``diffusers`` already does well are taken from it, built from configs only (nothing is
downloaded, no ``from_pretrained``):

* ``UNet2DModel``, 1 channel in and out, one ResNet block per level and self-attention only at the
  lowest resolution (8 x 8 at 64 px) and in the middle block. Attention costs O(pixels^2), so at the
  top levels it would dominate a CPU step; at 8 x 8 it is cheap and still gives a global view.
  Widths ``channels`` = (32, 64, 128, 128) by default: 4.3 M parameters, the LSGAN's order.
* ``DDPMScheduler`` for the forward process q(x_t | x_0), T = 1000 steps with the *cosine* schedule
  (``squaredcos_cap_v2``, Nichol & Dhariwal 2021): at 64 px the linear schedule leaves the last
  quarter of its steps as near-pure noise, the cosine one spends them on visible structure.
* Two deterministic samplers (``Solver``), both with "trailing" timestep spacing, so the first step
  starts at t = T - 1 (pure noise) as the latent z promises (Lin et al. 2024), and both clipping the
  predicted x_0 to [-1, 1]: ``DDIMScheduler`` (Song et al. 2021, eta = 0, first order; 50 steps by
  default) and ``DPMSolverMultistepScheduler`` as DPM-Solver++ (Lu et al. 2022, second-order
  multistep in x_0-prediction), which follows the same probability-flow ODE with fewer network
  passes. Its dynamic thresholding at ``sample_max_value`` 1 is the same clip as DDIM's; its last
  step is first order onto sigma = 0, so the sample is the last predicted x_0, as with DDIM.

The network predicts the noise eps (eps-prediction); the loss is the MSE between true and predicted
noise at uniformly drawn timesteps (the "simple" loss of Ho et al.), optionally weighted per timestep
by min-SNR-gamma (Hang et al. 2023): for eps-prediction, w_t = min(SNR_t, gamma) / SNR_t with
SNR_t = abar_t / (1 - abar_t). Uniform weights spend most of the gradient on the low-noise steps,
which fix fine detail; the clipped weights shift it toward the high-noise steps that lay out the
image, which is what a short budget has to learn first.

Classifier-free guidance (Ho & Salimans 2022) for the conditional model: in training the label
embedding is replaced by a learned "no label" embedding with probability ``label_dropout``, so one
network learns eps(x_t, t, y) and eps(x_t, t); at sampling eps = eps_u + w (eps_c - eps_u) with
guidance scale w (``guidance_scale``): w = 0 is the unconditional model, w = 1 the conditional one,
w > 1 pushes samples toward what distinguishes their labels, at two network passes per step.

How the contract maps: the latent z is the initial noise x_T ~ N(0, I), shape (1, S, S), so
``latent_dim`` = S * S; ``decode(z)`` runs deterministic DDIM from that noise with the EMA weights,
so a fixed z gives the same image every time and the training loop's fixed-latent grids and
``study.samples`` work unchanged. There is no encoder (``has_encoder`` is False).

EMA: a copy of the denoiser (``ema``: the U-Net and, conditional, its label embedding) follows the
trained one after every optimiser step through the training loop's ``after_step`` hook, with decay
min(``ema_decay``, (1 + n) / (10 + n)) after n updates: the warm-up of
``diffusers.training_utils.EMAModel``, written out here because its shadow weights live outside the
module's ``state_dict``; as a submodule they are saved in every checkpoint and restored on resume.
The EMA copy is not in the optimiser and not in ``param_counts``.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.training_utils import compute_snr
from torch import Tensor, nn

from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS
from cxrnb.models.base import Family, GenerativeModel, InputSpec, Part, adam, count_params

T_TRAIN = 1000                  # diffusion steps of the forward process (Ho et al.)
SCHEDULE = "squaredcos_cap_v2"  # the cosine schedule (see the module docstring)


class Solver(StrEnum):
    """How the noise x_T becomes an image: both deterministic, so a fixed z gives a fixed image."""

    DDIM = "ddim"                    # first order, one network pass per step (Song et al. 2021)
    DPM_SOLVER = "dpm-solver++"      # second-order multistep (Lu et al. 2022): fewer steps for the same ODE


def make_sampler(solver: Solver | str, clip: bool = True,
                 prediction: str = "epsilon") -> DDIMScheduler | DPMSolverMultistepScheduler:
    """A fresh scheduler of ``solver`` on the training schedule (fresh: set_timesteps and the
    multistep history are state, so every sampling call gets its own). ``clip``: x_0 predictions
    clipped to [-1, 1], as pixels are (not for latent coordinates, which are unbounded);
    ``prediction``: what the network predicts, diffusers' "epsilon" or "v_prediction"."""
    common = dict(num_train_timesteps=T_TRAIN, beta_schedule=SCHEDULE, prediction_type=prediction,
                  timestep_spacing="trailing")
    if Solver(solver) == Solver.DDIM:
        return DDIMScheduler(**common, clip_sample=clip)
    return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                       thresholding=clip, sample_max_value=1.0,   # = clip x_0 to [-1, 1]
                                       lower_order_final=True, final_sigmas_type="zero")


def min_snr_weights(alphas_cumprod: Tensor, t: Tensor, gamma: float) -> Tensor:
    """min-SNR-gamma weights of the eps-MSE at timesteps ``t``: min(SNR_t, gamma) / SNR_t."""
    snr = compute_snr(_Schedule(alphas_cumprod), t)
    return snr.clamp(max=gamma) / snr


class _Schedule:
    """What ``compute_snr`` reads of a scheduler: its alphas_cumprod."""

    def __init__(self, alphas_cumprod: Tensor):
        self.alphas_cumprod = alphas_cumprod


def unet(image_size: int, channels: tuple[int, ...], conditional: bool = False) -> UNet2DModel:
    """The noise predictor: one ResNet block per level, attention at the lowest level only.
    Conditional: a label embedding is added to the time embedding (``class_embed_type="identity"``)."""
    levels = len(channels)
    return UNet2DModel(sample_size=image_size, in_channels=1, out_channels=1, block_out_channels=tuple(channels),
                       layers_per_block=1, norm_num_groups=8,
                       class_embed_type="identity" if conditional else None,
                       attention_head_dim=min(32, channels[-1]),        # heads of 32 channels
                       down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
                       up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1))


class Denoiser(nn.Module):
    """eps_theta(x_t, t[, y]): the U-Net, plus for a conditional model a Linear map of the 15-value
    multi-hot label vector into the U-Net's time-embedding space (one module, so the EMA covers both)
    and, for classifier-free guidance (``null_label``), a learned embedding that stands for "no label"."""

    def __init__(self, image_size: int, channels: tuple[int, ...], conditional: bool, null_label: bool = False):
        super().__init__()
        self.unet = unet(image_size, channels, conditional)
        # 4 x channels[0] is diffusers' time-embedding width, which the label embedding is added to
        self.labels = nn.Linear(len(LABELS), 4 * channels[0]) if conditional else None
        self.null = nn.Parameter(torch.zeros(4 * channels[0])) if conditional and null_label else None

    def embed(self, y: Tensor, drop: Tensor | None = None) -> Tensor:
        """The label embedding of each row of ``y``; rows where ``drop`` is True get the "no label" one."""
        emb = self.labels(y)
        return emb if drop is None else torch.where(drop[:, None], self.null.to(emb.dtype), emb)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, drop: Tensor | None = None) -> Tensor:
        """Unconditional network: ``y`` None. Conditional: labels ``y``; ``y`` None with a null
        embedding means "no label" for every row (the unconditional half of guidance)."""
        if self.labels is None:
            emb = None
        elif y is None:
            emb = self.null.to(x.dtype).expand(len(x), -1)
        else:
            emb = self.embed(y.to(x.dtype), drop)
        return self.unet(x, t, class_labels=emb).sample


class DDPM(GenerativeModel):
    """DDPM on 1-channel images in [-1, 1]; samples by ``solver`` with EMA weights. ``conditional=True``
    adds the multi-hot labels to the time embedding; ``label_dropout`` > 0 trains it for
    classifier-free guidance at ``guidance_scale``. ``snr_gamma``: min-SNR-gamma loss weights."""

    family = Family.DIFFUSION

    def __init__(self, image_size: int = 128, channels: tuple[int, ...] | list[int] = (32, 64, 128, 128),
                 sample_steps: int = 50, lr: float = 2e-4, ema_decay: float = 0.9999, conditional: bool = False,
                 solver: str = Solver.DDIM, snr_gamma: float | None = None, label_dropout: float = 0.0,
                 guidance_scale: float = 1.0):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        levels = len(channels)
        if levels < 2 or image_size % 2 ** (levels - 1) or image_size // 2 ** (levels - 1) < 4:
            raise CxrnbError(f"a {levels}-level U-Net cannot take {image_size} px images: the size must be a "
                             f"multiple of {2 ** (levels - 1)} and at least {4 * 2 ** (levels - 1)}")
        if min(channels) < 8 or any(c % 8 for c in channels) or channels[-1] % min(32, channels[-1]):
            raise CxrnbError(f"channels {list(channels)}: each must be a multiple of 8 (GroupNorm's 8 groups), "
                             "and the last one of 32 when above 32 (attention heads)")
        check_sampling(solver, sample_steps)
        if not 0 <= ema_decay < 1:
            raise CxrnbError(f"ema_decay must be in [0, 1) (got {ema_decay})")
        if snr_gamma is not None and not snr_gamma > 0:
            raise CxrnbError(f"snr_gamma must be > 0, or None for uniform weights (got {snr_gamma})")
        if not 0 <= label_dropout < 1 or (label_dropout and not conditional):
            raise CxrnbError(f"label_dropout must be in [0, 1), and needs conditional=True (got {label_dropout})")
        if guidance_scale != 1 and not label_dropout:
            raise CxrnbError(f"guidance_scale {guidance_scale} needs an unconditional prediction: train with "
                             "label_dropout > 0 (e.g. 0.1), or keep guidance_scale 1")
        self.input_spec = InputSpec(size=image_size, channels=1, value_range="tanh")
        self.latent_dim = image_size * image_size
        self.sample_steps, self.solver = sample_steps, Solver(solver)
        self.lr, self.ema_decay, self.snr_gamma = lr, ema_decay, snr_gamma
        self.conditional, self.label_dropout, self.guidance_scale = conditional, label_dropout, guidance_scale
        self.net = Denoiser(image_size, channels, conditional, null_label=label_dropout > 0)
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.noise = DDPMScheduler(num_train_timesteps=T_TRAIN, beta_schedule=SCHEDULE,
                                   prediction_type="epsilon")

    # --- training -----------------------------------------------------------------------------------

    def optimizer(self, part: Part = Part.MODEL, fused: bool = True) -> torch.optim.Optimizer:
        """AdamW, lr 2e-4 (a common DDPM setting at this model size; Ho et al. used 2e-4 on CIFAR-10)."""
        return adam(self.net.parameters(), fused, adamw=True, lr=self.lr, weight_decay=0.0)

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t ~ q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, by the DDPM scheduler."""
        return self.noise.add_noise(x0, eps, t)

    def loss_weights(self, t: Tensor) -> Tensor:
        """Each image's weight in the eps-MSE: 1, or min-SNR-gamma's min(SNR_t, gamma) / SNR_t."""
        if self.snr_gamma is None:
            return torch.ones(len(t), device=t.device)
        return min_snr_weights(self.noise.alphas_cumprod, t, self.snr_gamma)

    def label_drop(self, n: int, device: torch.device | None = None) -> Tensor | None:
        """Which of ``n`` images train without their labels (each with probability ``label_dropout``)."""
        if not self.label_dropout:
            return None
        return torch.rand(n, device=device) < self.label_dropout

    def loss(self, x: Tensor, y: Tensor | None = None, part: Part = Part.MODEL) -> dict[str, Tensor]:
        """eps-MSE at timesteps drawn uniformly from 0..T-1 (one per image), weighted per image."""
        t = torch.randint(0, T_TRAIN, (x.shape[0],), device=x.device)
        eps = torch.randn_like(x)
        drop = self.label_drop(len(x), x.device) if self.conditional else None
        pred = self.net(self.q_sample(x, t, eps), t, self.condition(y, len(x)), drop)
        per_image = (pred.float() - eps.float()).pow(2).flatten(1).mean(1)
        out = {"loss": (self.loss_weights(t) * per_image).mean()}
        if self.snr_gamma is not None:
            out["mse"] = per_image.detach().mean()          # the unweighted eps-MSE, for comparison
        return out

    def ema_decay_now(self) -> float:
        """The decay of the next EMA update: EMAModel's warm-up (1 + n) / (10 + n), capped."""
        n = int(self.ema_updates)
        return min(self.ema_decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def after_step(self, part: Part) -> None:
        """ema <- d * ema + (1 - d) * weights, after each optimiser step (the training loop calls it)."""
        d = self.ema_decay_now()
        for e, p in zip(self.ema.parameters(), self.net.parameters()):
            e.lerp_(p.detach(), 1 - d)
        self.ema_updates += 1

    # --- sampling -----------------------------------------------------------------------------------

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """x_T ~ N(0, I), (n, 1, S, S)."""
        s = self.input_spec.size
        return self.gaussian(n, 1, s, s, generator=generator)

    @contextmanager
    def sampling(self, solver: Solver | str | None = None, steps: int | None = None,
                 guidance_scale: float | None = None) -> Iterator[DDPM]:
        """Sample with another solver, number of steps or guidance scale inside the block (the
        same trained weights), then the model's own settings again."""
        before = self.solver, self.sample_steps, self.guidance_scale
        solver, steps = solver or self.solver, steps or self.sample_steps
        check_sampling(solver, steps)
        if guidance_scale is not None and guidance_scale != 1 and not self.label_dropout:
            raise CxrnbError(f"{self.preset or 'this DDPM'} was trained without label dropout: it has no "
                             "unconditional prediction to guide with")
        self.solver, self.sample_steps = Solver(solver), steps
        self.guidance_scale = before[2] if guidance_scale is None else guidance_scale
        try:
            yield self
        finally:
            self.solver, self.sample_steps, self.guidance_scale = before

    def guided_eps(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """The EMA network's noise prediction; with labels and guidance scale w != 1,
        eps_u + w (eps_c - eps_u) from a conditional and an unconditional pass."""
        if y is None or self.guidance_scale == 1:
            return self.ema(x, t, y)
        eps_u, eps_c = self.ema(x, t, None), self.ema(x, t, y)
        return eps_u + self.guidance_scale * (eps_c - eps_u)

    def predicted_x0(self, x: Tensor, eps: Tensor, t: int) -> Tensor:
        """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), clipped to [-1, 1], as both solvers do."""
        a = self.noise.alphas_cumprod[t].to(x.device, torch.float32)
        return ((x.float() - (1 - a).sqrt() * eps.float()) / a.sqrt()).clamp(-1, 1)

    @torch.no_grad()
    def denoise(self, z: Tensor, y: Tensor | None = None,
                steps: int | None = None) -> Iterator[tuple[int, Tensor, Tensor]]:
        """The model's solver from x_T = z (and labels y) with the EMA weights: yields (t, x_t,
        predicted x_0) at each of ``steps`` steps, x_t being the input of that step."""
        y = self.condition(y, len(z))
        sampler = make_sampler(self.solver)                     # its own timesteps: re-entrant
        sampler.set_timesteps(steps or self.sample_steps, device=z.device)
        x = z.reshape(-1, 1, self.input_spec.size, self.input_spec.size).to(self.device)
        for t in sampler.timesteps:
            eps = self.guided_eps(x, t, y)
            yield int(t), x, self.predicted_x0(x, eps, int(t))
            x = sampler.step(eps, int(t), x).prev_sample      # int: its tables stay on the CPU

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """x_T -> x_0 in [-1, 1] by ``sample_steps`` solver steps (the last step's x_0 prediction,
        which is where both solvers' last step lands)."""
        (_, _, x0), = deque(self.denoise(z, y), maxlen=1)     # run every step, keep only the last
        return x0

    def passes_per_sample(self) -> int:
        """Network passes per image: one per step, two with guidance."""
        guided = self.conditional and self.guidance_scale != 1
        return self.sample_steps * (2 if guided else 1)

    def param_counts(self) -> dict[str, int]:
        """The trained weights (the EMA copy is the same weights again, not counted)."""
        counts = {"unet": count_params(self.net.unet)}
        if self.conditional:
            counts["label_embedding"] = count_params(self.net.labels) + (
                0 if self.net.null is None else self.net.null.numel())
        return {**counts, "total": sum(counts.values())}


def check_sampling(solver: Solver | str, steps: int) -> None:
    """A known solver and a step count the schedule has."""
    if solver not in tuple(Solver):
        raise CxrnbError(f"unknown solver {solver!r}; solvers: {', '.join(Solver)}")
    if not 1 <= steps <= T_TRAIN:
        raise CxrnbError(f"sample_steps must be between 1 and {T_TRAIN} (got {steps})")
