"""A run's life: train (or resume, or reload) a preset, find it again, and choose the run of a
family worth exploring. What a notebook then shows of a run is in ``views.py``.

A run lives in ``runs_dir/<preset>-<size>px/``: the training loop's checkpoint, history.csv and
sample grids, plus ``run.json`` (how to rebuild the model and which data it saw) and
``provenance.json``. Training again with the same arguments resumes or, when finished, just reloads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from cxrnb import runtime
from cxrnb.data.cache import ImageCache, Split, prepare
from cxrnb.data.index import resolve_root
from cxrnb.errors import CxrnbError
from cxrnb.evaluation import diagnostics
from cxrnb.models import PRESETS, GenerativeModel, build
from cxrnb.models.base import Family
from cxrnb.paths import RUNS_DIR, in_repo, write_text
from cxrnb.provenance import Provenance
from cxrnb.runtime import describe_device, device_name, pick_device
from cxrnb.training import distributed
from cxrnb.training.checkpoint import load_checkpoint
from cxrnb.training.history import History
from cxrnb.training.loop import TrainConfig, train

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
    prov = cache.provenance(epochs=round(done / batches, 2), seed=spec["seed"], extra=extra,
                            split="train", max_images=spec["max_images"])
    return replace(prov, precision=spec.get("precision", ""), device=spec.get("device", ""))


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
              progress: bool = True, config: dict | None = None, out: str | Path | None = None,
              **model_kwargs) -> Run:
    """Train ``preset`` on the training split of ``data_root`` (resuming a stopped run): the one way
    to train a preset, for the notebooks and for `cxrnb train` alike. ``config`` holds further
    TrainConfig settings (e.g. ``{"max_steps": 100}``, ``{"precision": "bf16"}``); ``model_kwargs``
    override the preset's. ``out``: the run's folder (default ``run_dir``; replicates live elsewhere,
    ``cxrnb.study.replicates``)."""
    torch.manual_seed(seed)                                   # the model's initial weights
    model = build(preset, image_size=image_size, weights=weights, **model_kwargs)
    size = model.input_spec.size
    out = Path(out) if out is not None else run_dir(runs_dir, preset, size)
    sample_at = tuple(sample_at if sample_at is not None else PRESETS[preset].sample_at)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, device=device,  # checks them all,
                      sample_at=sample_at, out_dir=str(out), progress=progress, **(config or {}))  # early
    with distributed.main_first():                            # under torchrun: rank 0 builds the cache
        cache = prepare(data_root, size=size, progress=progress and runtime.is_main())
    loader = cache.loader("train", batch_size=batch_size, shuffle=True, seed=seed, max_images=max_images)
    spec = {"preset": preset, "image_size": size, "model_kwargs": model_kwargs,
            "pretrained": bool(model.pretrained), "data_root": str(cache.meta["root"]),
            "max_images": max_images, "batch_size": batch_size, "seed": seed, "epochs": epochs,
            "weights": weights, "config": dict(config or {})}
    history = train(model, loader, cfg, monitor=_monitor(model, cache) if runtime.is_main() else None)
    spec.update(precision=history.arithmetic, device=device_name(device))
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


def heldout_split(cache: ImageCache) -> Split:
    """The split a run is watched and chosen on: validation, or test when a tiny set has no
    validation patients (the choice is then made on the images the reports score, and said so)."""
    return Split.VAL if len(cache.rows(Split.VAL)) else Split.TEST


def _monitor(model: GenerativeModel, cache: ImageCache):
    """Collapse diagnostics on the held-out split during training (``heldout_split``)."""
    if not model.has_encoder:
        return None
    split = heldout_split(cache)
    if not len(cache.rows(split)):
        return None
    return diagnostics.monitor(cache.split_images(split), cache.split_labels(split), cache.mean_image())


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


def trained_presets(runs_dir: str | Path = RUNS_DIR, family: Family | str | None = None) -> list[str]:
    """The presets with a finished run in ``runs_dir`` (of one model family, if given), sorted."""
    names = {json.loads(f.read_text())["preset"] for f in in_repo(runs_dir).glob(f"*px/{RUN_FILE}")}
    return sorted(n for n in names if n in PRESETS and (family is None or PRESETS[n].family == family))


def best_run(family: Family | str, runs_dir: str | Path = RUNS_DIR, data_root: str | None = None,
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
        split = heldout_split(run.cache)
        d = diagnose(run, split)
        rows.append({"preset": name, "split": split.value, "active_units": d.active_units, "val_mse": round(d.mse, 5),
                     "mean_image_mse": round(d.mean_image_mse, 5), "collapsed": d.collapsed})
    table = pd.DataFrame(rows).sort_values(["collapsed", "val_mse"]).reset_index(drop=True)
    table["chosen"] = table.index == 0
    return runs[table.preset[0]], table


def explorable(preset: str, family: Family | str, runs_dir: str | Path = RUNS_DIR, data_root: str | None = None,
               device: str = "auto") -> tuple[Run, pd.DataFrame | None]:
    """``preset``'s run, or with ``preset="auto"`` the family's ``best_run`` and its table."""
    if preset == "auto":
        return best_run(family, runs_dir, data_root, device)
    return load_run(preset, runs_dir, data_root, device=device), None


def diagnose(run: Run, split: Split | str = Split.TEST) -> diagnostics.Diagnostics:
    """KL, active units and reconstruction error on one split, beside the mean-image baseline:
    what a notebook shows of a VAE, and what ``best_run`` chooses by."""
    if not run.model.has_encoder:
        raise CxrnbError(f"{run.preset} has no encoder: collapse diagnostics need one (VAE, GMVAE)")
    cache = run.cache
    return diagnostics.diagnose(run.model, cache.split_images(split), cache.split_labels(split),
                                cache.mean_image())
