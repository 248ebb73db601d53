"""What a notebook shows of a run: its curves and sample grids, fresh samples (timed, per label,
or as a denoising trajectory), reconstructions, and one summary row per run.

Every function takes a ``Run`` (runs.py) and returns tensors in [0, 1] or a DataFrame, so a headless
run and an interactive one make the same figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from cxrnb.data.cache import Split
from cxrnb.errors import CxrnbError
from cxrnb.evaluation import diagnostics
from cxrnb.evaluation.metrics import ms_ssim_diversity
from cxrnb.labels import FINDINGS, NO_FINDING, one_hot
from cxrnb.models.base import IMAGENET_STD, Family
from cxrnb.models.losses import effective_beta
from cxrnb.provenance import Provenance
from cxrnb.runtime import synchronize
from cxrnb.study.runs import Run, diagnose


def curves(run: Run) -> pd.DataFrame:
    """Logged scalars per iteration, one column each: "loss", "kl" … of a single-part model,
    "d/loss", "g/loss" … of the GAN, and "heldout/active_units" … of the training-time diagnostics."""
    frame = run.history.frame
    wide = frame.pivot_table(index="iteration", columns=["part", "name"], values="value")
    single = frame[frame.part != "heldout"].part.nunique() == 1
    wide.columns = [name if single and part != "heldout" else f"{part}/{name}" for part, name in wide.columns]
    return wide


def heldout_curves(run: Run) -> pd.DataFrame:
    """The training-time diagnostics alone ("kl", "active_units", "heldout_mse" …, on the validation
    split), by iteration."""
    c = curves(run)
    return c[[k for k in c if k.startswith("heldout/")]].dropna(how="all").rename(
        columns=lambda k: k.removeprefix("heldout/"))


def sample_grids(run: Run) -> dict[str, torch.Tensor]:
    """The training loop's sample grids (same fixed latents), keyed "iteration N", as images."""
    return {f"iteration {i}": torch.from_numpy(np.asarray(Image.open(p).convert("L")) / 255.0)[None, None]
            for i, p in sorted(run.history.samples.items())}


def _labels(run: Run, n: int, g: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor | None:
    """The labels ``n`` samples of ``run`` are decoded with (``model.condition``: None for a model
    without labels). A conditional model not given ``labels`` gets those of ``n`` random training
    images, drawn from ``g``, so that label co-occurrence is real."""
    if run.model.conditional and labels is None:
        rows = torch.randint(0, len(run.cache.rows(Split.TRAIN)), (n,), generator=g)
        labels = run.cache.split_labels(Split.TRAIN)[rows]
    return run.model.condition(labels, n)


@torch.no_grad()
def samples(run: Run, n: int = 64, seed: int = 0, size: int | None = None,
            labels: torch.Tensor | None = None, batch: int = 64) -> torch.Tensor:
    """``n`` fresh samples in [0, 1], (n, 1, size, size). A conditional model is given ``labels``
    (one row per sample, or one row for all; default: those of ``n`` random training images, so
    label co-occurrence is real)."""
    model, g = run.model, torch.Generator().manual_seed(seed)
    y = _labels(run, n, g, labels)                      # drawn before the latents
    z = model.sample_latent(n, g)
    out = torch.cat([model.generate(z[i:i + batch], None if y is None else y[i:i + batch]).cpu()
                     for i in range(0, n, batch)])
    if size is not None and size != out.shape[-1]:
        out = F.interpolate(out, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
    return out


def samples_per_label(run: Run, n: int = 8, seed: int = 0,
                      names: Iterable[str] = (NO_FINDING, *FINDINGS)) -> dict[str, torch.Tensor]:
    """A conditional model's ``n`` samples for each one-hot label in ``names``, from the same ``n``
    latents in every row (the same ``seed``), so that across rows only the label changes."""
    if not run.model.conditional:
        raise CxrnbError(f"{run.preset} is not label-conditioned: it has no samples per label")
    return {name: samples(run, n, seed, labels=one_hot(name)) for name in names}


def timed_samples(run: Run, n: int = 100, seed: int = 0, size: int | None = None,
                  batch: int = 64) -> tuple[torch.Tensor, float]:
    """``samples`` and the wall seconds per image it took on the run's device: the price of
    sampling, which for a diffusion model is its number of denoising steps."""
    if n < 1:
        raise CxrnbError(f"n must be >= 1 to time sampling (got {n})")
    synchronize(run.model.device)
    t0 = time.perf_counter()
    out = samples(run, n, seed, size=size, batch=batch)
    return out, (time.perf_counter() - t0) / n


def seconds_per_image(run: Run, n: int = 100, seed: int = 0, batch: int = 100) -> float:
    """Wall seconds per image of ``samples`` (``n`` images, ``batch`` at a time): ``timed_samples``."""
    return timed_samples(run, n, seed, batch=batch)[1]


@torch.no_grad()
def trajectory(run: Run, n: int = 4, seed: int = 0, frames: int = 6) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The denoising of ``n`` samples (a diffusion model's ``denoise``): for each sample a row of its
    x_t and a row of its predicted x_0 at ``frames`` steps spread evenly from the first to the last,
    in [0, 1]; and the timesteps t shown. The last frame's x_0 is the sample ``samples`` returns
    with the same seed (a conditional model gets the same random training labels as there)."""
    model = run.model
    if model.family != Family.DIFFUSION:
        raise CxrnbError(f"{run.preset} is not a diffusion model: it has no denoising trajectory")
    steps = model.sample_steps
    keep = sorted({round(i * (steps - 1) / max(1, frames - 1)) for i in range(frames)})
    g = torch.Generator().manual_seed(seed)
    y = _labels(run, n, g)                              # drawn before the noise, as in ``samples``
    z = model.sample_latent(n, g)
    xs, x0s, ts = [], [], []
    for i, (t, x, x0) in enumerate(model.denoise(z, y)):
        if i in keep:
            ts.append(t)
            xs.append(model.input_spec.to_unit(x.clamp(-1, 1)).cpu())
            x0s.append(model.input_spec.to_unit(x0).cpu())
    rows = {}
    for k in range(n):
        rows[f"sample {k + 1}: x_t"] = torch.stack([x[k] for x in xs])
        rows[f"sample {k + 1}: predicted x_0"] = torch.stack([x[k] for x in x0s])
    return rows, ts


def reconstructions(run: Run, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` test images and the model's reconstructions of them (one seeded draw of q(z|x), decoded,
    as ``diagnostics`` scores them), both (n, 1, S, S) in [0, 1]."""
    u8 = run.cache.split_images(Split.TEST, max_images=n, seed=seed)
    y = run.cache.split_labels(Split.TEST, max_images=n, seed=seed)
    return u8.float() / 255, diagnostics.reconstruct(run.model, u8, y, seed)


def _summary_row(run: Run, n_samples: int, seed: int) -> dict:
    """One run's row of ``summary``."""
    c = curves(run)
    c = c[[k for k in c if not k.startswith("heldout/")]].dropna(how="all")
    tail = c.iloc[-max(1, len(c) // 10):].mean()
    row = {"preset": run.preset, "family": run.model.family, "image size": run.model.input_spec.size,
           "parameters": run.model.param_counts()["total"], "iterations": int(c.index.max()),
           "epochs": run.prov.epochs}
    row.update({f"final {k}": round(float(v), 5) for k, v in tail.items()})
    if run.model.has_encoder:
        d = diagnose(run, Split.TEST)
        row.update({"loss": run.model.reduction, "beta": run.model.beta, "latent_dim": run.model.latent_dim,
                    "effective_beta": round(_effective_beta(run, d.mean_image_mse), 4),
                    "kl": round(d.kl, 3), "active_units": d.active_units, "test_mse": round(d.mse, 5),
                    "mean_image_mse": round(d.mean_image_mse, 5), "collapsed": d.collapsed})
        real = run.cache.split_images(Split.TEST, max_images=n_samples, seed=seed)
        row["sample_ms_ssim"] = round(ms_ssim_diversity(samples(run, n_samples, seed)), 4)
        row["real_ms_ssim"] = round(ms_ssim_diversity(real), 4)
    return row


def summary(runs: Iterable[Run], n_samples: int = 64, seed: int = 0) -> pd.DataFrame:
    """A row per run: its settings, parameter count, iterations and final losses (mean of the last
    10% of iterations, which smooths batch noise). Models with an encoder add the collapse
    diagnostics on the test split (``kl`` in nats per image, ``active_units``, ``test_mse`` beside
    ``mean_image_mse``) and the diversity of ``n_samples`` samples (mean MS-SSIM of random pairs)
    beside that of as many real test images: 1 means every sample is the same image."""
    return pd.DataFrame([_summary_row(run, n_samples, seed) for run in runs])


def _effective_beta(run: Run, noise_var: float) -> float:
    """The run's KL weight on the ELBO's scale at pixel noise ``noise_var`` (see losses.py)."""
    spec = run.model.input_spec
    scale = float(np.mean([1 / s**2 for s in IMAGENET_STD])) if spec.imagenet_norm else 1.0
    return effective_beta(run.model.reduction, run.model.beta, spec.size ** 2, noise_var,
                          run.batch_size, scale)


def provenance(runs: Iterable[Run]) -> Provenance:
    """One provenance record for a figure that shows several runs of the same data."""
    runs = list(runs)
    first = runs[0].prov
    epochs = [r.prov.epochs for r in runs]
    common = max(set(epochs), key=epochs.count)          # the footer's epochs; the rest named
    extra = {"presets": ", ".join(r.preset for r in runs)}
    if len(set(epochs)) > 1:
        extra["except"] = ", ".join(f"{r.preset} {r.prov.epochs:g} epochs" for r in runs if r.prov.epochs != common)
    # the arithmetic and the machine: one value when the runs share it, else each run's
    precision, device = (" / ".join(dict.fromkeys(getattr(r.prov, k) for r in runs if getattr(r.prov, k)))
                         for k in ("precision", "device"))
    return Provenance(first.source, first.n_images, first.image_size, common, first.seed, extra,
                      precision=precision, device=device)
