"""The one training loop every model shares.

The loop knows nothing about VAEs or GANs. For each batch it walks the model's ``schedule``
(``(("model", 1),)`` for the VAEs, ``(("d", 1), ("g", 3))`` for the LSGAN) and, for each part, takes
that many optimiser steps on ``model.loss(x, y, part)["loss"]``. Around that it does what makes a run
trustworthy: it seeds everything, logs every loss entry to ``history.csv``, saves sample grids of a
FIXED latent batch (so grids are comparable across iterations and runs), writes checkpoints
atomically, resumes bit-exactly mid-epoch, and stops at the first non-finite loss while keeping the
last good checkpoint. Under torchrun it trains data-parallel (cxrnb.training.distributed): each process
takes its slice of every global batch, DDP averages the gradients, rank 0 alone writes files.

A run directory holds::

    checkpoint.pt        model, optimisers, step, RNG states, fixed latents, config, model identity
    history.csv          iteration, epoch, part, name, value  (one row per logged scalar; an optional
                         monitor, e.g. collapse diagnostics on held-out images, logs as part "heldout")
    samples/iter_000400.png  grids of model.generate(z_fixed) at cfg.sample_at and at the end
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torchvision.utils import save_image
from tqdm.auto import tqdm

from cxrnb import runtime

from cxrnb.training import distributed
from cxrnb.runtime import cpu_bf16_native, pick_device, synchronize
from cxrnb.errors import CxrnbError
from cxrnb.models.base import GenerativeModel
from cxrnb.paths import atomic

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"
HISTORY_COLUMNS = ("iteration", "epoch", "part", "name", "value")



@dataclass
class TrainConfig:
    """How long, where and how to train. Batch size is the paper's (§5); the rest is engineering."""

    epochs: float = 1.0
    max_steps: int | None = None        # iterations (batches); overrides epochs when set
    batch_size: int = 64                # paper §5; the loader is built with it (study.train_run)
    seed: int = 0
    device: str = "auto"                # auto: CUDA, then Apple MPS, then CPU
    amp: bool = True                    # bf16 autocast where bf16 is native: CUDA, CPUs with AVX512-BF16/AMX
    channels_last: bool | None = None   # None: with amp's bf16 (cuDNN and oneDNN's bf16 kernels prefer NHWC)
    sample_at: tuple[int, ...] = (0,)   # iterations with a sample grid; the final one is always saved
    n_samples: int = 64
    checkpoint_every: int | None = 500  # iterations; a checkpoint is always written at the end
    checkpoint_minutes: float | None = 5.0   # also after this much wall time since the last one
    # (and on Ctrl-C / SIGTERM: the loop finishes the iteration, checkpoints, then stops)
    log_every: int = 10                 # iterations between flushes of losses to CSV and progress bar
    monitor_every: int = 20             # iterations between calls of train()'s monitor, if it has one
    out_dir: str = "runs/run"
    resume: bool = True                 # continue from out_dir/checkpoint.pt when there is one
    progress: bool = True
    compile: bool = False               # torch.compile the model's loss

    def __post_init__(self):
        if self.max_steps is None and not self.epochs > 0:
            raise CxrnbError(f"epochs must be > 0 (got {self.epochs}); or set max_steps")
        if self.max_steps is not None and self.max_steps < 1:
            raise CxrnbError(f"max_steps must be >= 1 (got {self.max_steps})")
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


@dataclass
class History:
    """What a run left behind: the loss table, the sample grids, the checkpoint, the speed."""

    frame: pd.DataFrame             # history.csv: iteration, epoch, part, name, value
    samples: dict[int, Path]        # iteration -> sample grid PNG
    checkpoint: Path
    images_per_s: float             # this call's training images / wall time (incl. logging, grids)
    out_dir: Path

    @classmethod
    def read(cls, out_dir: str | Path, images_per_s: float = float("nan")) -> History:
        """The History of the run in ``out_dir`` (e.g. a finished run, to plot without training)."""
        out = Path(out_dir)
        samples = {int(p.stem.split("_")[1]): p for p in sorted((out / "samples").glob("iter_*.png"))}
        return cls(_read_history(out / HISTORY), samples, out / CHECKPOINT, images_per_s, out)

    def wide(self, name: str = "loss") -> pd.DataFrame:
        """One column per part (e.g. d, g) of one logged scalar, indexed by iteration: ready to plot."""
        rows = self.frame[self.frame.name == name]
        return rows.pivot(index="iteration", columns="part", values="value")


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (all devices) from one seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- one iteration ------------------------------------------------------------------------------------

class Stepper:
    """One training iteration: the model's schedule of optimiser steps on one batch, on one device.

    Where the device allows it, this is the fast path: bf16 autocast and channels_last on CUDA and
    on CPUs with native bf16 (device.cpu_bf16_native; elsewhere bf16 is emulated and slower), fused
    Adam (CUDA and CPU), pinned non-blocking host-to-device copies, gradients freed (set_to_none) rather than
    zeroed. Loss values stay on the device (no per-step synchronisation); the caller reads them.
    """

    def __init__(self, model: GenerativeModel, device: torch.device, *, amp: bool = True,
                 channels_last: bool | None = None, compile: bool = False):
        cuda = device.type == "cuda"
        fast_bf16 = cuda or (device.type == "cpu" and cpu_bf16_native())    # bf16 in hardware
        self.device = device
        self.amp = amp and fast_bf16
        self.channels_last = fast_bf16 if channels_last is None else channels_last
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


def random_batch(n: int, size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A batch shaped like the loader's (uint8 images, multi-hot labels): speed does not depend on
    the pixels, so timings need no data on disk."""
    gen = torch.Generator().manual_seed(seed)
    u8 = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=gen)
    return u8, (torch.rand(n, 15, generator=gen) < 0.2).float()


def throughput(step: Callable[[Tensor, Tensor], object], u8: Tensor, y: Tensor,
               device: torch.device, steps: int = 3, warmup: int = 1) -> float:
    """Training images per second of ``step`` on one batch, timed after ``warmup`` untimed steps
    (the first step pays for cuDNN autotuning, allocator growth and lazy initialisation)."""
    for _ in range(warmup):
        step(u8, y)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(u8, y)
    synchronize(device)
    return steps * u8.shape[0] / (time.perf_counter() - t0)


# --- checkpoints -----------------------------------------------------------------------------------------

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


def save_checkpoint(path: Path, stepper: Stepper, step: int, batches_per_epoch: int,
                    fixed: tuple[Tensor, Tensor | None], cfg: TrainConfig) -> None:
    """Write the whole training state to ``path`` atomically (a crash never leaves half a file).
    Every rank calls it (their RNG states are gathered); rank 0 writes."""
    bad = [n for n, p in stepper.model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise CxrnbError(f"parameter {bad[0]} is not finite after iteration {step}; training stopped, the "
                         f"last good checkpoint {path} is kept; lower the learning rate or check the data")
    rng = distributed.gather(_rng_state())          # every rank's noise stream, so resume is exact
    if not runtime.is_main():
        return
    state = {**_model_id(stepper.model), "step": step, "batches_per_epoch": batches_per_epoch,
             "model": stepper.model.state_dict(),
             "optimizers": {str(p): o.state_dict() for p, o in stepper.optimizers.items()},
             "rng": rng[0], "z_fixed": fixed[0], "y_fixed": fixed[1], "config": asdict(cfg),
             "world_size": len(rng), **({"rng_ranks": rng} if len(rng) > 1 else {})}
    with atomic(path) as tmp:                       # a failed write (full disk) leaves no half file
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, model: GenerativeModel,
                    optimizers: dict[str, torch.optim.Optimizer] | None = None) -> dict:
    """Load a checkpoint written by ``train`` into ``model`` (and ``optimizers``); returns it whole.

    A checkpoint of another model class, preset or input size is refused with a CxrnbError.
    """
    path = Path(path)
    if not path.is_file():
        raise CxrnbError(f"no checkpoint at {path}; train first (cxrnb train PRESET) or fix the path")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key, want in _model_id(model).items():
        if ckpt[key] != want:
            raise CxrnbError(f"{path} holds {key} {ckpt[key]!r}, but the model has {want!r}; "
                             f"build the model the checkpoint was trained with, or use another out_dir")
    model.load_state_dict(ckpt["model"])
    for part, opt in (optimizers or {}).items():
        opt.load_state_dict(ckpt["optimizers"][part])
        for group in opt.param_groups:      # a saved group brings its own kernel choice (an older,
            group.update(fused=opt.defaults.get("fused"),       # unfused run's); keep this loop's
                         foreach=opt.defaults.get("foreach"))
    return ckpt


# --- the loop ---------------------------------------------------------------------------------------------

def fixed_inputs(model: GenerativeModel, loader, n: int, seed: int) -> tuple[Tensor, Tensor | None]:
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


def _save_grid(model: GenerativeModel, fixed: tuple[Tensor, Tensor | None], path: Path) -> Path:
    with model.evaluating():                        # BatchNorm running stats: no side effects
        images = model.generate(*fixed)
    with atomic(path) as tmp:
        save_image(images, tmp, nrow=int(math.sqrt(len(images))) or 1)
    return path


class _Log:
    """Loss values per iteration, kept on the device until flushed to the CSV in one transfer."""

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


def _read_history(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=HISTORY_COLUMNS)


def _start_history(path: Path, upto: int | None) -> None:
    """A fresh CSV (new run), or the old one cut to the checkpoint's iteration (resumed run)."""
    rows = _read_history(path)
    rows = rows[rows.iteration <= upto] if upto is not None else rows.iloc[:0]
    with atomic(path) as tmp:
        rows.to_csv(tmp, index=False, columns=list(HISTORY_COLUMNS))


class _StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM while training: remember it, so the loop can finish the iteration
    it is in, write a checkpoint and stop; a second signal stops at once. Handlers are installed only
    in the main thread (where Python delivers signals) and restored afterwards."""

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt("second interrupt: stopped without a checkpoint")
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train(model: GenerativeModel, loader, cfg: TrainConfig | None = None,
          monitor: Callable[[GenerativeModel], dict[str, float]] | None = None) -> History:
    """Train ``model`` on ``loader`` (see the module docstring); returns the run's History.

    ``monitor(model)``, when given, is called at iteration 0 (of a fresh run), every
    ``cfg.monitor_every`` iterations and at the end; its scalars are logged as part "heldout". It
    must leave the model and the global random state as it found them (cxrnb.evaluation.diagnostics does).
    """
    cfg = cfg or TrainConfig()
    n_batches = len(loader)
    if n_batches == 0:
        raise CxrnbError("the loader yields no batch (fewer images than one batch); "
                         "lower batch_size or use more images")
    total = cfg.max_steps or math.ceil(cfg.epochs * n_batches)
    out = Path(cfg.out_dir)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    ckpt_path, hist_path = out / CHECKPOINT, out / HISTORY

    seed_everything(cfg.seed)
    fixed = fixed_inputs(model, loader, cfg.n_samples, cfg.seed)
    world, main = runtime.world_size(), runtime.is_main()
    if world > 1:
        if not hasattr(loader, "shard"):
            raise CxrnbError("training on several processes needs a loader with shard(rank, world_size), "
                             "e.g. ImageCache.loader")
        loader = loader.shard(runtime.rank(), world)
        seed_everything(distributed.rank_seed(cfg.seed))    # independent noise on every rank
    stepper = Stepper(model, pick_device(cfg.device), amp=cfg.amp, channels_last=cfg.channels_last,
                      compile=cfg.compile)
    start = 0
    if cfg.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, model, stepper.optimizers)
        if ckpt.get("world_size", 1) != world:
            raise CxrnbError(f"{ckpt_path} was trained on {ckpt.get('world_size', 1)} process(es), this run has "
                             f"{world}; resume with the same torchrun --nproc_per_node, or resume=False")
        if ckpt["batches_per_epoch"] != n_batches or ckpt["config"]["seed"] != cfg.seed:
            raise CxrnbError(f"{ckpt_path} was trained with seed {ckpt['config']['seed']} and "
                             f"{ckpt['batches_per_epoch']} batches per epoch, this run has seed "
                             f"{cfg.seed} and {n_batches}; use the same seed, data and batch size, "
                             f"or resume=False")
        start = ckpt["step"]
        if start > total:
            raise CxrnbError(f"{ckpt_path} is already at iteration {start}, past the {total} asked for; "
                             f"ask for more epochs or use another out_dir")
        fixed = (ckpt["z_fixed"].to(stepper.device),
                 None if ckpt["y_fixed"] is None else ckpt["y_fixed"].to(stepper.device))
        _set_rng_state(ckpt["rng_ranks"][runtime.rank()] if world > 1 else ckpt["rng"])
        if main:
            _start_history(hist_path, upto=start)
    elif main:
        for old in (out / "samples").glob("iter_*.png"):   # a fresh run: no grids of an older one
            old.unlink()
        _start_history(hist_path, upto=None)
    fixed = (fixed[0].to(stepper.device), None if fixed[1] is None else fixed[1].to(stepper.device))

    def grid(it: int) -> None:
        if main:
            _save_grid(stepper.model, fixed, out / "samples" / f"iter_{it:06d}.png")

    def checkpoint(it: int) -> None:
        log.flush()                                 # raises on a non-finite loss: old file kept
        save_checkpoint(ckpt_path, stepper, it, n_batches, fixed, cfg)

    def watch(it: int) -> None:
        if monitor is not None and main:
            log.add(it, {"heldout": {k: torch.tensor(float(v)) for k, v in monitor(stepper.model).items()}})

    log = _Log(hist_path, n_batches, write=main)
    model.train()
    if start == 0:
        watch(0)
        if 0 in cfg.sample_at:
            grid(0)
    bar = tqdm(total=total, initial=start, unit="it", disable=not (cfg.progress and main),
               desc=model.preset or type(model).__name__)
    it, images, t0 = start, 0, time.perf_counter()
    last_save = t0
    with _StopRequest() as stop:
        try:
            while it < total:
                epoch, offset = divmod(it, n_batches)
                for u8, y in loader.epoch_batches(epoch, offset):
                    log.add(it + 1, stepper(u8, y))
                    it, images = it + 1, images + len(u8) * world
                    bar.update()
                    if it % cfg.monitor_every == 0 or it == total:
                        watch(it)
                    if it % cfg.log_every == 0:
                        log.flush()
                        bar.set_postfix({p: f"{v:.4g}" for p, v in log.last.items()}, refresh=False)
                    if it in cfg.sample_at or it == total:
                        grid(it)
                    stopping = stop.signum is not None
                    timed = (cfg.checkpoint_minutes
                             and time.perf_counter() - last_save >= 60 * cfg.checkpoint_minutes)
                    if world > 1:               # clocks and signals differ by rank: decide together
                        stopping, timed = (distributed.any_rank(stopping, timed)
                                           if it % cfg.log_every == 0 or it == total else (False, False))
                    due = (it == total or stopping or timed
                           or (cfg.checkpoint_every and it % cfg.checkpoint_every == 0))
                    if due:
                        checkpoint(it)
                        last_save = time.perf_counter()
                    if stopping and it < total:
                        raise KeyboardInterrupt(f"{signal.Signals(stop.signum or signal.SIGTERM).name} at iteration {it} of {total}: "
                                                f"checkpoint written to {ckpt_path}; run the same command again "
                                                "to resume")
                    if it == total:
                        break
        finally:
            bar.close()
    synchronize(stepper.device)
    seconds = time.perf_counter() - t0
    runtime.barrier()                           # rank 0's files are complete before anyone reads them
    return History.read(out, images / seconds if images else float("nan"))
