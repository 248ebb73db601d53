"""CPU mixed precision: chosen only where bf16 is native, and it does not change the science."""

from __future__ import annotations

import torch

import cxrnb.training.loop as train_module
from cxrnb.data.cache import prepare
from cxrnb.models import build
from cxrnb.runtime import cpu_bf16_native, cpu_flags
from cxrnb.training.loop import Stepper, TrainConfig, train


def test_bf16_is_chosen_exactly_where_the_cpu_has_it(monkeypatch):
    native = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})   # the reference: /proc/cpuinfo itself
    assert cpu_bf16_native() == native
    model = build("VAE-beta1", image_size=32, weights=None)
    step = Stepper(model, torch.device("cpu"))
    assert (step.amp, step.channels_last) == (native, native)
    monkeypatch.setattr(train_module, "cpu_bf16_native", lambda: True)
    assert Stepper(model, torch.device("cpu")).amp
    assert not Stepper(model, torch.device("cpu"), amp=False).amp      # TrainConfig.amp=False: fp32


def final_loss(root, tmp_path, name: str, seed: int) -> float:
    torch.manual_seed(seed)
    model = build("VAE-beta1", image_size=32, weights=None)
    loader = prepare(root, size=32, progress=False).loader("train", batch_size=8, seed=seed)
    cfg = TrainConfig(max_steps=12, batch_size=8, seed=seed, device="cpu", progress=False,
                      sample_at=(), n_samples=4, out_dir=str(tmp_path / name))
    frame = train(model, loader, cfg).frame
    loss = frame[(frame.part == "model") & (frame.name == "loss")].value
    return float(loss.iloc[-4:].mean())


def test_bf16_training_reaches_the_losses_of_fp32(phantom_root, tmp_path, monkeypatch, one_thread):
    """The final loss (mean of the last 4 of 12 iterations) of a bf16-autocast run lies within the
    seed-to-seed spread of fp32 runs (twice the gap between seeds 0 and 1, at least 2%). On a CPU
    without native bf16 this runs emulated: slow, but the arithmetic is the same."""
    fp32 = [final_loss(phantom_root, tmp_path, f"fp32-{s}", s) for s in (0, 1)]
    monkeypatch.setattr(train_module, "cpu_bf16_native", lambda: True)   # TrainConfig's default then
    bf16 = final_loss(phantom_root, tmp_path, "bf16", 0)
    spread = max(2 * abs(fp32[0] - fp32[1]), 0.02 * fp32[0])
    assert abs(bf16 - fp32[0]) <= spread, (bf16, fp32)
    assert bf16 != fp32[0]                               # it did run in bf16
