"""Train one grid cell from the tile cache and record what it measured in ``metrics.json``.

``run_cell(cell, out_dir)`` is the one entry: the command line (``python -m mammoscale.train``)
and the workflow's job (:func:`mammoscale.train.job.run_job`) call it. A cell is a ViT (family,
attention kernel, size) at one image and patch size, trained with AdamW (linear warm-up, then
cosine), bf16 autocast, a constant global batch made of micro-batches x ranks x accumulation
steps, on one of the data-parallel backends of :mod:`mammoscale.train.backends`.

Two modes: ``full`` trains ``epochs`` epochs and evaluates per breast on the validation split
(the study's 20-epoch runs); ``throughput`` runs ``timing_warmup_steps + timed_steps`` optimiser
steps and stops (2048 px with patch 8 for 20 epochs is days of GPU time; its speed is not).

What a cell can end as (``status``): ``ok``; ``oom`` (an allocation failed: a result for the
figures, exit code 0); ``skipped`` (the kernel asked for cannot run on this machine, exit 0);
``failed`` (the loss became NaN or infinite, or an unexpected error; exit 1). Every status writes
a schema-valid metrics.json.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mammoscale import cache, files, logs, records, tasks
from mammoscale.config import defaults
from mammoscale.errors import UserError
from mammoscale.plan import sizing
from mammoscale.plan.families import seq_len
from mammoscale.plan.settings import Settings
from mammoscale.train import batches, checkpoint, devices, loop, models, outcome, probe, profiling, record, stopping
from mammoscale.train.backends import Backend, init, unwrap
from mammoscale.train.loop import NonFiniteLoss, Progress
from mammoscale.train.optim import autocast_for, optimizer_for

log = logging.getLogger("mammoscale.train")

EXIT_CODES = {records.OK: 0, records.OOM: 0, records.SKIPPED: 0, records.FAILED: 1}
"""Exit codes of a cell's process (one rank, or rank 0 once every rank ended well): an OOM is a result."""
RANK_ENDED_CELL = 3
"""The exit code of a rank of several whose own outcome (out of memory, a failure, a skip) ends the cell: its
launcher stops the other ranks at once, and the job builds the cell's record from the ranks' outcomes."""
HEADROOM = defaults()["plan"]["memory_headroom"]
"""The share of a GPU a cell run by hand (``data_on_device: auto``) plans the split on the device beside."""


@dataclass(frozen=True)
class Schedule:
    """How many optimiser steps a run takes, and how many of them warm the learning rate up."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    @classmethod
    def of(cls, s: Settings, train_tiles: int) -> Schedule:
        per_epoch = train_tiles // s.global_batch
        total = per_epoch * s.epochs if s.mode == "full" else s.timing_warmup_steps + s.timed_steps
        return cls(per_epoch, total, math.ceil(s.warmup_fraction * total))


@dataclass(frozen=True)
class Run:
    """Everything one rank trains with, made whole by :func:`prepare` before the first step."""

    settings: Settings
    backend: Backend
    out_dir: Path
    fingerprint: str
    val: batches.Split | None
    schedule: Schedule
    grad_accum: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    batches: batches.Batches
    autocast: Callable
    kernel: Callable
    """A fresh kernel-forcing context for each use (``sdpa_kernel`` contexts cannot be re-entered)."""
    stop: stopping.Stop
    """Set when this rank is asked to stop ahead of a time limit (:mod:`.stopping`)."""

    @property
    def device(self) -> torch.device:
        return self.backend.device


def _open_splits(s: Settings) -> tuple[batches.Split, batches.Split | None]:
    """The train split and (a full cell's) val split, staged to scratch first if asked; a full cell needs both
    classes in each."""
    root = cache.stage(s.cache_root, s.image_size, s.local_scratch) if s.local_scratch else s.cache_root
    full, task = s.mode == "full", tasks.task(s.task)
    train = batches.open_split(root, s.image_size, "train", min_size=s.global_batch, both_classes=full, task=task)
    return train, batches.open_split(root, s.image_size, "val", both_classes=True, task=task) if full else None


def prepare(
    s: Settings, backend: Backend, out_dir: Path, progress: Progress, peak: devices.PeakMemory, stop: stopping.Stop
) -> Run:
    """Open the data, build the model, settle the micro-batch on the device (:mod:`.probe`), wrap the model
    and optimiser, resume from a checkpoint: a :class:`Run`."""
    device = backend.device
    train_split, val = _open_splits(s)
    schedule = Schedule.of(s, len(train_split))

    torch.manual_seed(s.seed)
    np.random.seed(s.seed)
    model = _model(s)
    progress.params = models.params(model)
    kernel = functools.partial(models.kernel_context, s.attention, device)
    kernel()  # refuses a kernel this machine cannot run before any work
    model = model.to(device)
    feed = _feed(s, train_split, backend, progress)
    autocast = autocast_for(s.precision, device)
    micro = probe.settle(
        model,
        feed,
        s,
        backend,
        autocast=autocast,
        kernel=kernel,
        per_rank=s.global_batch // backend.world,
        retries=progress.micro_batch_retries,
    )
    if micro != s.micro_batch:
        s = dataclasses.replace(s, micro_batch=micro)
        feed.resize(micro)
    progress.micro_batch = micro
    grad_accum = s.grad_accum(backend.world)

    peak.reset()
    model = backend.wrap_model(model)
    # Horovod's wrapper is a new optimiser over the same parameters: load a checkpoint into it, not before
    optimizer = backend.wrap_optimizer(optimizer_for(unwrap(model), s.lr, s.weight_decay), model, grad_accum)
    fingerprint = checkpoint.fingerprint(s.training_identity())
    if s.mode == "full" and s.checkpoint:  # rank 0 alone sets a bad one aside; every rank skips it
        _resume(checkpoint.load(out_dir, fingerprint, set_aside=backend.primary), model, optimizer, progress)
    backend.broadcast_optimizer_state(optimizer)
    _describe(s, backend, progress, grad_accum, schedule)
    return Run(
        settings=s,
        backend=backend,
        out_dir=out_dir,
        fingerprint=fingerprint,
        val=val,
        schedule=schedule,
        grad_accum=grad_accum,
        model=model,
        optimizer=optimizer,
        batches=feed,
        autocast=autocast,
        kernel=kernel,
        stop=stop,
    )


def _model(s: Settings) -> torch.nn.Module:
    """The cell's network, freshly initialised (or from its pretrained file), with its task's outputs."""
    return models.build(
        s.family,
        s.attention,
        s.model_size,
        image_size=s.image_size,
        patch_size=s.patch_size,
        channels=s.channels,
        outputs=tasks.task(s.task).outputs,
        weights=s.weights,
    )


def _feed(s: Settings, train_split: batches.Split, backend: Backend, progress: Progress) -> batches.Batches:
    """This rank's training micro-batches, the split already where the plan put it (:func:`holds_split`)."""
    feed = batches.Batches.for_rank(
        train_split,
        s,
        world=backend.world,
        rank=backend.rank,
        local_ranks=backend.local_world,
        device=backend.device,
        on_device=holds_split(s, train_split, backend),
    )
    progress.data_on_device, progress.data_bytes = feed.on_device, feed.device_bytes
    progress.loader_workers = feed.plan.workers
    return feed


def holds_split(s: Settings, split: batches.Split, backend: Backend) -> bool:
    """Whether this rank holds the training split on its device: the plan's decision (``yes``, ``no``); for a
    cell run by hand (``auto``), the plan's rule (:func:`mammoscale.plan.sizing.place_data`) on the device itself,
    its memory x the default ``plan.memory_headroom`` as the limit."""
    on_gpu, limit = backend.device.type == "cuda", None
    if on_gpu and s.data_on_device == "auto":
        limit = int(HEADROOM * torch.cuda.mem_get_info(backend.device)[1])
    placed = sizing.place_data(
        s.data_on_device,
        on_gpu=on_gpu,
        peak=record.predicted_peak(s, s.micro_batch, backend),
        data_bytes=split.nbytes(),
        limit=limit,
    )
    return bool(placed)


def _describe(s: Settings, backend: Backend, progress: Progress, grad_accum: int, schedule: Schedule) -> None:
    tokens = seq_len(s.family, s.image_size, s.patch_size)
    log.info(
        "cell %s/%s %s: %s %s, %s, %.1fM parameters, %s; global batch %d = %d micro x %d rank(s) x %d accumulation; "
        "%d steps (%d per epoch)",
        s.hardware,
        s.variant,
        files.cell_label(s.image_size, s.patch_size),
        s.family,
        s.attention,
        "no tokens (a CNN)" if tokens is None else f"{tokens} tokens",
        progress.params / 1e6,
        s.task,
        s.global_batch,
        s.micro_batch,
        backend.world,
        grad_accum,
        schedule.total_steps,
        schedule.steps_per_epoch,
    )


def _resume(state: dict | None, model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress) -> None:
    if state is None:
        return
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    progress.resume(state)
    log.info("resuming from the checkpoint of epoch %d (step %d)", progress.epochs_done, progress.steps_done)


@dataclass(frozen=True)
class Ended:
    """How one rank ended: its record (rank 0's is the cell's; None when interrupted), and its exit code."""

    record: dict | None
    primary: bool
    code: int


def run_cell(cell: dict, out_dir: Path | str) -> dict:
    """Run one cell from its resolved settings; write ``metrics.json`` (and ``train.log``, checkpoints)
    into ``out_dir`` from rank 0; return the metrics (on every rank). A cell stopped ahead of a time limit
    (:mod:`.stopping`) raises :class:`~mammoscale.train.stopping.Interrupted`: run it again to resume."""
    ended = run_rank(cell, out_dir)
    if ended.code == stopping.EXIT_CODE:
        raise stopping.Interrupted(
            f"the cell in {out_dir} stopped when asked (SIGUSR1), its checkpoint written: run it again to resume"
        )
    return ended.record


def run_rank(cell: dict, out_dir: Path | str) -> Ended:
    """:func:`run_cell` on this rank: its record (rank 0: the cell's, agreed with every rank that ended well; a
    rank whose own outcome ends the cell: its own, reported at once), and the exit code that tells its launcher.
    A stop is listened for from the start (:mod:`.stopping`): a warning that comes while the ranks meet is kept."""
    settings = Settings.from_dict(cell)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with stopping.on_signal(stopping.Stop()) as stop:
        backend = init(settings.backend, settings.device, settings.collective_timeout_s)
        if not backend.primary:
            logging.getLogger("mammoscale").setLevel(logging.WARNING)
        ended = None
        try:
            with (
                logs.also_to(out_dir / files.TRAIN_LOG if backend.primary else None),
                profiling.from_env(out_dir, backend),
            ):
                ended = _rank(settings, backend, out_dir, stop)
            return ended
        finally:
            # after any rank ended the cell, the others may be gone: never wait for them in a collective shutdown
            if backend.world == 1 or (ended is not None and ended.record and ended.record["status"] == records.OK):
                backend.close()


def _rank(settings: Settings, backend: Backend, out_dir: Path, stop: stopping.Stop) -> Ended:
    settings.grad_accum(backend.world)
    outcome.forget(out_dir, backend.rank)
    try:
        result, error = _outcome(settings, backend, out_dir, stop)
    except stopping.Interrupted as exc:
        outcome.report(out_dir, backend.rank, outcome.INTERRUPTED, str(exc))
        return Ended(None, backend.primary, stopping.EXIT_CODE)
    if backend.world > 1 and result["status"] != records.OK:
        return _end_the_cell(result, error, backend, out_dir)
    if backend.world > 1:
        result = _agree(result, backend, out_dir, settings.collective_timeout_s)
    if backend.primary:
        _write(result, out_dir)
    if error is not None:
        raise error
    return Ended(result, backend.primary, EXIT_CODES[result["status"]] if backend.primary else 0)


def _write(result: dict, out_dir: Path) -> None:
    records.write_metrics(result, out_dir / files.METRICS)
    said = f" ({result['message']})" if result["message"] else ""
    log.info("%s: status %s%s", out_dir / files.METRICS, result["status"], said)


def _end_the_cell(result: dict, error: Exception | None, backend: Backend, out_dir: Path) -> Ended:
    """This rank's own outcome ends a cell of several ranks: report it, with its record, and leave at once with a
    non-zero code, so that the launcher stops the others. They may be waiting for this rank in a collective, and
    under NCCL one whose peer has gone never returns (until the watchdog's timeout: minutes of every GPU)."""
    outcome.report(out_dir, backend.rank, result["status"], result["message"], result)
    if error is not None:
        log.error("rank %d: unexpected error", backend.rank, exc_info=error)
    log.warning(
        "rank %d ended %s (%s): ending the cell; the launcher stops the other ranks",
        backend.rank,
        result["status"],
        result["message"],
    )
    return Ended(result, backend.primary, RANK_ENDED_CELL)


def _agree(result: dict, backend: Backend, out_dir: Path, wait_s: int) -> dict:
    """A rank that ended well says so; rank 0 takes the cell's outcome from every rank's (:mod:`.outcome`)."""
    outcome.report(out_dir, backend.rank, result["status"], result["message"])
    if not backend.primary:
        return result
    status, message = outcome.agree(out_dir, backend.world, result["status"], result["message"], wait_s=wait_s + 60)
    return {**result, "status": status, "message": message}


def _outcome(settings: Settings, backend: Backend, out_dir: Path, stop: stopping.Stop) -> tuple[dict, Exception | None]:
    """Train and evaluate; the record of how it ended, whatever the status, and an unexpected error to
    raise once the record is written (a problem the user can fix is raised at once, with no record)."""
    progress = Progress()
    peak = devices.PeakMemory(backend.device)

    def result(status: str, message: str | None = None, quality: dict | None = None) -> dict:
        return record.metrics(settings, backend, progress, status=status, message=message, peak=peak, quality=quality)

    try:
        run = prepare(settings, backend, out_dir, progress, peak, stop)
        loop.train(run, progress)
        quality = loop.evaluate(run)
    except models.KernelUnavailable as exc:
        log.warning("skipped: %s", exc)
        return result(records.SKIPPED, str(exc)), None
    except NonFiniteLoss as exc:
        log.error("%s", exc)
        return result(records.FAILED, str(exc)), None
    except UserError:
        raise
    except Exception as exc:
        if models.kernel_refused(exc):
            message = f"the {settings.attention} kernel cannot run here: {str(exc).splitlines()[0][:300]}"
            log.error("skipped: %s", message)
            return result(records.SKIPPED, message), None
        if not devices.is_oom(exc):
            return result(records.FAILED, f"{type(exc).__name__}: {exc}"), exc
        message = str(exc).splitlines()[0][:500]
        log.warning("out of memory after %d step(s): %s", progress.steps_done, message)
        return result(records.OOM, message), None
    return result(records.OK, None, quality), None
