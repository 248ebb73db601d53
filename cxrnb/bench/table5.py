"""The paper's Table 5 regenerated: parameter counts beside the paper's, training speed measured here.

The paper's numbers are kept below as printed in its Table 5 ("Parameter counts and train time for
reported architectures. The training time is average training time per epoch on 1 Nvidia T4 GPU on
Google Cloud Compute"). Our counts come from each model's own ``param_counts``; our speed is
measured on this machine with the training loop's own step (``cxrnb.training.loop.Stepper``: bf16,
channels_last on CUDA, fused Adam on CUDA and CPU) and extrapolated to one epoch of full CXR14.

The GMVAE counts differ by construction: the paper counts only the ConvT weights of Decoders 1/2
(Tables 2-3), while a working GMVAE also needs the layers from z to the decoder's first grid, the
encoder's mean/log-variance head and the mixture prior; those appear in our totals, so our
"Total" rows do not match the paper's (the "match" column says so rather than hiding it).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from cxrnb.bench.timing import random_batch, throughput
from cxrnb.models import PRESETS, build
from cxrnb.runtime import describe_device, pick_device
from cxrnb.training.loop import Stepper

CXR14_IMAGES = 112_120          # images in full CXR14, what "one epoch" meant in the paper
GPU_BATCH = 64                  # the paper's batch size
CPU_BATCH = 8                   # 64 VGG16 images at 224 px would take minutes per step on a CPU; its
                                # images/s grow with the batch (reports/bench.md times batch 8 and 64),
                                # so the CPU rows are lower bounds


@dataclass(frozen=True)
class Architecture:
    """One row of the paper's Table 5 and how we rebuild it."""

    name: str                                   # as printed in the paper
    preset: str                                 # the preset timed for the speed columns
    overrides: dict                             # constructor arguments for that preset
    parts: tuple[tuple[str, str, str, int], ...]   # (paper's part name, preset, our key, paper count)
    paper_minutes: float                        # per epoch on one T4


_ENC_TRAIN = {"freeze_encoder": False}
TABLE5 = (
    Architecture("GAN", "LSGAN", {}, (
        ("Discriminator", "LSGAN", "discriminator", 2_795_904),
        ("Generator", "LSGAN", "generator", 3_606_976),
        ("Total", "LSGAN", "total", 6_402_880)), 24),
    Architecture("VAE", "VAE-beta0.1", {}, (
        ("Encoder", "VAE-beta0.1", "encoder", 4_711_648),
        ("Decoder", "VAE-beta0.1", "decoder", 11_184_033),
        # The paper's "Mean and Logvar: 8,389,632" is the size of EACH head: only then do its parts
        # add up to its total (see cxrnb/models/vae.py).
        ("Mean and Logvar: mean", "VAE-beta0.1", "mean", 8_389_632),
        ("Mean and Logvar: logvar", "VAE-beta0.1", "logvar", 8_389_632),
        ("Total", "VAE-beta0.1", "total", 32_674_945)), 48),
    Architecture("GM-VAE (Encoder in Eval)", "GMVAE-V5", {}, (
        ("Decoder1", "GMVAE-V3", "decoder_weights", 1_920),
        ("Decoder2", "GMVAE-V5", "decoder_weights", 172_800)), 30),
    Architecture("GM-VAE (Encoder in Train)", "GMVAE-V5", _ENC_TRAIN, (
        ("VGG16 Features Encoder", "GMVAE-V5", "encoder", 14_714_688),
        ("Decoder1", "GMVAE-V3", "decoder_weights", 1_920),
        ("Decoder2", "GMVAE-V5", "decoder_weights", 172_800),
        ("Total with Decoder1", "GMVAE-V3", "total", 14_716_608),    # printed as the range
        ("Total with Decoder2", "GMVAE-V5", "total", 14_887_488)), 65),   # "14,716,608 - 14,887,488"
)


def minutes_per_epoch(images_per_s: float, images: int = CXR14_IMAGES) -> float:
    """Minutes for one pass over ``images`` at a measured rate."""
    return images / images_per_s / 60


def measure(model, device: torch.device, batch: int, steps: int) -> float:
    """Training images/s of ``model`` on a random uint8 batch, after one untimed warm-up step."""
    u8, y = random_batch(batch, model.input_spec.size)
    return throughput(Stepper(model.train(), device), u8, y, device, steps=steps, warmup=1)


def counts(size: int | None = None) -> pd.DataFrame:
    """One row per (architecture, part) of Table 5: our parameter count beside the paper's.
    Models are built at their paper sizes (or ``size``) with random weights."""
    by_preset = {}
    rows = []
    for arch in TABLE5:
        for part, preset, key, paper in arch.parts:
            if preset not in by_preset:
                by_preset[preset] = build(preset, image_size=size, weights=None).param_counts()
            ours = by_preset[preset][key]
            rows.append({"architecture": arch.name, "part": part, "preset": preset, "params": ours,
                         "paper params": paper, "match": ours == paper})
    return pd.DataFrame(rows)


def speeds(device: str = "auto", size: int | None = None, steps: int = 3,
           batch: int | None = None) -> pd.DataFrame:
    """One row per architecture: training images/s measured here, minutes per CXR14 epoch
    extrapolated from it, and the paper's minutes on a T4."""
    d = pick_device(device)
    batch = batch or (CPU_BATCH if d.type == "cpu" else GPU_BATCH)
    rows = []
    for arch in TABLE5:
        torch.manual_seed(0)
        rate = measure(build(arch.preset, image_size=size, weights=None, **arch.overrides), d, batch, steps)
        rows.append({"architecture": arch.name, "timed preset": arch.preset,
                     "image size": size or PRESETS[arch.preset].image_size, "batch": batch,
                     "img/s": rate, "min/epoch": minutes_per_epoch(rate),
                     "paper min/epoch (T4)": arch.paper_minutes})
    return pd.DataFrame(rows)


def table5(device: str = "auto", size: int | None = None, steps: int = 3,
           batch: int | None = None) -> pd.DataFrame:
    """Counts and speeds in one table (speed columns repeated on each part of an architecture);
    ``attrs["device"]`` names the device the speeds were measured on."""
    pick_device(device)                         # a bad device fails before minutes of building
    table = counts(size).merge(speeds(device, size, steps, batch), on="architecture")
    table.attrs["device"] = describe_device(device)
    return table


def print_table5(device: str = "auto", size: int | None = None, steps: int = 3,
                 batch: int | None = None) -> pd.DataFrame:
    """Measure and print Table 5 (the `cxrnb params` command); returns the table."""
    t = table5(device, size, steps, batch)
    at = f" at {size} px (the paper's counts are at its own sizes: 128 px, GMVAE 224)" if size else ""
    print(f"Table 5, parameter counts: ours (cxrnb){at} beside the paper's")
    print(t[["architecture", "part", "preset", "params", "paper params", "match"]]
          .to_string(index=False, formatters={"params": "{:,}".format, "paper params": "{:,}".format}))
    speed = t.drop_duplicates("architecture")[
        ["architecture", "timed preset", "image size", "batch", "img/s", "min/epoch",
         "paper min/epoch (T4)"]].copy()
    speed["paper img/s (T4)"] = CXR14_IMAGES / (speed["paper min/epoch (T4)"] * 60)
    print(f"\nTable 5, training time per epoch of full CXR14 ({CXR14_IMAGES:,} images), extrapolated "
          f"from img/s measured over {steps} steps on {t.attrs['device']} (the paper: one T4)")
    print(speed.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    return t


def beside_table5(model, size: int | None = None) -> pd.DataFrame:
    """``model``'s parameter count (e.g. a model the paper did not train, such as the DDPM) beside
    Table 5's LSGAN and VAE built at the same image size, and the paper's totals (at its 128 px)."""
    size = size or model.input_spec.size
    paper = {arch.preset: next(count for _, _, key, count in arch.parts if key == "total")
             for arch in TABLE5 if arch.preset in ("LSGAN", "VAE-beta0.1")}
    rows = [{"model": name, "family": PRESETS[name].family, "image size": size,
             "parameters": build(name, image_size=size, weights=None).param_counts()["total"],
             "paper parameters (128 px)": total} for name, total in paper.items()]
    rows.append({"model": model.preset or type(model).__name__, "family": model.family,
                 "image size": model.input_spec.size, "parameters": model.param_counts()["total"],
                 "paper parameters (128 px)": None})
    return pd.DataFrame(rows)
