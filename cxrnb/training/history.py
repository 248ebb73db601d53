"""What a run leaves behind (History), and its record history.csv, appended as training goes.

Columns ``iteration, epoch, part, name, value``, one row per logged scalar: ``part`` is the schedule
part a value belongs to (e.g. d, g, model) or "heldout" for a monitor's scalars. A resumed run cuts
the CSV back to its checkpoint's iteration, so rows logged after it (a crash) are not duplicated.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from cxrnb.errors import CxrnbError
from cxrnb.paths import atomic
from cxrnb.training.checkpoint import CHECKPOINT

HISTORY = "history.csv"
HISTORY_COLUMNS = ("iteration", "epoch", "part", "name", "value")


@dataclass
class History:
    """What a run left behind: the loss table, the sample grids, the checkpoint, the speed."""

    frame: pd.DataFrame             # history.csv: iteration, epoch, part, name, value
    samples: dict[int, Path]        # iteration -> sample grid PNG
    checkpoint: Path
    images_per_s: float             # this call's training images / wall time (incl. logging, grids)
    out_dir: Path
    arithmetic: str = ""            # how this call trained: runtime.describe_precision (e.g. "fp32")

    @classmethod
    def read(cls, out_dir: str | Path, images_per_s: float = float("nan")) -> History:
        """The History of the run in ``out_dir`` (e.g. a finished run, to plot without training)."""
        out = Path(out_dir)
        samples = {int(p.stem.split("_")[1]): p for p in sorted((out / "samples").glob("iter_*.png"))}
        return cls(read_history(out / HISTORY), samples, out / CHECKPOINT, images_per_s, out)


class HistoryLog:
    """Loss values per iteration, kept on the device until flushed to the CSV in one transfer
    (reading each value as it comes would synchronise the device every step)."""

    def __init__(self, path: Path, batches_per_epoch: int, write: bool = True):
        self.path, self.n, self.write = path, batches_per_epoch, write   # write: rank 0 only
        self.pending: list[tuple[int, dict[str, dict[str, Tensor]]]] = []
        self.last: dict[str, float] = {}

    def add(self, iteration: int, logs: dict[str, dict[str, Tensor]]) -> None:
        self.pending.append((iteration, logs))

    def flush(self) -> None:
        """Append pending rows to the CSV; CxrnbError at the first non-finite value."""
        rows = [(it, part, name, v) for it, logs in self.pending
                for part, entries in logs.items() for name, v in entries.items()]
        self.pending = []
        if not rows:
            return
        values = torch.stack([v for *_, v in rows]).cpu().tolist()
        bad = None
        with open(self.path, "a") if self.write else contextlib.nullcontext() as f:
            for (it, part, name, _), v in zip(rows, values):
                if f is not None:
                    f.write(f"{it},{it / self.n!r},{part},{name},{v!r}\n")
                if name == "loss":
                    self.last[part] = v
                if bad is None and not math.isfinite(v):
                    bad = (it, part, name, v)
        if bad:
            it, part, name, v = bad
            raise CxrnbError(f"{name} of part {part!r} is {v} at iteration {it}; training stopped, the "
                             f"last good checkpoint is kept; lower the learning rate or check the data")


def read_history(path: Path) -> pd.DataFrame:
    """The rows of ``path``; none (with the columns) when there is no such file yet."""
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=HISTORY_COLUMNS)


def start_history(path: Path, upto: int | None) -> None:
    """A fresh CSV (new run), or the old one cut to the checkpoint's iteration (resumed run)."""
    rows = read_history(path)
    rows = rows[rows.iteration <= upto] if upto is not None else rows.iloc[:0]
    with atomic(path) as tmp:
        rows.to_csv(tmp, index=False, columns=list(HISTORY_COLUMNS))
