"""Both precision paths, on any CPU: fp32 by default everywhere, bf16 when asked, and bf16 does not change
the science."""

from __future__ import annotations

import math

import pytest
import torch

from cxrnb import runtime
from cxrnb.data.cache import prepare
from cxrnb.errors import CxrnbError
from cxrnb.models import build
from cxrnb.runtime import Precision, cpu_bf16_native, cpu_flags, describe_precision, resolve_precision
from cxrnb.training.loop import Stepper, TrainConfig, train


def test_cpu_flags_say_whether_bf16_is_native():
    native = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})   # the reference: /proc/cpuinfo itself
    assert cpu_bf16_native() == native


def test_auto_is_fp32_on_every_cpu_and_bf16_only_when_asked(monkeypatch):
    """The same command must compute the same way on a CPU with native bf16 and one without: 'auto'
    is fp32 on both (the loop used to switch to bf16 where it was native, and FDs moved), bf16
    autocast on CUDA; bf16 on a CPU is an explicit choice."""
    monkeypatch.delenv(runtime.PRECISION_ENV, raising=False)    # what a user gets without forcing
    model = build("VAE-beta1", image_size=32, weights=None)
    for native in (False, True):                                  # both CPU kinds, on this one
        monkeypatch.setattr(runtime, "cpu_bf16_native", lambda native=native: native)
        step = Stepper(model, torch.device("cpu"))
        assert (step.precision, step.amp, step.channels_last) == (Precision.FP32, False, False)
        step = Stepper(model, torch.device("cpu"), precision="bf16")
        assert (step.precision, step.amp, step.channels_last) == (Precision.BF16, True, True)
    assert resolve_precision("auto", torch.device("cuda")) == Precision.BF16
    assert describe_precision(Precision.BF16, True) == "bf16 autocast + channels_last"
    with pytest.raises(CxrnbError, match="unknown precision 'fp16'"):
        TrainConfig(precision="fp16")


def final_loss(root, tmp_path, name: str, seed: int, precision: str) -> float:
    torch.manual_seed(seed)
    model = build("VAE-beta1", image_size=32, weights=None)
    loader = prepare(root, size=32, progress=False).loader("train", batch_size=8, seed=seed)
    cfg = TrainConfig(max_steps=12, batch_size=8, seed=seed, device="cpu", progress=False,
                      sample_at=(), n_samples=4, out_dir=str(tmp_path / name), precision=precision)
    history = train(model, loader, cfg)
    assert history.arithmetic == ("fp32" if precision == "fp32" else "bf16 autocast + channels_last")
    frame = history.frame
    loss = frame[(frame.part == "model") & (frame.name == "loss")].value
    return float(loss.iloc[-4:].mean())


def test_bf16_training_reaches_the_losses_of_fp32(phantom_root, tmp_path, one_thread):
    """The final loss (mean of the last 4 of 12 iterations) of a bf16-autocast run lies within the
    seed-to-seed spread of fp32 runs (twice the gap between seeds 0 and 1, at least 2%). On a CPU
    without native bf16 this runs emulated: slow, but the arithmetic is the same."""
    fp32 = [final_loss(phantom_root, tmp_path, f"fp32-{s}", s, "fp32") for s in (0, 1)]
    bf16 = final_loss(phantom_root, tmp_path, "bf16", 0, "bf16")
    spread = max(2 * abs(fp32[0] - fp32[1]), 0.02 * fp32[0])
    assert abs(bf16 - fp32[0]) <= spread, (bf16, fp32)
    assert bf16 != fp32[0]                               # it did run in bf16


def test_the_elbo_gmvae_trains_in_bf16_on_a_cpu(phantom_root, tmp_path, one_thread):
    """The study's arithmetic twin is the ELBO GMVAE trained again in bf16: its mixture prior and
    encoder take bf16 autocast on a CPU (emulated where not native) and give finite losses."""
    torch.manual_seed(0)
    model = build("GMVAE-elbo", image_size=64, weights=None)
    loader = prepare(phantom_root, size=64, progress=False).loader("train", batch_size=4, seed=0)
    cfg = TrainConfig(max_steps=2, batch_size=4, seed=0, device="cpu", progress=False, sample_at=(),
                      n_samples=4, out_dir=str(tmp_path / "gmvae-bf16"), precision="bf16")
    history = train(model, loader, cfg)
    assert history.arithmetic == "bf16 autocast + channels_last"
    losses = history.frame[history.frame.name == "loss"].value
    assert len(losses) >= 2 and losses.map(math.isfinite).all()
