"""Where a cell's time goes: its timed steps under ``torch.profiler``, and what the profile says.

A cell run with :data:`mammoscale.train.ranges.ENV` set to ``profile`` (``python -m mammoscale.train --ranges
profile``; the workflow's ``profile_cell`` rule, :func:`mammoscale.train.job.run_profile`) trains as it always does,
and profiles the timed steps of its throughput run (:func:`session`: CPU activities, and CUDA's on a GPU), every
step and phase a named range (:mod:`mammoscale.train.ranges`). Rank 0 writes into the run's directory:

- :data:`~mammoscale.files.PROFILE_TRACE`: the Chrome trace (``export_chrome_trace``), for Perfetto,
  ``chrome://tracing`` or TensorBoard's profiler plugin, which reads files named ``*.pt.trace.json``; every other
  rank writes its own (:data:`~mammoscale.files.PROFILE_RANK_TRACE`);
- :data:`~mammoscale.files.PROFILE_OPERATORS`: the operators that took the most self time (device time on a GPU);
- :data:`~mammoscale.files.PROFILE_BREAKDOWN`: each step's seconds per phase and their share of the step
  (:func:`breakdown`); the collectives the profiler sees count as gradient communication wherever they run, as DDP's
  all-reduce runs inside the backward pass.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity

from mammoscale import files
from mammoscale.errors import UserError
from mammoscale.train import ranges

log = logging.getLogger("mammoscale.train")

TOP_OPERATORS = 40
"""Rows of the operators table."""
PERFETTO = "https://ui.perfetto.dev"
COLLECTIVES = ("all_reduce", "allreduce", "all_gather", "allgather", "reduce_scatter", "reducescatter", "param_comms")
"""Words (lower case) in the name of an operator that is a collective, beside those named ``nccl*``, ``gloo:*`` and
``c10d::*``: ``gloo:all_reduce``, ``c10d::allreduce_``, NCCL's kernels, ``record_param_comms``."""


@contextlib.contextmanager
def from_env(out_dir: Path, backend):
    """What :data:`~mammoscale.train.ranges.ENV` asks of this rank's run: a profile of its timed steps written into
    ``out_dir``, NVTX ranges for Nsight Systems, or nothing."""
    mode = ranges.mode_from_env()
    if mode is None:
        yield
        return
    if mode not in ranges.MODES:
        raise UserError(f"{ranges.ENV} must be one of {', '.join(ranges.MODES)}, not {mode!r}")
    if mode == "nvtx":
        on_gpu = backend.device.type == "cuda"
        log.info(
            "named ranges as NVTX ranges%s", "" if on_gpu else ": none here, NVTX ranges are a GPU's (run under nsys)"
        )
        with ranges.enabled(record=False, nvtx=on_gpu):
            yield
        return
    profiled = []

    def window():
        profiled.append(True)
        return session(Path(out_dir), backend)

    with ranges.armed(window):
        yield
    if not profiled:
        log.warning("no profile: only a throughput cell's timed steps are profiled (mode=throughput)")


@contextlib.contextmanager
def session(out_dir: Path, backend):
    """The profiler over the timed steps, the ranges on; its files written when the steps end well."""
    cuda = backend.device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with ranges.enabled(record=True, nvtx=cuda, synchronize=cuda), torch.profiler.profile(activities=activities) as p:
        yield
    write(p, out_dir, backend.rank, device=cuda)


def write(profile, out_dir: Path, rank: int, *, device: bool) -> None:
    """The trace of this rank; rank 0 adds the operators and the breakdown, and says where they are."""
    trace = out_dir / (files.PROFILE_TRACE if rank == 0 else files.fill(files.PROFILE_RANK_TRACE, rank=rank))
    with files.atomic_path(trace) as tmp:
        profile.export_chrome_trace(str(tmp))
    if rank != 0:
        return
    files.OPERATOR_TABLE.write(operators(profile.key_averages(), device=device), out_dir / files.PROFILE_OPERATORS)
    steps = breakdown(spans(profile.events()))
    files.BREAKDOWN_TABLE.write(steps, out_dir / files.PROFILE_BREAKDOWN)
    describe(out_dir, steps)


def describe(out_dir: Path, steps: pd.DataFrame) -> None:
    mean = steps.groupby("phase", sort=False)["seconds"].mean()
    shares = ", ".join(f"{name} {share:.0%}" for name, share in (mean / mean.sum()).items())
    log.info("profile: %d step(s), %.3g s a step: %s", steps["step"].nunique(), mean.sum(), shares)
    log.info(
        "profile: the trace %s opens in %s (or chrome://tracing), and in TensorBoard: tensorboard --logdir %s "
        "(pip install torch-tb-profiler); %s, %s",
        out_dir / files.PROFILE_TRACE,
        PERFETTO,
        out_dir,
        out_dir / files.PROFILE_OPERATORS,
        out_dir / files.PROFILE_BREAKDOWN,
    )


def operators(averages, *, device: bool) -> pd.DataFrame:
    """The operators by self time (the device's on a GPU), named ranges left out: they are no operators."""
    rows = [
        {
            "name": item.key,
            "calls": item.count,
            "self_cpu_s": item.self_cpu_time_total / 1e6,
            "self_device_s": item.self_device_time_total / 1e6 if device else None,
            "total_cpu_s": item.cpu_time_total / 1e6,
            "total_device_s": item.device_time_total / 1e6 if device else None,
        }
        for item in averages
        if not item.is_user_annotation and item.key not in (ranges.STEP, *ranges.PHASES)
    ]
    table = files.OPERATOR_TABLE.frame(rows)
    return table.sort_values("self_device_s" if device else "self_cpu_s", ascending=False).head(TOP_OPERATORS)


@dataclass(frozen=True)
class Span:
    """One range or operator of the profile: its name, start and end (µs), and thread."""

    name: str
    start: float
    end: float
    thread: int = 0


def is_collective(name: str) -> bool:
    lower = name.lower()
    return any(word in lower for word in COLLECTIVES) or lower.startswith(("nccl", "gloo:", "c10d::"))


def spans(events) -> list[Span]:
    """The steps, the phases (on the host) and the collectives (on any thread or device) among the profile's events."""
    named = {ranges.STEP, *ranges.PHASES}
    return [
        Span(event.name, event.time_range.start, event.time_range.end, event.thread)
        for event in events
        if (event.name in named and event.device_type == DeviceType.CPU) or is_collective(event.name)
    ]


def breakdown(found: list[Span]) -> pd.DataFrame:
    """Each step's seconds per phase and share of the step: every instant of a step is a collective's (gradient
    communication) when one runs, else the phase's the host is in, else ``other``; so the shares add up to 1."""
    steps = sorted((span for span in found if span.name == ranges.STEP), key=lambda span: span.start)
    rows = []
    for number, step in enumerate(steps, start=1):
        inside = [
            Span(span.name, max(span.start, step.start), min(span.end, step.end), span.thread)
            for span in found
            if span.name != ranges.STEP and span.start < step.end and span.end > step.start
        ]
        phases = [span for span in inside if span.name in ranges.PHASES and span.thread == step.thread]
        collectives = [span for span in inside if span.name not in ranges.PHASES]
        seconds = dict.fromkeys((*ranges.PHASES, ranges.OTHER), 0.0)
        cuts = sorted({step.start, step.end, *(t for span in inside for t in (span.start, span.end))})
        for low, high in zip(cuts, cuts[1:]):
            seconds[_owner((low + high) / 2, phases, collectives)] += (high - low) / 1e6
        length = (step.end - step.start) / 1e6
        rows += [
            {"step": number, "phase": name, "seconds": value, "share": value / length if length else 0.0}
            for name, value in seconds.items()
        ]
    if not rows:
        raise UserError("the profile holds no training step: were the timed steps run under the profiler?")
    return files.BREAKDOWN_TABLE.frame(rows)


def _owner(instant: float, phases: list[Span], collectives: list[Span]) -> str:
    if any(span.start <= instant < span.end for span in collectives):
        return ranges.COMMUNICATION
    around = [span for span in phases if span.start <= instant < span.end]
    return max(around, key=lambda span: span.start).name if around else ranges.OTHER
