"""Quality against training compute: a run's weight snapshots (``TrainConfig.snapshot_at``) scored
one by one, after training, with whatever score the caller brings (FD on the fixed ruler, in
notebook 07's terms), at the wall-clock seconds and epochs each snapshot took to reach.

The points come from one run, so a curve's x-axis is the compute that run actually spent on this
machine (grids and monitoring included, as a user would wait for them); the final point is the run's
last checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from cxrnb.errors import CxrnbError
from cxrnb.models.base import GenerativeModel
from cxrnb.study.runs import Run
from cxrnb.training.checkpoint import CHECKPOINT, SNAPSHOTS, load_snapshot


@dataclass(frozen=True)
class Point:
    """One place along a run's training: where its weights are and what they cost."""

    iteration: int
    epoch: float
    seconds: float
    path: Path


def points(run: Run) -> list[Point]:
    """The run's snapshots in training order, then its final checkpoint (when it is later)."""
    out = run.history.out_dir
    found = []
    for path in sorted((out / SNAPSHOTS).glob("iter_*.pt")):
        meta = torch.load(path, map_location="cpu", weights_only=True)
        found.append(Point(meta["iteration"], meta["epoch"], meta["seconds"], path))
    last = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
    if not found or last["step"] > found[-1].iteration:
        found.append(Point(last["step"], last["step"] / last["batches_per_epoch"], last.get("seconds", float("nan")),
                           out / CHECKPOINT))
    return found


def _weights_at(model: GenerativeModel, point: Point) -> GenerativeModel:
    """A copy of ``model`` holding the weights of ``point`` (the run's own model is left as it is)."""
    other = copy.deepcopy(model)
    if point.path.name == CHECKPOINT:
        other.load_state_dict(torch.load(point.path, map_location="cpu", weights_only=True)["model"])
    else:
        load_snapshot(point.path, other)
    return other.to(model.device).eval()


def quality_curve(run: Run, score: Callable[[GenerativeModel], dict[str, float]]) -> pd.DataFrame:
    """``score`` of the run's model at each of its ``points``: one row per point, with iteration,
    epoch, seconds, images seen (iteration x batch size) and the score's columns."""
    found = points(run)
    if len(found) < 2:
        raise CxrnbError(f"{run.preset} has no weight snapshots to draw a curve from: train it with "
                         f"config={{'snapshot_at': (...)}} (TrainConfig.snapshot_at)")
    rows = [{"model": run.preset, "iteration": p.iteration, "epoch": round(p.epoch, 4), "seconds": p.seconds,
             "images": p.iteration * run.batch_size, **score(_weights_at(run.model, p))} for p in found]
    return pd.DataFrame(rows)
