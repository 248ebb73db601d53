"""Replicates: a finished run trained again, identically but for its seed or its arithmetic.

A score from one training run says how good that run is, not how good the recipe is: another seed
(or bf16 instead of fp32) trains another model. A verdict about a recipe therefore needs the spread
over training seeds, and a reader needs to know whether it depends on the arithmetic. A replicate
is rebuilt from the run's own ``run.json`` (preset, size, model settings, data, batch size, epochs,
training settings), so it cannot drift from the run it replicates, and it lives inside that run's
folder, ``<run>/replicates/s<seed>-<precision>/``: resumable like any run, invisible to
``trained_presets`` and ``load_run``, and removed with its run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from cxrnb.errors import CxrnbError
from cxrnb.runtime import Precision, check_precision
from cxrnb.study.runs import RUN_FILE, Run, train_run

REPLICATES = "replicates"


def run_spec(run: Run) -> dict:
    """The settings ``train_run`` recorded for ``run`` (its ``run.json``)."""
    return json.loads((Path(run.history.out_dir) / RUN_FILE).read_text())


def replicate_name(run: Run, seed: int, precision: str = Precision.AUTO) -> str:
    """'LSGAN · seed 1', 'LSGAN · seed 0 · bf16': how a replicate is named in score tables."""
    p = check_precision(precision)
    return f"{run.preset} · seed {seed}" + ("" if p == Precision.AUTO else f" · {p}")


def replicate(run: Run, seed: int, precision: str = Precision.AUTO, device: str = "auto",
              progress: bool = True) -> Run:
    """``run`` trained again with ``seed`` and ``precision`` (resumed or reloaded when it exists).
    No sample grids are drawn during training: a replicate is for scoring."""
    spec = run_spec(run)
    if "epochs" not in spec:
        raise CxrnbError(f"{run.history.out_dir} was trained before runs recorded their epochs; train it "
                         "again to replicate it")
    p = check_precision(precision)
    config = dict(spec.get("config", {}), precision=p.value)
    out = Path(run.history.out_dir) / REPLICATES / f"s{seed}-{p}"
    return train_run(run.preset, spec["data_root"], image_size=spec["image_size"], epochs=spec["epochs"],
                     max_images=spec["max_images"], batch_size=spec["batch_size"], seed=seed, device=device,
                     sample_at=(), weights=spec.get("weights", "auto"), progress=progress, config=config,
                     out=out, **spec["model_kwargs"])


def named_runs(runs: dict[str, Run], names: Iterable[str], what: str) -> dict[str, Run]:
    """The runs called ``names``, in that order; a name not among ``runs`` (a typo in a notebook
    parameter) is a one-line error saying ``what`` asked for it."""
    names = list(names)
    missing = [n for n in names if n not in runs]
    if missing:
        raise CxrnbError(f"{what} asked for {', '.join(missing)}, which is not among the loaded models: "
                         f"{', '.join(runs)}")
    return {n: runs[n] for n in names}


def seed_replicates(runs: dict[str, Run], seeds: Iterable[int], device: str = "auto",
                    progress: bool = True, names: Iterable[str] | None = None) -> dict[str, tuple[str, Run]]:
    """{replicate name: (model, replicate)} for every run (or those in ``names``) and every seed in
    ``seeds`` other than the run's own: with the run itself, each model then has one run per seed."""
    out = {}
    chosen = runs if names is None else named_runs(runs, names, "Seed replicates")
    for name, run in chosen.items():
        own = run_spec(run)["seed"]
        for s in seeds:
            if s != own:
                out[replicate_name(run, s)] = (name, replicate(run, s, device=device, progress=progress))
    return out


def other_precision(run: Run) -> Precision:
    """The arithmetic ``run`` was not trained in: bf16 for an fp32 run, fp32 for a bf16 one."""
    return Precision.FP32 if run_spec(run).get("precision", "fp32").startswith("bf16") else Precision.BF16


def arithmetic_twins(runs: dict[str, Run], names: Iterable[str], device: str = "auto",
                     progress: bool = True) -> dict[str, tuple[str, Run]]:
    """{twin name: (model, twin)}: each run in ``names`` trained again with its own seed in the other
    arithmetic (``other_precision``), to tell a verdict that rests on the model from one that rests
    on the machine's arithmetic."""
    out = {}
    for name, run in named_runs(runs, names, "Arithmetic twins").items():
        seed, p = run_spec(run)["seed"], other_precision(run)
        out[replicate_name(run, seed, p)] = (name, replicate(run, seed, p, device=device, progress=progress))
    return out
