"""Training throughput, naive loop vs the loop of cxrnb.training.loop, side by side in one run.

For each model family (LSGAN, VAE, one GMVAE) two copies of the same freshly built model train on
the same random batch:

(a) naive: what a first training script does. fp32, the model's plain Adam, default memory format,
    gradients zeroed (not freed), ``loss.item()`` after every step (a device sync), and for the GAN
    the textbook mistakes: the fake batch of D's step generated with a graph (so D's backward runs
    through G too), and G's steps computing gradients for D's weights that are thrown away.
(b) optimised: ``cxrnb.training.loop.Stepper`` with its defaults (``precision="auto"``: bf16 autocast
    and channels_last on CUDA, fp32 on every CPU, see ``cxrnb.runtime.Precision``; fused Adam; freed
    gradients; no per-step sync) and the models' own losses (no graph through G in D's step, D
    frozen in G's steps). The bf16 rows show what bf16 would cost or save on this machine.

On CUDA the models run at their paper sizes with batch 64. On a CPU they run at 64 px twice: with
batch 8 (where per-step overheads such as the optimiser's show) and with the ``cpu`` profile's batch
64 (what its notebooks train with, where the convolutions are nearly all the time); the README
says how long that takes, reports/bench.md what it measured. Rates are images/s, the best of
``rounds`` alternating rounds of timed steps (each after one warm-up step), so a busy moment on a
shared machine does not decide the ratio.
"""

from __future__ import annotations

import copy
import os
import time

import pandas as pd
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from cxrnb.bench.timing import random_batch, throughput
from cxrnb.models import build
from cxrnb.models.base import Family, GenerativeModel
from cxrnb.paths import in_repo
from cxrnb.provenance import Provenance
from cxrnb.report.tables import markdown_table, write_markdown
from cxrnb.runtime import (
    Precision,
    describe_cpu,
    describe_device,
    describe_precision,
    pick_device,
    resolve_precision,
    synchronize,
)
from cxrnb.training.loop import Stepper

PRESETS = ("LSGAN", "VAE-beta0.1", "GMVAE-V5")
CPU_SIZE, CPU_BATCHES, GPU_BATCH = 64, (8, 64), 64     # 64: the cpu profile's batch (run.PROFILES)


def naive_loss(model: GenerativeModel, x: Tensor, y: Tensor, part: str) -> Tensor:
    """The model's loss, except for the GAN: the LSGAN losses written the straightforward way."""
    if model.family != Family.GAN:
        return model.loss(x, y, part)["loss"]
    fake = model.decode(torch.randn(len(x), model.latent_dim, device=x.device))   # graph through G
    if part == "d":
        return 0.5 * (model.D(x) - 1).pow(2).mean() + 0.5 * model.D(fake).pow(2).mean()
    return 0.5 * (model.D(fake) - 1).pow(2).mean()                                # D's grads too


class NaiveStep:
    """One iteration of the model's schedule, written as a first training script would be."""

    def __init__(self, model: GenerativeModel, device: torch.device):
        self.model, self.device = model.to(device), device
        self.optimizers = {part: model.optimizer(part, fused=False) for part, _ in model.schedule}
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


def step_flops(step: Stepper, u8: Tensor, y: Tensor) -> int:
    """Floating-point operations (multiply-add = 2) of one training iteration of ``step``: every
    forward and backward of its schedule, counted by torch's FlopCounterMode (convolutions, matmuls;
    elementwise work is not counted, so the rate is a lower bound)."""
    counter = FlopCounterMode(display=False)
    with counter:
        step(u8, y)
    return counter.get_total_flops()


def practical_peak(device: torch.device, precision: Precision = Precision.FP32, n: int = 2048,
                   repeats: int = 5) -> float:
    """GFLOP/s of a large matmul on ``device`` in ``precision`` (the loop's: a bf16 step is measured
    against a bf16 peak): a measured "practical peak" (what the BLAS reaches on this machine now),
    not the datasheet's."""
    dtype = torch.bfloat16 if precision == Precision.BF16 else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    a @ a
    synchronize(device)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        synchronize(device)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def variants(device: torch.device, compile: bool = False) -> dict[str, dict]:
    """The optimised loop (its defaults on this device) and, on a CPU, the settings it chose
    between, measured beside it so the table shows why; with ``compile``, also the optimised loop
    under torch.compile (off by default in TrainConfig: this column shows whether it pays)."""
    out = {"optimised": {}}
    if device.type == "cpu":
        out["fp32 + channels_last"] = {"precision": "fp32", "channels_last": True}
        out["bf16 autocast + channels_last"] = {"precision": "bf16", "channels_last": True}
    if compile:
        out["optimised + torch.compile"] = {"compile": True}
    return out


def compare(preset: str, device: torch.device, size: int | None, batch: int, steps: int = 3,
            rounds: int = 2, compile: bool = False) -> dict:
    """Images/s of the naive and the optimised loop for one preset, measured alternately."""
    torch.manual_seed(0)
    model = build(preset, image_size=size, weights=None).train()
    steppers = {"naive": NaiveStep(copy.deepcopy(model), device)}
    for name, kw in variants(device, compile).items():
        steppers[name] = Stepper(copy.deepcopy(model), device, **kw)   # bf16 also where emulated: its cost
    u8, y = random_batch(batch, model.input_spec.size)
    compile_s = None
    if compile:                                     # the first call compiles: its price, timed once
        t0 = time.perf_counter()
        steppers["optimised + torch.compile"](u8, y)
        synchronize(device)
        compile_s = time.perf_counter() - t0
    rates = dict.fromkeys(steppers, 0.0)
    for _ in range(rounds):
        for name, step in steppers.items():
            rates[name] = max(rates[name], throughput(step, u8, y, device, steps=steps))
    flops = step_flops(steppers["optimised"], u8, y)
    fast = steppers["optimised"]
    row = {"family": model.family, "preset": preset, "size": model.input_spec.size, "batch": batch,
           "chosen": describe_precision(fast.precision, fast.channels_last),
           "naive img/s": rates["naive"], "optimised img/s": rates["optimised"],
           "speed-up": rates["optimised"] / rates["naive"],
           "GFLOP/step": flops / 1e9, "GFLOP/s": flops / 1e9 * rates["optimised"] / batch}
    for name in steppers:
        if name not in ("naive", "optimised"):
            row[f"{name} img/s"] = rates[name]
    if compile_s is not None:
        row["compile s"] = compile_s
    return row


def timed(steps: dict[int, int]) -> str:
    """What one timing covers, per batch size: "10 steps at batch 8, 2 at batch 64"."""
    return ", ".join(f"{n} steps at batch {b}" if i == 0 else f"{n} at batch {b}"
                     for i, (b, n) in enumerate(steps.items()))


def summary(table: pd.DataFrame, goal: float = 1.5) -> str:
    """The speed-ups in one sentence per batch size, and which families reach ``goal``."""
    parts = []
    for batch, rows in table.groupby("batch"):
        ups = ", ".join(f"{r.preset} {r['speed-up']:.2f}x" for _, r in rows.iterrows())
        met = [r.preset for _, r in rows.iterrows() if r["speed-up"] >= goal]
        parts.append(f"batch {batch}: {ups}; {goal:g}x reached by "
                     + (", ".join(met) if met else "none"))
    return "Optimised over naive, " + "; ".join(parts) + "."


def markdown(table: pd.DataFrame, device: torch.device, peak: float, rounds: int,
             steps: dict[int, int], load: tuple[float, float, float]) -> str:
    """reports/bench.md: the table, the ceiling, the device, and the GPU rows' status."""
    shown = table.copy()
    shown["% of peak"] = 100 * shown["GFLOP/s"] / peak
    lines = ["# Training throughput: naive loop vs cxrnb.training.loop", "",
             f"Device: {describe_device(str(device))}; torch {torch.__version__}.",
             f"CPU: {describe_cpu()}.", "",
             f"Best of {rounds} alternating rounds, each timing {timed(steps)} (after a warm-up step), "
             "one random batch (speed does not depend on the pixels); each ratio is measured side by side, "
             "so it holds on a busy machine better than "
             "the absolute rates do. Load average when it started: "
             f"{', '.join(f'{x:.1f}' for x in load)} (1, 5, 15 min).", "",
             markdown_table(shown.round(2)), "", summary(table), "",
             f"Ceiling: practical peak {peak:,.1f} GFLOP/s, measured (best {resolve_precision('auto', device)} "
             "2048x2048 matmul, the optimised loop's precision, on this "
             "device now), not a datasheet figure. GFLOP/s counts the convolutions and matmuls of one "
             "optimised iteration's forwards and backwards (torch.utils.flop_counter), so it is a lower bound.",
             "", "`chosen` is what `TrainConfig` does here by default (`precision='auto'`): bf16 autocast and "
             "channels_last on CUDA, fp32 on every CPU, so that results do not depend on whether the CPU has "
             "native bf16 (the bf16 column shows what bf16 would cost or save here)."]
    if "compile s" in table:
        lines += ["", "torch.compile (`TrainConfig.compile`, off by default): img/s once compiled, and `compile "
                  "s`, the first step's wall time, which includes the compilation; a run pays it once."]
    if device.type != "cuda":
        lines += ["", "GPU rows: not measured: no GPU lent."]
    return "\n".join(lines) + "\n"


def main(device: str = "auto", size: int | None = None, presets: tuple[str, ...] = PRESETS,
         steps: int = 10, rounds: int = 3, report: str | None = "reports/bench",
         compile: bool = False) -> pd.DataFrame:
    """Measure and print the table (and write ``report``.md); returns it."""
    d = pick_device(device)
    load = os.getloadavg()                          # before the bench adds its own
    size = size or (CPU_SIZE if d.type == "cpu" else None)
    batches = (GPU_BATCH,) if d.type == "cuda" else CPU_BATCHES
    # about the same images per timing at every batch (10 steps of 8, 2 of 64): minutes, not ten
    steps_at = {b: max(2, steps * batches[0] // b) for b in batches}
    table = pd.DataFrame([compare(p, d, size, b, steps_at[b], rounds, compile)
                          for b in batches for p in presets])
    precision = resolve_precision("auto", d)       # what the optimised loop trains in
    peak = practical_peak(d, precision)
    print(f"training throughput on {describe_device(device)} (torch {torch.__version__}), "
          f"best of {rounds} rounds of {timed(steps_at)}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    print(summary(table))
    print(f"practical peak (measured {precision} matmul): {peak:,.1f} GFLOP/s; "
          + ", ".join(f"{r.family} {r['GFLOP/s']:,.1f} GFLOP/s ({100 * r['GFLOP/s'] / peak:.0f}%)"
                      for _, r in table.iterrows()))
    if report:
        prov = Provenance("images from random uint8 batches", int(table["batch"].max()),
                          int(table["size"].iloc[0]),
                          extra={"device": describe_device(device), "torch": torch.__version__})
        path = write_markdown(markdown(table, d, peak, rounds, steps_at, load), in_repo(report), prov)
        print(f"wrote {path}")
    return table
