"""What this process runs on: the device, the CPU's bf16 support, and its place among torchrun's processes.

The one device contract: every entry point takes ``device`` as a string, "auto" included, and
resolves it here (training, classifier, feature extractors, explorer, benches, notebooks).

``"auto"`` picks CUDA, then Apple MPS, then the CPU; an explicit device must exist, else a one-line
CxrnbError says which to use instead. Under torchrun (cxrnb.training.distributed) "auto" and "cuda" mean this
process's GPU, ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import os

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


def describe_cpu() -> str:
    """CPU model, torch's vector capability and the bf16-relevant ISA flags, in words."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    flags = sorted(f for f in cpu_flags() if f in {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    return (f"{model}, {torch.get_num_threads()} threads, torch capability "
            f"{torch.backends.cpu.get_cpu_capability()}, flags: {', '.join(flags) or 'none of avx2/avx512'}"
            f"; native bf16: {'yes' if cpu_bf16_native() else 'no'}")
