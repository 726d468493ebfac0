"""The compute device a rank trains on: choosing it, timing on it, and its peak memory.

Timing a GPU needs a synchronise (kernels run asynchronously); peak memory means CUDA's
``max_memory_allocated`` on a GPU and the process's peak resident set size on a CPU, where
Linux lets the high-water mark be reset (``/proc/self/clear_refs``) so that the peak is the
training's, not the import's.
"""

from __future__ import annotations

import contextlib
import logging
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


def parse_cpus(text: str) -> set[int]:
    """A Linux CPU list (``0-25,52-77``) as a set."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if part:
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def format_cpus(cpus) -> str:
    """A set of CPUs as a Linux CPU list, ranges compacted (``0-5,52-57``)."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(f"{low}-{high}" if high > low else str(low) for low, high in runs)


def gpu_numa_cpus(index: int) -> set[int] | None:
    """The CPUs on GPU ``index``'s NUMA node (its PCI device's ``local_cpulist`` in sysfs); None where unknown."""
    props = torch.cuda.get_device_properties(index)
    ids = [getattr(props, f"pci_{name}_id", None) for name in ("domain", "bus", "device")]
    if None in ids:
        return None
    try:
        text = Path("/sys/bus/pci/devices/{:04x}:{:02x}:{:02x}.0/local_cpulist".format(*ids)).read_text()
    except OSError:
        return None
    return parse_cpus(text) or None


def near_gpu(allowed: set[int], numa: list[set[int] | None], local_rank: int) -> set[int] | None:
    """The CPUs local rank ``local_rank`` (on GPU ``local_rank``) binds to: its share of the ``allowed`` CPUs on its
    GPU's NUMA node (``numa``: each of the node's ranks' GPUs' CPUs), split in local-rank order among the ranks whose
    GPUs share that node. None to keep what it has: no topology known, its CPUs already all on its GPU's node, or
    none of them there."""
    mine = numa[local_rank] if local_rank < len(numa) else None
    if not mine or allowed <= mine:
        return None
    here = sorted(allowed & mine)
    if not here:
        return None
    sharing = [rank for rank, cpus in enumerate(numa) if cpus == mine]
    share, extra = divmod(len(here), len(sharing))
    place = sharing.index(local_rank)
    start = place * share + min(place, extra)
    return set(here[start : start + share + (place < extra)]) or None


def bind_near_gpu(device: torch.device, local_rank: int, local_world: int) -> dict:
    """On a GPU, bind this process to its share of the CPUs on its GPU's NUMA node (:func:`near_gpu`); say where it
    runs: its CPUs, and its GPU's node's CPUs (None off a GPU or where unknown)."""
    numa_of_mine = None
    if device.type == "cuda":
        visible = min(torch.cuda.device_count(), max(local_world, local_rank + 1))
        numa = [gpu_numa_cpus(index) for index in range(visible)]
        numa_of_mine = numa[device.index] if device.index is not None and device.index < len(numa) else None
        chosen = near_gpu(os.sched_getaffinity(0), numa, device.index or 0)
        if chosen:
            os.sched_setaffinity(0, chosen)
        elif numa_of_mine and not os.sched_getaffinity(0) & numa_of_mine:
            logging.getLogger(__name__).warning(
                "rank on %s: none of its CPUs (%s) is on its GPU's NUMA node (%s): its host-to-GPU copies cross "
                "sockets (docs/gpu-cluster.md, 'CPUs near their GPUs')",
                device,
                format_cpus(os.sched_getaffinity(0)),
                format_cpus(numa_of_mine),
            )
    return {
        "cpus": format_cpus(os.sched_getaffinity(0)),
        "gpu_numa_cpus": format_cpus(numa_of_mine) if numa_of_mine else None,
    }


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
