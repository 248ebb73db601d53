"""What this process runs on: the device, the CPU's bf16 support, and its place among torchrun's processes.

The one device contract: every entry point takes ``device`` as a string, "auto" included, and
resolves it here (training, classifier, feature extractors, explorer, benches, notebooks).

``"auto"`` picks CUDA, then Apple MPS, then the CPU; an explicit device must exist, else a one-line
CxrnbError says which to use instead. Under torchrun (cxrnb.training.distributed) "auto" and "cuda" mean this
process's GPU, ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import os
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version

import torch
import torch.distributed as dist

from cxrnb.errors import CxrnbError

# --- process facts (torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; cxrnb.training.distributed joins them) ---

def world_size() -> int:
    """How many processes train together (1 outside torchrun)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def local_rank() -> int:
    """This process's index on its machine: the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", 0)) if world_size() > 1 else 0


def is_main() -> bool:
    """True on the one process that writes files (rank 0; the only one outside torchrun)."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


# --- devices ---

def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA, then Apple MPS, then CPU. An explicit device must exist (else CxrnbError)."""
    if str(device) in ("auto", "cuda") and torch.cuda.is_available() and world_size() > 1:
        return torch.device("cuda", local_rank())
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise CxrnbError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (d.index or 0) < torch.cuda.device_count(),
        "mps": torch.backends.mps.is_available(),
    }
    if d.type not in available:
        raise CxrnbError(f"unsupported device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    if not available[d.type]:
        raise CxrnbError(f"device {device!r} is not available on this machine; use --device auto")
    return d


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def describe_device(device: str) -> str:
    """The device a run on ``device`` uses, in words (GPU name where there is one)."""
    d = pick_device(device)
    if d.type == "cuda":
        return f"{d} ({torch.cuda.get_device_name(d)})"
    return f"cpu ({torch.get_num_threads()} threads)" if d.type == "cpu" else str(d)


def cpu_flags() -> set[str]:
    """The CPU's ISA flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_native() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16). Elsewhere torch
    emulates bf16 in fp32 and autocast only adds conversions, so training stays fp32."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


class Precision(StrEnum):
    """The arithmetic a training run uses. ``auto`` is bf16 autocast on CUDA and fp32 on every CPU:
    a CPU with native bf16 (avx512_bf16, AMX) trains faster in bf16, but then the same command gives
    other numbers on another CPU, and a verdict must not depend on which CPU a reader has. ``bf16``
    on a CPU is the explicit choice (emulated, slower, where the CPU has no bf16)."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"


def check_precision(precision: str) -> Precision:
    """``precision`` as a ``Precision``, or a one-line error naming the valid ones."""
    try:
        return Precision(precision)
    except ValueError:
        raise CxrnbError(f"unknown precision {precision!r}; use {', '.join(Precision)}") from None


PRECISION_ENV = "CXRNB_PRECISION"   # what "auto" means in this process, e.g. a whole rerun in bf16


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``precision`` on ``device``, with ``auto`` decided: ``$CXRNB_PRECISION`` (fp32 or bf16) when
    set, so a whole study or test suite can be rerun in the other arithmetic without editing a
    profile; else as ``Precision`` says."""
    p = check_precision(precision)
    if p == Precision.AUTO:
        forced = os.environ.get(PRECISION_ENV, "").strip()
        if forced:
            p = check_precision(forced)
            if p == Precision.AUTO:
                raise CxrnbError(f"{PRECISION_ENV}=auto says nothing; set it to fp32 or bf16, or unset it")
            return p
        return Precision.BF16 if device.type == "cuda" else Precision.FP32
    return p


def channels_last_default(precision: Precision) -> bool:
    """NHWC activations with bf16 (cuDNN's and oneDNN's bf16 kernels prefer them), NCHW with fp32."""
    return precision == Precision.BF16


def describe_precision(precision: Precision, channels_last: bool = False) -> str:
    """'fp32' or 'bf16 autocast', '+ channels_last' when the activations are NHWC."""
    words = "bf16 autocast" if precision == Precision.BF16 else "fp32"
    return words + (" + channels_last" if channels_last else "")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('unknown CPU' where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        "unknown CPU")
    except OSError:
        return "unknown CPU"


def device_name(device: str | torch.device = "auto") -> str:
    """The hardware a run on ``device`` uses, for provenance: the GPU's name, or the CPU's model with
    its thread count and whether it has native bf16."""
    d = pick_device(device)
    if d.type == "cuda":
        return torch.cuda.get_device_name(d)
    if d.type == "cpu":
        return (f"{cpu_model()}, {torch.get_num_threads()} threads, "
                f"{'native' if cpu_bf16_native() else 'no native'} bf16")
    return str(d)


LIBRARIES = ("torch", "torchvision", "diffusers", "numpy")


def library_versions() -> dict[str, str]:
    """The versions of the libraries whose arithmetic a number depends on."""
    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"
    return {name: of(name) for name in LIBRARIES}


def describe_cpu() -> str:
    """CPU model, torch's vector capability and the bf16-relevant ISA flags, in words."""
    model = cpu_model()
    flags = sorted(f for f in cpu_flags() if f in {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    return (f"{model}, {torch.get_num_threads()} threads, torch capability "
            f"{torch.backends.cpu.get_cpu_capability()}, flags: {', '.join(flags) or 'none of avx2/avx512'}"
            f"; native bf16: {'yes' if cpu_bf16_native() else 'no'}")
