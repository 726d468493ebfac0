"""The energy a cell's training used, in joules, and where the number comes from.

A :class:`Meter` is read when the training loop starts and when it ends (:func:`mammoscale.train.loop.train`: the
optimiser steps, not the probe before them nor the validation after them); every rank measures its own part and
:func:`total` adds them up. The sources, by device:

- a rank on an NVIDIA GPU: that GPU's energy counter from NVML (``nvmlDeviceGetTotalEnergyConsumption``, mJ since
  the driver loaded; Volta and later), called through ``ctypes`` on ``libnvidia-ml.so.1`` (the driver's library;
  no Python package). The GPU is found by its PCI bus id, not its index: NVML numbers every GPU of the machine,
  CUDA only those ``CUDA_VISIBLE_DEVICES`` shows, in its own order. Each rank has a GPU of its own
  (:func:`mammoscale.train.devices.choose`), so each GPU is counted once. Only the GPUs: not their host's CPUs;
- a rank on a CPU: RAPL's package counters (``/sys/class/powercap/intel-rapl:<n>/energy_uj``, every socket; their
  sub-zones are inside them), where this process may read them (many kernels let only root since 2020). A socket
  is shared by the node's ranks, and by whatever else runs there, so only local rank 0 counts them: once per node.
  The counters wrap around at ``max_energy_range_uj`` (about 262 kJ: minutes at a few hundred watts), so they
  are read every :data:`RAPL_POLL_S` seconds in a background thread;
- anything else: None, said once in the log.

The record's fields are :func:`record_fields`.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

NVML, RAPL = "nvml", "rapl"
NVML_LIBRARY = "libnvidia-ml.so.1"
POWERCAP = Path("/sys/class/powercap")
RAPL_POLL_S = 30.0
"""How often the RAPL counters are read, well inside the shortest wrap-around (about 262 kJ at a socket's 400 W)."""
_said: set[str] = set()


def rapl_delta_uj(start: int, end: int, max_range_uj: int) -> int:
    """Microjoules between two reads of one RAPL counter, which restarts from 0 past ``max_range_uj`` (one wrap at
    most between the reads: :data:`RAPL_POLL_S` keeps them close enough)."""
    return end - start if end >= start else max_range_uj - start + end


def joules_of(start_mj: int, end_mj: int) -> float:
    """NVML's counter is 64-bit millijoules since the driver loaded: it does not wrap."""
    return (end_mj - start_mj) / 1000.0


def combine(parts: list[tuple[float | None, str | None]]) -> tuple[float | None, str | None]:
    """The cell's energy from every rank's (joules, source): their sum, or None when any rank could not measure its
    part (a partial sum would look like a smaller cell)."""
    if not parts or any(joules is None for joules, _ in parts):
        return None, None
    return sum(joules for joules, _ in parts), "+".join(sorted({source for _, source in parts}))


def record_fields(progress, images: int) -> dict:
    """The record's energy fields: ``energy_j`` (the training's, every rank's device), ``energy_source`` (``nvml``,
    ``rapl`` or null) and ``energy_per_img_j`` over the ``images`` the metered steps trained."""
    joules = progress.energy_j
    return {
        "energy_j": joules,
        "energy_source": progress.energy_source if joules is not None else None,
        "energy_per_img_j": joules / images if joules is not None and images else None,
    }


def total(backend, joules: float | None, source: str | None) -> tuple[float | None, str | None]:
    """Every rank's part added up (:func:`combine`), on every rank."""
    return combine(backend.gather((joules, source)))


@dataclass(frozen=True)
class Zone:
    energy: Path
    max_range_uj: int

    def read(self) -> int:
        return int(self.energy.read_text())


def rapl_zones(root: Path | str = POWERCAP) -> list[Zone]:
    """Every package's RAPL counter under ``root``, if this process can read them all; else none."""
    zones = []
    for zone in sorted(Path(root).glob("intel-rapl:*")):
        if zone.name.count(":") != 1:  # intel-rapl:0:0 (core, uncore, dram) is inside intel-rapl:0
            continue
        try:
            found = Zone(zone / "energy_uj", int((zone / "max_energy_range_uj").read_text()))
            found.read()
        except (OSError, ValueError):
            return []
        zones.append(found)
    return zones


class Rapl:
    """RAPL's package counters, summed and read often enough to see every wrap-around."""

    source = RAPL

    def __init__(self, zones: list[Zone]):
        self.zones, self.microjoules = zones, 0
        self._last = [zone.read() for zone in zones]
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._poll_until_stopped, name="rapl", daemon=True)
        self._thread.start()

    def poll(self) -> None:
        with self._lock:
            now = [zone.read() for zone in self.zones]
            self.microjoules += sum(
                rapl_delta_uj(start, end, zone.max_range_uj) for start, end, zone in zip(self._last, now, self.zones)
            )
            self._last = now

    def _poll_until_stopped(self) -> None:
        while not self._stop.wait(RAPL_POLL_S):
            self.poll()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.poll()
        return self.microjoules / 1e6


class Nvml:
    """One GPU's energy counter, through the NVIDIA driver's library."""

    source = NVML

    def __init__(self, library: ctypes.CDLL, handle: ctypes.c_void_p):
        self._library, self._handle = library, handle
        self._start = self.millijoules()

    @classmethod
    def open(cls, bus_id: str, library: str = NVML_LIBRARY) -> Nvml | None:
        """The GPU at PCI ``bus_id``'s counter; None without the library, the GPU or a counter (before Volta)."""
        try:
            nvml = ctypes.CDLL(library)
            handle = ctypes.c_void_p()
            if nvml.nvmlInit_v2() != 0:
                return None
            if nvml.nvmlDeviceGetHandleByPciBusId_v2(bus_id.encode(), ctypes.byref(handle)) == 0:
                meter = cls(nvml, handle)
                if meter._start is not None:
                    return meter
            nvml.nvmlShutdown()
        except (OSError, AttributeError):  # no library, or one without these functions
            return None
        return None

    def millijoules(self) -> int | None:
        value = ctypes.c_ulonglong()
        status = self._library.nvmlDeviceGetTotalEnergyConsumption(self._handle, ctypes.byref(value))
        return value.value if status == 0 else None

    def stop(self) -> float | None:
        end = self.millijoules()
        self._library.nvmlShutdown()
        return joules_of(self._start, end) if end is not None else None


def pci_bus_id(domain: int, bus: int, device: int) -> str:
    """A GPU's PCI address as NVML writes it: ``00000000:3B:00.0``."""
    return f"{domain:08X}:{bus:02X}:{device:02X}.0"


class Meter:
    """This rank's part of the training's energy: ``with Meter(device, local_rank) as meter: ...``, then
    ``meter.joules`` (None where not measured) and ``meter.source``."""

    def __init__(self, device: torch.device, local_rank: int, *, root: Path | str = POWERCAP, library=NVML_LIBRARY):
        self.device, self.local_rank, self.root, self.library = device, local_rank, root, library
        self.joules: float | None = None
        self.source: str | None = None
        self._counter: Rapl | Nvml | None = None

    def __enter__(self) -> Meter:
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            self._counter = Nvml.open(
                pci_bus_id(props.pci_domain_id, props.pci_bus_id, props.pci_device_id), self.library
            )
            _say_once(self._counter, f"NVML ({self.library}) cannot read the energy of {self.device}")
        else:
            zones = rapl_zones(self.root)
            _say_once(zones or None, f"no readable RAPL counter ({Path(self.root)}/intel-rapl:*/energy_uj)")
            if zones:
                self.source, self.joules = RAPL, 0.0  # the node's other ranks: local rank 0 counts the sockets
                self._counter = Rapl(zones) if self.local_rank == 0 else None
        return self

    def __exit__(self, *exc) -> None:
        if self._counter is not None:
            self.joules, self.source = self._counter.stop(), self._counter.source
            self._counter = None


def _say_once(found, why: str) -> None:
    if found is None and why not in _said:
        _said.add(why)
        log.info("energy: not measured: %s", why)
