"""The one training loop every model shares.

The loop knows nothing about VAEs or GANs. For each batch it walks the model's ``schedule``
(``(("model", 1),)`` for the VAEs, ``(("d", 1), ("g", 3))`` for the LSGAN) and, for each part, takes
that many optimiser steps on ``model.loss(x, y, part)["loss"]``. Around that it does what makes a run
trustworthy: it seeds everything, logs every loss entry to ``history.csv``, saves sample grids of a
FIXED latent batch (so grids are comparable across iterations and runs), writes checkpoints
atomically, resumes bit-exactly mid-epoch (cxrnb.training.checkpoint), and stops at the first
non-finite loss while keeping the last good checkpoint. Under torchrun it trains data-parallel
(cxrnb.training.distributed): each process takes its slice of every global batch, DDP averages the
gradients, rank 0 alone writes files.

A run directory holds::

    checkpoint.pt        model, optimisers, step, RNG states, fixed latents, config, model identity
    history.csv          iteration, epoch, part, name, value  (one row per logged scalar; an optional
                         monitor, e.g. collapse diagnostics on held-out images, logs as part "heldout")
    samples/iter_000400.png  grids of model.generate(z_fixed) at cfg.sample_at and at the end
    snapshots/iter_000400.pt  the weights at cfg.snapshot_at, with the epochs and seconds they took
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.utils import save_image
from tqdm.auto import tqdm

from cxrnb import runtime
from cxrnb.data.cache import ArrayLoader
from cxrnb.errors import CxrnbError
from cxrnb.models.base import GenerativeModel
from cxrnb.paths import atomic
from cxrnb.runtime import (
    Precision,
    channels_last_default,
    check_precision,
    describe_precision,
    pick_device,
    resolve_precision,
    synchronize,
)
from cxrnb.training import distributed
from cxrnb.training.checkpoint import (
    CHECKPOINT,
    SNAPSHOTS,
    FixedInputs,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    save_snapshot,
)
from cxrnb.training.history import HISTORY, History, HistoryLog, start_history


@dataclass
class TrainConfig:
    """How long, where and how to train. Batch size is the paper's (§5); the rest is engineering."""

    epochs: float = 1.0
    max_steps: int | None = None        # iterations (batches); overrides epochs when set
    batch_size: int = 64                # paper §5; the loader is built with it (study.train_run)
    seed: int = 0
    device: str = "auto"                # auto: CUDA, then Apple MPS, then CPU
    precision: str = "auto"             # runtime.Precision: auto = bf16 autocast on CUDA, fp32 on CPUs
    channels_last: bool | None = None   # None: with bf16 (cuDNN and oneDNN's bf16 kernels prefer NHWC)
    sample_at: tuple[int, ...] = (0,)   # iterations with a sample grid; the final one is always saved
    snapshot_at: tuple[int, ...] = ()   # iterations whose weights are kept (snapshots/), to score against compute
    snapshots: int = 0                  # and this many more, evenly spaced from iteration 0 (snapshot_iterations)
    n_samples: int = 64
    checkpoint_every: int | None = 500  # iterations; a checkpoint is always written at the end
    checkpoint_minutes: float | None = 5.0   # also after this much wall time since the last one
    # (and on Ctrl-C / SIGTERM / SIGHUP: the loop finishes the iteration, checkpoints, then stops)
    log_every: int = 10                 # iterations between flushes of losses to CSV and progress bar
    monitor_every: int = 20             # iterations between calls of train()'s monitor, if it has one
    out_dir: str = "runs/run"
    resume: bool = True                 # continue from out_dir/checkpoint.pt when there is one
    progress: bool = True
    compile: bool = False               # torch.compile the model's loss

    def __post_init__(self):
        check_precision(self.precision)               # kept a plain str: checkpoints store the config
        if self.max_steps is None and not self.epochs > 0:
            raise CxrnbError(f"epochs must be > 0 (got {self.epochs}); or set max_steps")
        if self.max_steps is not None and self.max_steps < 1:
            raise CxrnbError(f"max_steps must be >= 1 (got {self.max_steps})")
        if self.snapshots < 0:
            raise CxrnbError(f"snapshots must be >= 0 (got {self.snapshots})")
        for name in ("batch_size", "n_samples", "log_every", "monitor_every"):
            if getattr(self, name) < 1:
                raise CxrnbError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise CxrnbError(f"checkpoint_every must be >= 1 or None (got {self.checkpoint_every})")
        if self.checkpoint_minutes is not None and not 0 < self.checkpoint_minutes < math.inf:
            raise CxrnbError(f"checkpoint_minutes must be > 0 and finite, or None (got {self.checkpoint_minutes})")
        if self.max_steps is None and not math.isfinite(self.epochs):
            raise CxrnbError(f"epochs must be finite (got {self.epochs})")
        self.out_dir = str(self.out_dir)
        self.sample_at = tuple(int(i) for i in self.sample_at)
        self.snapshot_at = tuple(int(i) for i in self.snapshot_at)


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (all devices) from one seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- one iteration ------------------------------------------------------------------------------------

class Stepper:
    """One training iteration: the model's schedule of optimiser steps on one batch, on one device.

    Where the device allows it, this is the fast path: bf16 autocast and channels_last on CUDA (on a
    CPU only when asked for: ``runtime.Precision`` says why), fused
    Adam (CUDA and CPU), pinned non-blocking host-to-device copies, gradients freed (set_to_none)
    rather than zeroed. Loss values stay on the device (no per-step synchronisation); the caller
    reads them. What each choice buys is measured in reports/bench.md (python -m cxrnb.bench train).
    """

    def __init__(self, model: GenerativeModel, device: torch.device, *, precision: str = "auto",
                 channels_last: bool | None = None, compile: bool = False):
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.amp = self.precision == Precision.BF16
        self.channels_last = channels_last_default(self.precision) if channels_last is None else channels_last
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(device, memory_format=fmt)
        fused = device.type in ("cuda", "cpu")         # fused Adam's kernels: CUDA and the CPU
        self.optimizers = {part: model.optimizer(part, fused) for part, _ in model.schedule}
        loss_fn = distributed.data_parallel(model, device) if runtime.world_size() > 1 else model.loss
        self.loss_fn: Callable[..., dict[str, Tensor]] = torch.compile(loss_fn) if compile else loss_fn

    def __call__(self, u8: Tensor, y: Tensor) -> dict[str, dict[str, Tensor]]:
        """Train on one batch; returns {part: {name: value averaged over that part's repeats}}."""
        if self.device.type == "cuda" and not u8.is_pinned():
            u8, y = u8.pin_memory(), y.pin_memory()
        x = self.model.input_spec.to_model(u8.to(self.device, non_blocking=True))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(self.device, non_blocking=True)
        logs = {}
        for part, repeats in self.model.schedule:
            opt, total = self.optimizers[part], {}
            for _ in range(repeats):
                opt.zero_grad(set_to_none=True)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    out = self.loss_fn(x, y, part)
                out["loss"].backward()
                opt.step()
                self.model.after_step(part)
                for k, v in out.items():
                    total[k] = total.get(k, 0) + v.detach().float()
            logs[part] = {k: v / repeats for k, v in total.items()}
        return distributed.average_logs(logs)          # the global batch's values (no-op on one process)


# --- around the iterations: fixed inputs, sample grids, stop requests --------------------------------

def fixed_inputs(model: GenerativeModel, loader: ArrayLoader, n: int, seed: int) -> FixedInputs:
    """The latent batch (and, for conditional models, the label batch) every sample grid decodes.

    Latents come from their own seeded generator, so they do not depend on how far training got;
    labels are the first ``n`` of epoch 0, so they carry real label co-occurrence.
    """
    z = model.sample_latent(n, torch.Generator(model.device).manual_seed(seed))
    if not model.conditional:
        return z, None
    ys, have = [], 0
    for _, y in loader.epoch_batches(0):
        ys.append(y)
        have += len(y)
        if have >= n:
            break
    ys = torch.cat(ys)
    ys = ys.repeat(math.ceil(n / len(ys)), 1)[:n]       # fewer images than samples: cycle them
    return z, ys.float().to(model.device)


def _on(device: torch.device, fixed: FixedInputs) -> FixedInputs:
    """The fixed inputs on ``device``."""
    return fixed[0].to(device), None if fixed[1] is None else fixed[1].to(device)


def _save_grid(model: GenerativeModel, fixed: FixedInputs, out: Path, iteration: int) -> Path:
    path = out / "samples" / f"iter_{iteration:06d}.png"
    with model.evaluating():                        # BatchNorm running stats: no side effects
        images = model.generate(*fixed)
    with atomic(path) as tmp:
        save_image(images, tmp, nrow=int(math.sqrt(len(images))) or 1)
    return path


def _heldout(scores: dict[str, float]) -> dict[str, dict[str, Tensor]]:
    """A monitor's scalars as a log entry of part "heldout"."""
    return {"heldout": {k: torch.tensor(float(v)) for k, v in scores.items()}}


class _StopRequest:
    """Ctrl-C, SIGTERM (a batch scheduler's time limit) or SIGHUP while training: remember it, so the
    loop can finish the iteration it is in, write a checkpoint and stop; a second signal stops at
    once. Handlers are installed only in the main thread and restored afterwards. (Under `cxrnb
    reproduce` the runner's signal reaches the kernel as SIGINT.)"""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt("second interrupt: stopped without a checkpoint")
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def message(self, it: int, total: int, checkpoint: Path) -> str:
        """What the stopped run says: where it stopped, and how to go on."""
        return (f"{signal.Signals(self.signum or signal.SIGTERM).name} at iteration {it} of {total}: "
                f"checkpoint written to {checkpoint}; run the same command again to resume")


# --- the loop ---------------------------------------------------------------------------------------------

def _iterations(cfg: TrainConfig, n_batches: int) -> int:
    """How many iterations the run trains to: ``max_steps``, else ``epochs`` of the loader."""
    if n_batches == 0:
        raise CxrnbError("the loader yields no batch (fewer images than one batch); "
                         "lower batch_size or use more images")
    return cfg.max_steps or math.ceil(cfg.epochs * n_batches)


def snapshot_iterations(cfg: TrainConfig, total: int) -> set[int]:
    """``cfg.snapshot_at`` and ``cfg.snapshots`` iterations spaced evenly over ``[0, total)``: with the
    final checkpoint, ``snapshots + 1`` points along a run for a quality-against-compute curve."""
    n = cfg.snapshots
    return set(cfg.snapshot_at) | {round(k * total / n) for k in range(n)} if n else set(cfg.snapshot_at)


def _check_resumable(ckpt: dict, path: Path, cfg: TrainConfig, n_batches: int, total: int) -> None:
    """A run resumes only as it was started: same processes, seed and data, not past its end."""
    world = runtime.world_size()
    if ckpt.get("world_size", 1) != world:
        raise CxrnbError(f"{path} was trained on {ckpt.get('world_size', 1)} process(es), this run has "
                         f"{world}; resume with the same torchrun --nproc_per_node, or resume=False")
    if ckpt["batches_per_epoch"] != n_batches or ckpt["config"]["seed"] != cfg.seed:
        raise CxrnbError(f"{path} was trained with seed {ckpt['config']['seed']} and "
                         f"{ckpt['batches_per_epoch']} batches per epoch, this run has seed "
                         f"{cfg.seed} and {n_batches}; use the same seed, data and batch size, "
                         f"or resume=False")
    if ckpt["step"] > total:
        raise CxrnbError(f"{path} is already at iteration {ckpt['step']}, past the {total} asked for; "
                         f"ask for more epochs or use another out_dir")


def _setup(model: GenerativeModel, loader: ArrayLoader,
           cfg: TrainConfig) -> tuple[ArrayLoader, Stepper, FixedInputs]:
    """This process's share of the data, its stepper and the fixed inputs, seeded in the order
    resuming relies on: fixed inputs from ``cfg.seed``, then each rank's own noise stream."""
    seed_everything(cfg.seed)
    fixed = fixed_inputs(model, loader, cfg.n_samples, cfg.seed)
    world = runtime.world_size()
    if world > 1:                                   # this rank's slice of every batch, its own noise
        loader = loader.shard(runtime.rank(), world)
        seed_everything(distributed.rank_seed(cfg.seed))
    stepper = Stepper(model, pick_device(cfg.device), precision=cfg.precision,
                      channels_last=cfg.channels_last, compile=cfg.compile)
    return loader, stepper, fixed


def _resume(out: Path, cfg: TrainConfig, stepper: Stepper, n_batches: int, total: int,
            fixed: FixedInputs) -> tuple[int, FixedInputs, float]:
    """The iteration this run starts after, its fixed inputs on the stepper's device, and the
    training seconds already spent (0 for a fresh run; NaN from a checkpoint of an older version).

    Resumed (a checkpoint in ``out`` and ``cfg.resume``): the checkpoint's iteration, with its model,
    optimisers, fixed inputs and RNG states restored and history.csv cut there. Fresh: 0, with an
    older run's grids removed and history.csv started empty.
    """
    path, main = out / CHECKPOINT, runtime.is_main()
    if cfg.resume and path.exists():
        ckpt = load_checkpoint(path, stepper.model, stepper.optimizers)
        _check_resumable(ckpt, path, cfg, n_batches, total)
        restore_rng(ckpt)
        if main:
            start_history(out / HISTORY, upto=ckpt["step"])
            for later in (out / SNAPSHOTS).glob("iter_*.pt"):     # written after the checkpoint, then lost
                if int(later.stem.removeprefix("iter_")) > ckpt["step"]:
                    later.unlink()
        # a checkpoint from before seconds were kept: unknown, not a plausible wrong number
        return ckpt["step"], _on(stepper.device, (ckpt["z_fixed"], ckpt["y_fixed"])), ckpt.get("seconds", math.nan)
    if main:                   # a fresh run: no grids or snapshots of an older one
        for old in [*(out / "samples").glob("iter_*.png"), *(out / SNAPSHOTS).glob("iter_*.pt")]:
            old.unlink()
        start_history(out / HISTORY, upto=None)
    return 0, _on(stepper.device, fixed), 0.0


def _checkpoint_now(it: int, total: int, cfg: TrainConfig, stop: _StopRequest,
                    last_save: float) -> tuple[bool, bool]:
    """(stop, checkpoint) after iteration ``it``: stop on a signal; checkpoint then, at the end, every
    ``checkpoint_every`` iterations and ``checkpoint_minutes`` after the last one."""
    stopping = stop.signum is not None
    timed = cfg.checkpoint_minutes and time.perf_counter() - last_save >= 60 * cfg.checkpoint_minutes
    if runtime.world_size() > 1:                    # clocks and signals differ by rank: decide together
        stopping, timed = (distributed.any_rank(stopping, timed)
                           if it % cfg.log_every == 0 or it == total else (False, False))
    due = it == total or stopping or timed or (cfg.checkpoint_every and it % cfg.checkpoint_every == 0)
    return stopping, bool(due)


def train(model: GenerativeModel, loader: ArrayLoader, cfg: TrainConfig | None = None,
          monitor: Callable[[GenerativeModel], dict[str, float]] | None = None) -> History:
    """Train ``model`` on ``loader`` (see the module docstring); returns the run's History.

    ``loader`` is an ArrayLoader (cxrnb.data.cache): resumable ``epoch_batches`` and, on several
    processes, ``shard``. ``monitor(model)``, if given, runs at iteration 0 of a fresh run, every
    ``cfg.monitor_every`` iterations and at the end, its scalars logged as part "heldout"; it must
    leave the model and the global random state as it found them (evaluation.diagnostics does).
    """
    cfg = cfg or TrainConfig()
    n_batches, world, main = len(loader), runtime.world_size(), runtime.is_main()
    total = _iterations(cfg, n_batches)
    snapshot_at = snapshot_iterations(cfg, total)
    out = Path(cfg.out_dir)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    loader, stepper, fixed = _setup(model, loader, cfg)
    start, fixed, spent = _resume(out, cfg, stepper, n_batches, total, fixed)
    log = HistoryLog(out / HISTORY, n_batches, write=main)
    model.train()
    if start == 0 and main:                         # a fresh run: the untrained model, monitored and drawn
        if monitor is not None:
            log.add(0, _heldout(monitor(stepper.model)))
        if 0 in cfg.sample_at:
            _save_grid(stepper.model, fixed, out, 0)
        if 0 in snapshot_at:
            save_snapshot(out, stepper.model, 0, 0.0, 0.0)
    it, images, t0 = start, 0, time.perf_counter()
    last_save = t0
    bar = tqdm(total=total, initial=start, unit="it", disable=not (cfg.progress and main),
               desc=model.preset or type(model).__name__)
    with _StopRequest() as stop, bar:
        while it < total:
            epoch, offset = divmod(it, n_batches)
            for u8, y in loader.epoch_batches(epoch, offset):
                # step: the model's schedule on one batch; its losses stay on the device for now
                log.add(it + 1, stepper(u8, y))
                it, images = it + 1, images + len(u8) * world
                bar.update()
                # monitor: held-out diagnostics, logged with this iteration's losses
                if main and monitor is not None and (it % cfg.monitor_every == 0 or it == total):
                    log.add(it, _heldout(monitor(stepper.model)))
                # log: pending values to history.csv (CxrnbError at a non-finite one) and the bar
                if it % cfg.log_every == 0:
                    log.flush()
                    bar.set_postfix({p: f"{v:.4g}" for p, v in log.last.items()}, refresh=False)
                # grid: the fixed inputs decoded, at the asked iterations and the last
                if main and (it in cfg.sample_at or it == total):
                    _save_grid(stepper.model, fixed, out, it)
                # snapshot: the weights at the asked iterations, with the seconds they took
                if main and it in snapshot_at:
                    synchronize(stepper.device)     # the seconds of work done, not of work queued
                    save_snapshot(out, stepper.model, it, it / n_batches, spent + time.perf_counter() - t0)
                # checkpoint: at the end, on the iteration count or the timer, before a stop
                stopping, due = _checkpoint_now(it, total, cfg, stop, last_save)
                if due:
                    log.flush()                     # raises on a non-finite loss: old file kept
                    now = time.perf_counter()
                    save_checkpoint(out / CHECKPOINT, stepper.model, stepper.optimizers, it, n_batches,
                                    fixed, asdict(cfg), seconds=spent + now - t0)
                    last_save = now
                # stop: a signal asked for it, and the checkpoint of this iteration is written
                if stopping and it < total:
                    raise KeyboardInterrupt(stop.message(it, total, out / CHECKPOINT))
                if it == total:
                    break
    synchronize(stepper.device)
    seconds = time.perf_counter() - t0
    if stepper.channels_last:                   # hand back the layout a reload builds: same numbers after
        model.to(memory_format=torch.contiguous_format)
    runtime.barrier()                           # rank 0's files are complete before anyone reads them
    history = History.read(out, images / seconds if images else float("nan"))
    history.arithmetic = describe_precision(stepper.precision, stepper.channels_last)
    return history
