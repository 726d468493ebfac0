"""Named ranges of a training step: where its time goes, as a profiler and Nsight Systems see it.

The loop (:mod:`mammoscale.train.loop`) marks each step (:data:`STEP`) and its phases (:data:`PHASES`) with
:func:`phase`. Off by default: a range is then a shared null context, 0.2 µs a call; a
``torch.profiler.record_function`` costs about 7 µs a call even with no profiler running (:func:`per_call_cost`;
docs/profiling.md), so the ranges are made only when a run asks for them:

- ``profile`` (:mod:`mammoscale.train.profiling`, the workflow's ``profile_cell`` rule): a torch profiler over
  the timed steps of a throughput cell; each range is a ``record_function`` (and an NVTX range on a GPU), and on a
  GPU each phase ends with a device synchronise, so that its time is its own work and not only its launch;
- ``nvtx``: NVTX ranges alone, for Nsight Systems (``nsys profile -t cuda,nvtx``), the whole run.

A run asks with ``python -m mammoscale.train --ranges nvtx|profile``, which sets :data:`ENV` for its ranks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch

ENV = "MAMMOSCALE_RANGES"
"""The environment variable that asks a cell's ranks for named ranges: ``profile`` or ``nvtx``."""
MODES = ("profile", "nvtx")

STEP = "training step"
"""One optimiser step, every micro-batch of it, as ``progress.step_times`` times it."""
DATA_WAIT = "data wait"
"""Waiting for the next micro-batch (``next()`` on the loader, or the split held on the device)."""
FORWARD = "forward"
"""The model's forward pass under autocast, and the loss."""
BACKWARD = "backward"
"""The backward pass, inside the backend's gradient synchronisation (DDP's bucketed all-reduce overlaps it)."""
OPTIMISER_STEP = "optimiser step"
"""``optimizer.step()`` and freeing or zeroing the gradients."""
COMMUNICATION = "gradient communication"
"""The backend's explicit collectives at a step's end: Horovod's gradient ``synchronize()``, and the all-reduce of
the loss and the stop flag every backend with several ranks makes."""
PHASES = (DATA_WAIT, FORWARD, BACKWARD, OPTIMISER_STEP, COMMUNICATION)
OTHER = "other"
"""A step's time outside every phase (the host-to-device copy, the learning rate, bookkeeping): breakdowns only."""

_NULL = contextlib.nullcontext()
_on = False
_record = False
_nvtx = False
_synchronize = False
_window: Callable[[], contextlib.AbstractContextManager] | None = None


class _Range:
    __slots__ = ("name", "_function")

    def __init__(self, name: str):
        self.name = name
        self._function = None

    def __enter__(self):
        if _nvtx:
            torch.cuda.nvtx.range_push(self.name)
        if _record:
            self._function = torch.profiler.record_function(self.name)
            self._function.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if _synchronize and exc[0] is None:
            torch.cuda.synchronize()
        if self._function is not None:
            self._function.__exit__(*exc)
            self._function = None
        if _nvtx:
            torch.cuda.nvtx.range_pop()


def phase(name: str):
    """The context of one named range: a shared null context unless a run turned the ranges on."""
    return _Range(name) if _on else _NULL


def window():
    """The context of a throughput cell's timed steps: the profiler a profile run armed (:func:`armed`), else null."""
    return _window() if _window is not None else _NULL


def active() -> bool:
    return _on


@contextlib.contextmanager
def enabled(*, record: bool, nvtx: bool, synchronize: bool = False):
    """Turn the ranges on: ``record`` as ``torch.profiler.record_function``, ``nvtx`` as NVTX ranges (CUDA only),
    ``synchronize`` the device at each range's end; back to what they were afterwards."""
    global _on, _record, _nvtx, _synchronize
    cuda = torch.cuda.is_available()
    before = (_on, _record, _nvtx, _synchronize)
    _record, _nvtx, _synchronize = record, nvtx and cuda, synchronize and cuda
    _on = _record or _nvtx
    try:
        yield
    finally:
        _on, _record, _nvtx, _synchronize = before


@contextlib.contextmanager
def armed(profiled_window: Callable[[], contextlib.AbstractContextManager]):
    """While inside, :func:`window` enters a fresh ``profiled_window()`` around a throughput cell's timed steps."""
    global _window
    before, _window = _window, profiled_window
    try:
        yield
    finally:
        _window = before


def mode_from_env(env=os.environ) -> str | None:
    """What :data:`ENV` asks for: ``profile``, ``nvtx`` or None."""
    return env.get(ENV) or None


def per_call_cost(calls: int = 200_000) -> dict[str, float]:
    """Microseconds per ``with phase(...)`` off, on without a profiler, and on under a CPU profiler."""
    import timeit

    def ranged():
        with phase(FORWARD):
            pass

    def best() -> float:
        return 1e6 * min(timeit.repeat(ranged, number=calls, repeat=3)) / calls

    cost = {"off": best()}
    with enabled(record=True, nvtx=True):
        cost["on, no profiler"] = best()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
            calls //= 10  # the profiler keeps every event
            cost["on, under a profiler"] = best()
    return cost
