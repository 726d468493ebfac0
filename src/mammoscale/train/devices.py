"""The compute device a rank trains on: choosing it, timing on it, and its peak memory.

Timing a GPU needs a synchronise (kernels run asynchronously); peak memory means CUDA's
``max_memory_allocated`` on a GPU and the process's peak resident set size on a CPU, where
Linux lets the high-water mark be reset (``/proc/self/clear_refs``) so that the peak is the
training's, not the import's.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mammoscale.errors import UserError

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def choose(requested: str, local_rank: int) -> torch.device:
    """``auto`` takes this rank's GPU when there is one, else the CPU; ``cuda`` without a GPU is an error."""
    if requested not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda, not {requested!r}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(
            "device cuda was requested but torch sees no GPU (no GPU allocated to the job, "
            "CUDA_VISIBLE_DEVICES empty, or a CPU build of torch)"
        )
    visible = torch.cuda.device_count()
    if local_rank >= visible:
        raise UserError(
            f"local rank {local_rank} has no GPU of its own: this node shows {visible} GPU(s) "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}) to at least {local_rank + 1} "
            "ranks; ask SLURM for a GPU per rank (the profile's gpus_per_node) or start fewer ranks"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    """A wall-clock reading taken after all queued work on ``device`` has finished."""
    synchronize(device)
    return time.perf_counter()


def names(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return [_cpu_model()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


class PeakMemory:
    """Peak memory since :meth:`reset`: CUDA max allocated bytes, or the CPU process's peak RSS."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with contextlib.suppress(OSError):
                _CLEAR_REFS.write_text("5")

    def peak(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return _status_kib("VmHWM") * 1024 or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def on_device(self) -> dict:
        """What the GPU held at the peak beyond the allocated bytes (:func:`device_use`); nulls on a CPU."""
        use = device_use(self.device)
        return {
            "peak_reserved_bytes": use.reserved_peak if use else None,
            "device_used_bytes": use.used_peak if use else None,
            "device_total_bytes": use.total if use else None,
        }


@dataclass(frozen=True)
class DeviceUse:
    """A GPU's memory around the caching allocator's peak since the last reset."""

    reserved_peak: int
    """The allocator's peak reserve (``max_memory_reserved``): allocated bytes and the fragments between them."""
    outside: int
    """What the driver reports used outside the allocator now: the CUDA context, NCCL's buffers, other processes."""
    total: int

    @property
    def used_peak(self) -> int:
        """The device's used memory at the allocator's peak: what ``nvidia-smi`` would have shown."""
        return self.outside + self.reserved_peak

    def within(self, margin: float) -> bool:
        """Whether the peak left at least ``margin`` of the device free."""
        return self.used_peak <= (1 - margin) * self.total


def device_use(device: torch.device) -> DeviceUse | None:
    """The GPU's memory at the allocator's peak since the last reset of its statistics; None on a CPU."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    outside = max(0, (total - free) - torch.cuda.memory_reserved(device))
    return DeviceUse(int(torch.cuda.max_memory_reserved(device)), int(outside), int(total))


def rss() -> int:
    """The process's resident set size now, in bytes (0 where /proc is unavailable)."""
    return _status_kib("VmRSS") * 1024


def _status_kib(field: str) -> int:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


OOM_SIGNS = ("out of memory", "can't allocate memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")
"""How an allocation failure reads: CUDA's caching allocator, the CPU allocator, and cuBLAS or cuDNN failing to
allocate their workspace (which torch raises as a plain RuntimeError)."""


def is_oom(error: BaseException) -> bool:
    """An allocation failure on any device: CUDA's OutOfMemoryError, the CPU allocator's refusal, or a cuBLAS or
    cuDNN allocation failure."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(sign in str(error) for sign in OOM_SIGNS)
