"""The study's experiments in a few calls: train (or reload) a preset, then read off what a
notebook shows. Notebooks hold the narrative; this module holds the steps.

A run lives in ``runs_dir/<preset>-<size>px/``: the training loop's checkpoint, history.csv and
sample grids, plus ``run.json`` (how to rebuild the model and which data it saw) and
``provenance.json``. Training again with the same arguments resumes or, when finished, just reloads.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from cxrnb.evaluation import diagnostics
from cxrnb import runtime
from cxrnb.training import distributed
from cxrnb.data.cache import ImageCache, prepare
from cxrnb.data.index import resolve_root
from cxrnb.errors import CxrnbError
from cxrnb.labels import FINDINGS, NO_FINDING, one_hot
from cxrnb.evaluation.metrics import ms_ssim_diversity
from cxrnb.models.base import IMAGENET_STD, Family
from cxrnb.models.losses import effective_beta
from cxrnb.models import PRESETS, GenerativeModel, build
from cxrnb.paths import RUNS_DIR, in_repo, write_text
from cxrnb.provenance import Provenance
from cxrnb.runtime import describe_device, pick_device, synchronize
from cxrnb.training.loop import History, TrainConfig, load_checkpoint, train

RUN_FILE = "run.json"


@dataclass
class Run:
    """A trained (or training) model with everything needed to show and judge it."""

    preset: str
    model: GenerativeModel
    history: History
    cache: ImageCache
    prov: Provenance
    batch_size: int = 64


def run_dir(runs_dir: str | Path, preset: str, image_size: int) -> Path:
    return in_repo(runs_dir) / f"{preset}-{image_size}px"


def _provenance(cache: ImageCache, model: GenerativeModel, history: History, spec: dict) -> Provenance:
    done = int(history.frame.iteration.max()) if len(history.frame) else 0
    batches = len(cache.loader("train", spec["batch_size"], max_images=spec["max_images"]))
    extra = {"preset": spec["preset"], "iterations": done}
    if model.pretrained is not None:
        extra["encoder weights"] = "ImageNet" if spec["pretrained"] else "random (ImageNet file absent)"
    return cache.provenance(epochs=round(done / batches, 2), seed=spec["seed"], extra=extra,
                            split="train", max_images=spec["max_images"])


def epochs_per_preset(presets: Iterable[str], epochs: float, epochs_for: dict[str, float]) -> dict[str, float]:
    """Each preset's epochs: ``epochs_for``'s value where it names one, else ``epochs``.
    A name in ``epochs_for`` that is not trained is a typo, and silently ignoring it would not do."""
    presets = list(presets)
    unknown = sorted(set(epochs_for) - set(presets))
    if unknown:
        raise CxrnbError(f"epochs_for names {', '.join(unknown)}, which is not among the presets trained "
                         f"here: {', '.join(presets)}")
    return {name: epochs_for.get(name, epochs) for name in presets}


def train_run(preset: str, data_root: str | None = None, image_size: int | None = None,
              epochs: float = 1.0, max_images: int | None = None, batch_size: int = 64, seed: int = 0,
              device: str = "auto", runs_dir: str | Path = RUNS_DIR,
              sample_at: Iterable[int] | None = None, weights: str | None = "auto",
              progress: bool = True, config: dict | None = None, **model_kwargs) -> Run:
    """Train ``preset`` on the training split of ``data_root`` (resuming a stopped run): the one way
    to train a preset, for the notebooks and for `cxrnb train` alike. ``config`` holds further
    TrainConfig settings (e.g. ``{"max_steps": 100}``); ``model_kwargs`` override the preset's."""
    torch.manual_seed(seed)                                   # the model's initial weights
    model = build(preset, image_size=image_size, weights=weights, **model_kwargs)
    size = model.input_spec.size
    out = run_dir(runs_dir, preset, size)
    sample_at = tuple(sample_at if sample_at is not None else PRESETS[preset].sample_at)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, device=device,  # checks them all,
                      sample_at=sample_at, out_dir=str(out), progress=progress, **(config or {}))  # early
    with distributed.main_first():                            # under torchrun: rank 0 builds the cache
        cache = prepare(data_root, size=size, progress=progress and runtime.is_main())
    loader = cache.loader("train", batch_size=batch_size, shuffle=True, seed=seed, max_images=max_images)
    spec = {"preset": preset, "image_size": size, "model_kwargs": model_kwargs,
            "pretrained": bool(model.pretrained), "data_root": str(cache.meta["root"]),
            "max_images": max_images, "batch_size": batch_size, "seed": seed}
    history = train(model, loader, cfg, monitor=_monitor(model, cache) if runtime.is_main() else None)
    prov = _provenance(cache, model, history, spec)
    if runtime.is_main():                                  # one writer under torchrun
        write_text(out / RUN_FILE, json.dumps(spec, indent=2) + "\n")
        prov.save_json(out / "provenance.json")
    return Run(preset, model.eval(), history, cache, prov, batch_size)


def describe(run: Run, device: str = "auto") -> str:
    """What `cxrnb train` prints when a run ends: iterations, speed, device and where things are."""
    h = run.history
    done = int(h.frame.iteration.max()) if len(h.frame) else 0
    return (f"{run.preset}: {done} iterations at {h.images_per_s:.1f} images/s on {describe_device(device)}\n"
            f"  checkpoint   {h.checkpoint}\n  losses       {h.out_dir / 'history.csv'}\n"
            f"  samples      {h.out_dir / 'samples'}")


def _monitor(model: GenerativeModel, cache: ImageCache):
    """Collapse diagnostics on the validation split during training (test if there is no val)."""
    if not model.has_encoder:
        return None
    split = "val" if len(cache.rows("val")) else "test"
    if not len(cache.rows(split)):
        return None
    return diagnostics.monitor(split_images(cache, split), split_labels(cache, split), mean_image(cache))


def load_run(preset: str, runs_dir: str | Path = RUNS_DIR, data_root: str | None = None,
             device: str = "auto", image_size: int | None = None) -> Run:
    """The finished run of ``preset`` in ``runs_dir`` (the one at ``image_size`` if several)."""
    found = sorted(f for f in in_repo(runs_dir).glob(f"{preset}-*px/{RUN_FILE}")   # not LSGAN-cond's for LSGAN
                   if f.parent.name.removeprefix(f"{preset}-").removesuffix("px").isdigit())
    if image_size is not None:
        found = [f for f in found if f.parent == run_dir(runs_dir, preset, image_size)]
    if not found:
        raise CxrnbError(f"no trained run of {preset} in {in_repo(runs_dir)}: train it first "
                         f"(its notebook, or `cxrnb train {preset}`)")
    if len(found) > 1:
        raise CxrnbError(f"{preset} was trained at several sizes ({', '.join(f.parent.name for f in found)}):"
                         " pass image_size")
    spec = json.loads(found[0].read_text())
    if data_root is not None and str(resolve_root(data_root).resolve()) != spec["data_root"]:
        raise CxrnbError(f"{found[0].parent} was trained on {spec['data_root']}, not {data_root}; "
                         "use a separate runs_dir per data set")
    model = build(preset, image_size=spec["image_size"], weights=None, **spec["model_kwargs"])
    load_checkpoint(found[0].parent / "checkpoint.pt", model)
    model = model.to(pick_device(device)).eval()
    cache = prepare(spec["data_root"], size=spec["image_size"])
    history = History.read(found[0].parent)
    return Run(preset, model, history, cache, _provenance(cache, model, history, spec), spec["batch_size"])


def trained_presets(runs_dir: str | Path = RUNS_DIR, family: str | None = None) -> list[str]:
    """The presets with a finished run in ``runs_dir`` (of one model family, if given), sorted."""
    names = {json.loads(f.read_text())["preset"] for f in in_repo(runs_dir).glob(f"*px/{RUN_FILE}")}
    return sorted(n for n in names if n in PRESETS and (family is None or PRESETS[n].family == family))


def best_run(family: str, runs_dir: str | Path = RUNS_DIR, data_root: str | None = None,
             device: str = "auto") -> tuple[Run, pd.DataFrame]:
    """The trained run of ``family`` worth exploring, and the table it was chosen from.

    Every trained preset of the family is diagnosed on the *validation* split (so the choice is not
    made on the test images the reports score): the one with the lowest reconstruction error among
    those that did not collapse wins; when all collapsed, the lowest error overall (the table says so).
    """
    names = trained_presets(runs_dir, family)
    if not names:
        raise CxrnbError(f"no trained {family} run in {in_repo(runs_dir)}: run its notebook first")
    runs = {n: load_run(n, runs_dir, data_root, device=device) for n in names}
    rows = []
    for name, run in runs.items():
        split = "val" if len(run.cache.rows("val")) else "test"
        d = diagnose(run, split)
        rows.append({"preset": name, "split": split, "active_units": d.active_units, "val_mse": round(d.mse, 5),
                     "mean_image_mse": round(d.mean_image_mse, 5), "collapsed": d.collapsed})
    table = pd.DataFrame(rows).sort_values(["collapsed", "val_mse"]).reset_index(drop=True)
    table["chosen"] = table.index == 0
    return runs[table.preset[0]], table


def explorable(preset: str, family: str, runs_dir: str | Path = RUNS_DIR, data_root: str | None = None,
               device: str = "auto") -> tuple[Run, pd.DataFrame | None]:
    """``preset``'s run, or with ``preset="auto"`` the family's ``best_run`` and its table."""
    if preset == "auto":
        return best_run(family, runs_dir, data_root, device)
    return load_run(preset, runs_dir, data_root, device=device), None


# --- what the notebooks show --------------------------------------------------------------------

def curves(run: Run) -> pd.DataFrame:
    """Logged scalars per iteration, one column each: "loss", "kl" … of a single-part model,
    "d/loss", "g/loss" … of the GAN, and "heldout/active_units" … of the training-time diagnostics."""
    frame = run.history.frame
    wide = frame.pivot_table(index="iteration", columns=["part", "name"], values="value")
    single = frame[frame.part != "heldout"].part.nunique() == 1
    wide.columns = [name if single and part != "heldout" else f"{part}/{name}" for part, name in wide.columns]
    return wide


def heldout_curves(run: Run) -> pd.DataFrame:
    """The training-time diagnostics alone ("kl", "active_units", "heldout_mse" …, on the validation split), by iteration."""
    c = curves(run)
    return c[[k for k in c if k.startswith("heldout/")]].dropna(how="all").rename(
        columns=lambda k: k.removeprefix("heldout/"))


def sample_grids(run: Run) -> dict[str, torch.Tensor]:
    """The training loop's sample grids (same fixed latents), keyed "iteration N", as images."""
    return {f"iteration {i}": torch.from_numpy(np.asarray(Image.open(p).convert("L")) / 255.0)[None, None]
            for i, p in sorted(run.history.samples.items())}


def split_images(cache: ImageCache, split: str, max_images: int | None = None,
                 seed: int = 0) -> torch.Tensor:
    """One split's images as a uint8 (N, 1, S, S) tensor."""
    return torch.from_numpy(np.asarray(cache.images[cache.rows(split, max_images, seed)]))[:, None]


def split_labels(cache: ImageCache, split: str, max_images: int | None = None, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(cache.labels[cache.rows(split, max_images, seed)])


def mean_image(cache: ImageCache) -> torch.Tensor:
    """The training split's mean image, (S, S) in [0, 1]: the baseline every reconstruction must beat."""
    return torch.from_numpy(np.asarray(cache.images[cache.rows("train")], dtype=np.float64).mean(0) / 255).float()


def diagnose(run: Run, split: str = "test") -> diagnostics.Diagnostics:
    """KL, active units and reconstruction error on one split, beside the mean-image baseline."""
    if not run.model.has_encoder:
        raise CxrnbError(f"{run.preset} has no encoder: collapse diagnostics need one (VAE, GMVAE)")
    return diagnostics.diagnose(run.model, split_images(run.cache, split), split_labels(run.cache, split),
                                mean_image(run.cache))


def _random_labels(run: Run, n: int, g: torch.Generator) -> torch.Tensor:
    """The labels of ``n`` random training images (real label co-occurrence), for conditional models."""
    rows = torch.randint(0, len(run.cache.rows("train")), (n,), generator=g)
    return split_labels(run.cache, "train")[rows]


@torch.no_grad()
def samples(run: Run, n: int = 64, seed: int = 0, size: int | None = None,
            labels: torch.Tensor | None = None, batch: int = 64) -> torch.Tensor:
    """``n`` fresh samples in [0, 1], (n, 1, size, size). A conditional model is given ``labels``
    (default: those of ``n`` random training images, so label co-occurrence is real)."""
    model, g = run.model, torch.Generator().manual_seed(seed)
    if model.conditional and labels is None:
        labels = _random_labels(run, n, g)
    z = model.sample_latent(n, g)
    out = torch.cat([model.generate(z[i:i + batch],
                                    None if labels is None else labels[i:i + batch].to(model.device)).cpu()
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
    return {name: samples(run, n, seed, labels=one_hot(name).expand(n, -1)) for name in names}


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
    y = _random_labels(run, n, g).to(model.device) if model.conditional else None
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
    u8 = split_images(run.cache, "test", max_images=n, seed=seed)
    y = split_labels(run.cache, "test", max_images=n, seed=seed)
    return u8.float() / 255, diagnostics.reconstruct(run.model, u8, y, seed)


def summary(runs: Iterable[Run], n_samples: int = 64, seed: int = 0) -> pd.DataFrame:
    """A row per run: its settings, parameter count, iterations and final losses (mean of the last
    10% of iterations, which smooths batch noise). Models with an encoder add the collapse
    diagnostics on the test split (``kl`` in nats per image, ``active_units``, ``test_mse`` beside
    ``mean_image_mse``) and the diversity of ``n_samples`` samples (mean MS-SSIM of random pairs)
    beside that of as many real test images: 1 means every sample is the same image."""
    rows = []
    for run in runs:
        c = curves(run)
        c = c[[k for k in c if not k.startswith("heldout/")]].dropna(how="all")
        tail = c.iloc[-max(1, len(c) // 10):].mean()
        row = {"preset": run.preset, "family": run.model.family, "image size": run.model.input_spec.size,
               "parameters": run.model.param_counts()["total"], "iterations": int(c.index.max()),
               "epochs": run.prov.epochs}
        row.update({f"final {k}": round(float(v), 5) for k, v in tail.items()})
        if run.model.has_encoder:
            d = diagnose(run, "test")
            row.update({"loss": run.model.reduction, "beta": run.model.beta, "latent_dim": run.model.latent_dim,
                        "effective_beta": round(_effective_beta(run, d.mean_image_mse), 4),
                        "kl": round(d.kl, 3), "active_units": d.active_units, "test_mse": round(d.mse, 5),
                        "mean_image_mse": round(d.mean_image_mse, 5), "collapsed": d.collapsed})
            real = split_images(run.cache, "test", max_images=n_samples, seed=seed)
            row["sample_ms_ssim"] = round(ms_ssim_diversity(samples(run, n_samples, seed)), 4)
            row["real_ms_ssim"] = round(ms_ssim_diversity(real), 4)
        rows.append(row)
    return pd.DataFrame(rows)


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
    return Provenance(first.source, first.n_images, first.image_size, common, first.seed, extra)
