"""Training throughput, naive loop vs the loop of cxrnb.train, side by side in one run.

For each model family (LSGAN, VAE, one GMVAE) two copies of the same freshly built model train on
the same random batch:

(a) naive: what a first training script does. fp32, the model's plain Adam, default memory format,
    gradients zeroed (not freed), ``loss.item()`` after every step (a device sync), and for the GAN
    the textbook mistakes: the fake batch of D's step generated with a graph (so D's backward runs
    through G too), and G's steps computing gradients for D's weights that are thrown away.
(b) optimised: ``cxrnb.train.Stepper`` with its defaults (bf16 autocast, channels_last and fused
    Adam on CUDA; freed gradients; no per-step sync) and the models' own losses (no graph through
    G in D's step, D frozen in G's steps).

On CUDA the models run at their paper sizes with batch 64; on a CPU at 64 px with batch 8, so the
whole benchmark takes about a minute. Rates are images/s, the best of ``rounds`` alternating rounds
of ``steps`` timed steps (each after one warm-up step), so a busy moment on a shared machine
does not decide the ratio.
"""

from __future__ import annotations

import copy

import pandas as pd
import torch
from torch import Tensor

from cxrnb.models import build
from cxrnb.models.base import GenerativeModel
from cxrnb.device import describe_device, pick_device
from cxrnb.train import Stepper, random_batch, throughput

PRESETS = ("LSGAN", "VAE-beta0.1", "GMVAE-V5")
CPU_SIZE, CPU_BATCH, GPU_BATCH = 64, 8, 64


def naive_loss(model: GenerativeModel, x: Tensor, y: Tensor, part: str) -> Tensor:
    """The model's loss, except for the GAN: the LSGAN losses written the straightforward way."""
    if model.family != "gan":
        return model.loss(x, y, part)["loss"]
    fake = model.decode(torch.randn(len(x), model.latent_dim, device=x.device))   # graph through G
    if part == "d":
        return 0.5 * (model.D(x) - 1).pow(2).mean() + 0.5 * model.D(fake).pow(2).mean()
    return 0.5 * (model.D(fake) - 1).pow(2).mean()                                # D's grads too


class NaiveStep:
    """One iteration of the model's schedule, written as a first training script would be."""

    def __init__(self, model: GenerativeModel, device: torch.device):
        self.model, self.device = model.to(device), device
        self.optimizers = {part: model.optimizer(part) for part, _ in model.schedule}
        self.losses: list[float] = []

    def __call__(self, u8: Tensor, y: Tensor) -> None:
        x, y = self.model.input_spec.to_model(u8.to(self.device)), y.to(self.device)
        for part, repeats in self.model.schedule:
            for _ in range(repeats):
                self.optimizers[part].zero_grad(set_to_none=False)
                loss = naive_loss(self.model, x, y, part)
                loss.backward()
                self.optimizers[part].step()
                self.losses.append(loss.item())


def compare(preset: str, device: torch.device, size: int | None, batch: int, steps: int = 3,
            rounds: int = 2) -> dict:
    """Images/s of the naive and the optimised loop for one preset, measured alternately."""
    torch.manual_seed(0)
    model = build(preset, image_size=size, weights=None).train()
    naive = NaiveStep(copy.deepcopy(model), device)
    fast = Stepper(copy.deepcopy(model), device)
    u8, y = random_batch(batch, model.input_spec.size)
    rates = {"naive": 0.0, "optimised": 0.0}
    for _ in range(rounds):
        for name, step in (("naive", naive), ("optimised", fast)):
            rates[name] = max(rates[name], throughput(step, u8, y, device, steps=steps))
    return {"family": model.family, "preset": preset, "size": model.input_spec.size, "batch": batch,
            "naive img/s": rates["naive"], "optimised img/s": rates["optimised"],
            "speed-up": rates["optimised"] / rates["naive"]}


def main(device: str = "auto", size: int | None = None, presets: tuple[str, ...] = PRESETS,
         steps: int = 10, rounds: int = 3) -> pd.DataFrame:
    """Measure and print the table; returns it."""
    d = pick_device(device)
    size = size or (CPU_SIZE if d.type == "cpu" else None)
    batch = GPU_BATCH if d.type == "cuda" else CPU_BATCH
    table = pd.DataFrame([compare(p, d, size, batch, steps, rounds) for p in presets])
    print(f"training throughput on {describe_device(device)} (torch {torch.__version__}), "
          f"best of {rounds} rounds x {steps} steps")
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    return table
