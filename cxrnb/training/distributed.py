"""Several processes, one run: data-parallel training through PyTorch's own engine.

``torchrun --nproc_per_node N -m cxrnb train PRESET ...`` starts N copies of the command; torchrun
sets RANK, LOCAL_RANK and WORLD_SIZE. ``session`` (the one place the process group is made and torn
down) joins them: backend nccl on CUDA, gloo on the CPU, and ``pick_device("auto")`` then means
``cuda:LOCAL_RANK``. Everything else in this module is a no-op in a plain single-process run, so the
training loop calls it unconditionally.

What stays the same as on one process: ``batch_size`` is the GLOBAL batch (the paper's 64 on any
number of GPUs), every rank computes the same shuffled epoch order and takes its slice of each
global batch, and gradients are averaged over ranks. The losses are batch means, so the average of
the ranks' gradients IS the gradient of the global batch, and the logged losses (averaged over ranks
too) are the global batch's. Rank 0 alone writes checkpoints, history.csv and sample grids.

Two things differ, on purpose:
- noise (reparameterisation draws, the GAN's latents) comes from a stream per rank, so ranks draw
  independent noise rather than N copies of the same;
- BatchNorm: on CUDA it becomes SyncBatchNorm (statistics over the global batch, as on one GPU).
  torch's SyncBatchNorm has no CPU kernel, so CPU ranks normalise with their own batch's statistics;
  the CPU path is for testing and small runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from cxrnb.errors import CxrnbError
from cxrnb.models.losses import Reduction
from cxrnb.runtime import barrier, is_main, local_rank, pick_device, rank, world_size


@contextlib.contextmanager
def session(device: str = "auto", timeout_minutes: float = 30.0) -> Iterator[None]:
    """Join the processes torchrun started (if it started any) for the body, then leave.

    Outside torchrun (no WORLD_SIZE, or WORLD_SIZE=1) this does nothing. The device decides the
    backend: nccl on CUDA, gloo on the CPU (MPS has no collective backend and is refused).
    """
    n = int(os.environ.get("WORLD_SIZE", 1))
    if n <= 1 or dist.is_initialized():
        yield
        return
    kind = pick_device(device).type
    if kind == "mps":
        raise CxrnbError("several processes need CUDA (nccl) or the CPU (gloo); use --device cpu or cuda")
    if kind == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if kind == "cuda" else "gloo",
                            timeout=timedelta(minutes=timeout_minutes))
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the body first (e.g. building the cache), the others after it has finished
    (then merely opening what it built), so no two processes write the same files."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def rank_seed(seed: int) -> int:
    """The seed of this rank's training noise: the run's seed alone on one process (runs stay as
    they were), else a distinct stream per rank derived from (seed, rank)."""
    if world_size() == 1:
        return seed
    return int(np.random.SeedSequence([seed, rank()]).generate_state(1)[0])


class _Loss(nn.Module):
    """DDP wraps a module and hooks its ``forward``; our models' step is ``loss(x, y, part)``, so
    this wrapper's forward is that call. DDP then all-reduces (averages) the gradients of whatever
    that part's loss reached, during backward, overlapped with it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor, part: str) -> dict[str, Tensor]:
        return self.model.loss(x, y, part)


def data_parallel(model: nn.Module, device: torch.device):
    """``model.loss`` as a DistributedDataParallel call (``model`` is converted in place to
    SyncBatchNorm on CUDA). ``find_unused_parameters``: each part of a schedule reaches only its own
    weights (the LSGAN's D step never touches G, its G steps freeze D), and DDP must be told that
    the rest will get no gradient this time rather than wait for it."""
    if model.reduction == Reduction.UPSTREAM:
        raise CxrnbError("the 'upstream' loss sums the KL over the batch, so per-process losses do not add "
                         "up to the global batch's; train this preset on one process")
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = nn.parallel.DistributedDataParallel(
        _Loss(model), device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True)
    return ddp


def average_logs(logs: dict[str, dict[str, Tensor]]) -> dict[str, dict[str, Tensor]]:
    """Each logged scalar averaged over ranks (one all-reduce): the global batch's value, since every
    rank's is a mean over an equal share of it."""
    n = world_size()
    if n == 1:
        return logs
    keys = [(p, k) for p, entries in logs.items() for k in entries]
    flat = torch.stack([logs[p][k].float() for p, k in keys])
    dist.all_reduce(flat)                           # SUM: gloo has no AVG
    flat /= n
    out: dict[str, dict[str, Tensor]] = {p: {} for p in logs}
    for (p, k), v in zip(keys, flat):
        out[p][k] = v
    return out


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag, true if it is true on any rank: decisions that depend on a clock or a signal
    (checkpoint now, stop now) must be taken by all ranks together."""
    if world_size() == 1:
        return tuple(bool(f) for f in flags)
    device = torch.device("cuda", local_rank()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def gather(obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order (e.g. the RNG states a checkpoint keeps per rank)."""
    if world_size() == 1:
        return [obj]
    out: list[object] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
