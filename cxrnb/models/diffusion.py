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
* ``DDIMScheduler`` (Song et al. 2021) with eta = 0 for sampling in ``sample_steps`` steps (50 by
  default) with "trailing" timestep spacing, so the first step starts at t = T - 1 (pure noise) as
  the latent z promises (Lin et al. 2024).

The network predicts the noise eps (eps-prediction); the loss is the MSE between true and predicted
noise at uniformly drawn timesteps (the "simple" loss of Ho et al.).

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

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import Tensor, nn

from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS
from cxrnb.models.base import Family, GenerativeModel, InputSpec, Part, adam, count_params

T_TRAIN = 1000                  # diffusion steps of the forward process (Ho et al.)
SCHEDULE = "squaredcos_cap_v2"  # the cosine schedule (see the module docstring)


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
    multi-hot label vector into the U-Net's time-embedding space (one module, so the EMA covers both)."""

    def __init__(self, image_size: int, channels: tuple[int, ...], conditional: bool):
        super().__init__()
        self.unet = unet(image_size, channels, conditional)
        # 4 x channels[0] is diffusers' time-embedding width, which the label embedding is added to
        self.labels = nn.Linear(len(LABELS), 4 * channels[0]) if conditional else None

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = None if self.labels is None else self.labels(y.to(x.dtype))
        return self.unet(x, t, class_labels=emb).sample


class DDPM(GenerativeModel):
    """DDPM on 1-channel images in [-1, 1]; samples by DDIM with EMA weights. ``conditional=True``
    adds the multi-hot labels to the time embedding (no classifier-free guidance)."""

    family = Family.DIFFUSION

    def __init__(self, image_size: int = 128, channels: tuple[int, ...] | list[int] = (32, 64, 128, 128),
                 sample_steps: int = 50, lr: float = 2e-4, ema_decay: float = 0.9999, conditional: bool = False):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        levels = len(channels)
        if levels < 2 or image_size % 2 ** (levels - 1) or image_size // 2 ** (levels - 1) < 4:
            raise CxrnbError(f"a {levels}-level U-Net cannot take {image_size} px images: the size must be a "
                             f"multiple of {2 ** (levels - 1)} and at least {4 * 2 ** (levels - 1)}")
        if min(channels) < 8 or any(c % 8 for c in channels) or channels[-1] % min(32, channels[-1]):
            raise CxrnbError(f"channels {list(channels)}: each must be a multiple of 8 (GroupNorm's 8 groups), "
                             "and the last one of 32 when above 32 (attention heads)")
        if not 1 <= sample_steps <= T_TRAIN:
            raise CxrnbError(f"sample_steps must be between 1 and {T_TRAIN} (got {sample_steps})")
        if not 0 <= ema_decay < 1:
            raise CxrnbError(f"ema_decay must be in [0, 1) (got {ema_decay})")
        self.input_spec = InputSpec(size=image_size, channels=1, value_range="tanh")
        self.latent_dim = image_size * image_size
        self.sample_steps, self.lr, self.ema_decay = sample_steps, lr, ema_decay
        self.conditional = conditional
        self.net = Denoiser(image_size, channels, conditional)
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.noise = DDPMScheduler(num_train_timesteps=T_TRAIN, beta_schedule=SCHEDULE,
                                   prediction_type="epsilon")
        self.sampler = DDIMScheduler(num_train_timesteps=T_TRAIN, beta_schedule=SCHEDULE, prediction_type="epsilon",
                                     clip_sample=True, timestep_spacing="trailing")

    # --- training -----------------------------------------------------------------------------------

    def optimizer(self, part: Part = Part.MODEL, fused: bool = True) -> torch.optim.Optimizer:
        """AdamW, lr 2e-4 (a common DDPM setting at this model size; Ho et al. used 2e-4 on CIFAR-10)."""
        return adam(self.net.parameters(), fused, adamw=True, lr=self.lr, weight_decay=0.0)

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t ~ q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, by the DDPM scheduler."""
        return self.noise.add_noise(x0, eps, t)

    def loss(self, x: Tensor, y: Tensor | None = None, part: Part = Part.MODEL) -> dict[str, Tensor]:
        """eps-MSE at timesteps drawn uniformly from 0..T-1 (one per image)."""
        t = torch.randint(0, T_TRAIN, (x.shape[0],), device=x.device)
        eps = torch.randn_like(x)
        pred = self.net(self.q_sample(x, t, eps), t, self.condition(y, len(x)))
        return {"loss": F.mse_loss(pred.float(), eps.float())}

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

    @torch.no_grad()
    def denoise(self, z: Tensor, y: Tensor | None = None,
                steps: int | None = None) -> Iterator[tuple[int, Tensor, Tensor]]:
        """Deterministic DDIM (eta = 0) from x_T = z (and labels y) with the EMA weights: yields
        (t, x_t, predicted x_0) at each of ``steps`` steps, x_t being the input of that step."""
        y = self.condition(y, len(z))
        sampler = DDIMScheduler.from_config(self.sampler.config)   # its own timesteps: re-entrant
        sampler.set_timesteps(steps or self.sample_steps, device=z.device)
        x = z.reshape(-1, 1, self.input_spec.size, self.input_spec.size).to(self.device)
        for t in sampler.timesteps:
            eps = self.ema(x, t, y)
            out = sampler.step(eps, int(t), x, eta=0.0)          # int: its tables stay on the CPU
            yield int(t), x, out.pred_original_sample
            x = out.prev_sample

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """x_T -> x_0 in [-1, 1] by ``sample_steps`` DDIM steps (the last step's x_0 prediction)."""
        (_, _, x0), = deque(self.denoise(z, y), maxlen=1)     # run every step, keep only the last
        return x0

    def param_counts(self) -> dict[str, int]:
        """The trained weights (the EMA copy is the same weights again, not counted)."""
        counts = {"unet": count_params(self.net.unet)}
        if self.conditional:
            counts["label_embedding"] = count_params(self.net.labels)
        return {**counts, "total": sum(counts.values())}
