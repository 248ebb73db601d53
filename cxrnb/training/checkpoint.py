"""Checkpoints: the whole training state in one file, so a run resumes bit-exactly mid-epoch.

``checkpoint.pt`` holds the model and its optimisers, the iteration, the RNG states (every rank's,
under torchrun), the fixed latents (and labels) the sample grids decode, the run's config and the
model's identity (class, preset, input spec), which a checkpoint must match to be loaded. It is
written atomically (a crash or a full disk never leaves half a file) and only after the parameters
were checked finite, so the last good checkpoint survives a diverging run. It loads with
``torch.load(weights_only=True)``: nothing in it is pickled code.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cxrnb import runtime
from cxrnb.errors import CxrnbError
from cxrnb.models.base import GenerativeModel
from cxrnb.paths import atomic
from cxrnb.training import distributed

CHECKPOINT = "checkpoint.pt"

FixedInputs = tuple[Tensor, Tensor | None]      # the latents (and labels) every sample grid decodes
_MODEL_ID_KEYS = ("model_class", "preset", "input_spec")          # what _model_id returns
_STATE_KEYS = ("model", "step")       # and the training state, which every checkpoint has had


def _model_id(model: GenerativeModel) -> dict:
    """What a checkpoint must match to be loaded into ``model``."""
    return {"model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "preset": model.preset,
            "input_spec": asdict(model.input_spec)}


def _rng_state() -> dict:
    # NumPy's state as a tensor, so checkpoints load with torch.load(weights_only=True).
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rng(ckpt: dict) -> None:
    """Python's, NumPy's and torch's random state as this rank left them when ``ckpt`` was written."""
    _set_rng_state(ckpt["rng_ranks"][runtime.rank()] if runtime.world_size() > 1 else ckpt["rng"])


def save_checkpoint(path: Path, model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer],
                    step: int, batches_per_epoch: int, fixed: FixedInputs, config: dict,
                    seconds: float = 0.0) -> None:
    """Write the whole training state to ``path`` atomically (a crash never leaves half a file).

    ``optimizers`` is keyed by the model's schedule parts, ``config`` is the run's settings as a dict
    (``asdict`` of its TrainConfig), ``seconds`` the training wall time so far (resumes count on from it).
    Every rank calls it (their RNG states are gathered); rank 0 writes.
    """
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise CxrnbError(f"parameter {bad[0]} is not finite after iteration {step}; training stopped, the "
                         f"last good checkpoint {path} is kept; lower the learning rate or check the data")
    rng = distributed.gather(_rng_state())          # every rank's noise stream, so resume is exact
    if not runtime.is_main():
        return
    state = {**_model_id(model), "step": step, "batches_per_epoch": batches_per_epoch,
             "model": model.state_dict(),
             "optimizers": {str(p): o.state_dict() for p, o in optimizers.items()},
             "rng": rng[0], "z_fixed": fixed[0], "y_fixed": fixed[1], "config": config,
             "world_size": len(rng), "seconds": seconds, **({"rng_ranks": rng} if len(rng) > 1 else {})}
    with atomic(path) as tmp:                       # a failed write (full disk) leaves no half file
        torch.save(state, tmp)


SNAPSHOTS = "snapshots"     # snapshots/iter_000400.pt: the weights at TrainConfig.snapshot_at


def snapshot_path(out: Path, iteration: int) -> Path:
    return Path(out) / SNAPSHOTS / f"iter_{iteration:06d}.pt"


def save_snapshot(out: Path, model: GenerativeModel, iteration: int, epoch: float, seconds: float) -> Path:
    """The model's weights at ``iteration`` (no optimiser, no RNG: nothing to resume from), with the
    training it took to get there (``epoch``, wall-clock ``seconds``), so quality can be scored
    against compute after training. Written atomically."""
    path = snapshot_path(out, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**_model_id(model), "model": model.state_dict(), "iteration": iteration, "epoch": epoch,
             "seconds": seconds}
    with atomic(path) as tmp:
        torch.save(state, tmp)
    return path


def load_snapshot(path: str | Path, model: GenerativeModel) -> dict:
    """Load a snapshot's weights into ``model`` (refused, as by ``load_checkpoint``, when it is of
    another model); returns {iteration, epoch, seconds}."""
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key, want in _model_id(model).items():
        if state[key] != want:
            raise CxrnbError(f"{path} holds {key} {state[key]!r}, but the model has {want!r}")
    model.load_state_dict(state["model"])
    return {k: state[k] for k in ("iteration", "epoch", "seconds")}


def _unreadable(path: Path, what: str) -> CxrnbError:
    """The one line a bad checkpoint file gets: which file, what is wrong, what to do."""
    return CxrnbError(f"checkpoint {path} {what}: move it aside (or delete it) and train again; "
                      "`cxrnb train ... --restart` starts over from iteration 0 and replaces it")


def _read(path: Path) -> dict:
    """The checkpoint in ``path``, or a CxrnbError naming it: an empty file, one cut short (a copy
    that did not finish; ours are written atomically) or garbled, or another program's file."""
    size = path.stat().st_size
    if size == 0:
        raise _unreadable(path, "is empty (0 bytes)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:                          # torch says RuntimeError, EOFError, KeyError, ...
        raise _unreadable(path, f"cannot be read: cut short or corrupted ({size:,} bytes; torch.load "
                                f"raised {type(e).__name__})") from None
    missing = [k for k in (*_MODEL_ID_KEYS, *_STATE_KEYS) if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise _unreadable(path, f"is not a checkpoint written by cxrnb (no {missing[0]!r} in it)")
    return ckpt


def load_checkpoint(path: str | Path, model: GenerativeModel,
                    optimizers: dict[str, torch.optim.Optimizer] | None = None) -> dict:
    """Load a checkpoint written by ``train`` into ``model`` (and ``optimizers``); returns it whole.

    A checkpoint of another model class, preset or input size is refused with a CxrnbError, and so
    is a file that is not a whole checkpoint (``_read``).
    """
    path = Path(path)
    if not path.is_file():
        raise CxrnbError(f"no checkpoint at {path}; train first (cxrnb train PRESET) or fix the path")
    ckpt = _read(path)
    for key, want in _model_id(model).items():
        if ckpt[key] != want:
            raise CxrnbError(f"{path} holds {key} {ckpt[key]!r}, but the model has {want!r}; "
                             f"build the model the checkpoint was trained with, or use another out_dir")
    model.load_state_dict(ckpt["model"])
    for part, opt in (optimizers or {}).items():
        opt.load_state_dict(ckpt["optimizers"][part])
        # A saved group brings the kernel choice of the run that wrote it (an older unfused run's,
        # or another device's); the optimisers the model just built for this device keep theirs.
        for group in opt.param_groups:
            group.update(fused=opt.defaults.get("fused"), foreach=opt.defaults.get("foreach"))
    return ckpt
