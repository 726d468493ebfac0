"""The training loop of one prepared cell: optimiser steps, epochs with checkpoints, and validation.

Everything a run has done lives in its :class:`Progress` (what a checkpoint saves and a resume
restores); everything it trains with lives in its :class:`~mammoscale.train.cell.Run`, made
whole before the first step. The loop never branches on the backend or the precision: it asks
the run's backend and enters the run's autocast.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from mammoscale import files, tasks
from mammoscale.plan.launch import STOP_SIGNAL
from mammoscale.train import batches, checkpoint, devices, energy, losses, models, ranges, scores, stopping
from mammoscale.train.backends import unwrap
from mammoscale.train.optim import learning_rate

log = logging.getLogger("mammoscale.train")

PROGRESS_EVERY_S = 60.0
"""A progress line in the log at most this often, during long epochs."""


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the cell cannot continue."""


@dataclass
class Progress:
    """What a run has done and found so far; a checkpoint holds the part that a resume needs."""

    params: int | None = None
    kernel: str | None = None
    """The attention kernel(s) observed during the first step."""
    data_on_device: bool | None = None
    data_bytes: int | None = None
    """Bytes of the training split held on the device: excluded from the step's peak memory."""
    loader_workers: int | None = None
    micro_batch: int | None = None
    """The micro-batch the probe settled on (:mod:`mammoscale.train.probe`); None before it ran."""
    micro_batch_retries: list[int] = field(default_factory=list)
    """The micro-batches the probe found out of memory, largest first."""
    epochs_done: int = 0
    steps_done: int = 0
    epoch_steps: int = 0
    """Steps done in the epoch under way: a checkpoint taken mid-epoch resumes after them."""
    epoch_elapsed: float = 0.0
    """Seconds the epoch under way ran before this process (a resume mid-epoch), and at a checkpoint."""
    resumed_from: int | None = None
    resumed_step: int | None = None
    """The optimiser step the run resumed after (None: it started afresh)."""
    loss_curve: list[float] = field(default_factory=list)
    epoch_times: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    wait_times: list[float] = field(default_factory=list)
    energy_j: float | None = None
    """Joules the training loop used, every rank's device (:mod:`.energy`); None where not measured."""
    energy_source: str | None = None
    """Where ``energy_j`` comes from: ``nvml`` (the GPUs), ``rapl`` (the CPU sockets) or None."""
    last_report: float = field(default_factory=time.monotonic)
    last_checkpoint: float = field(default_factory=time.monotonic)

    def state(self) -> dict:
        return {
            "epoch": self.epochs_done,
            "step": self.steps_done,
            "epoch_step": self.epoch_steps,
            "epoch_elapsed": self.epoch_elapsed,
            "loss_curve": self.loss_curve,
            "epoch_times": self.epoch_times,
        }

    def resume(self, state: dict) -> None:
        self.epochs_done = self.resumed_from = int(state["epoch"])
        self.steps_done = self.resumed_step = int(state["step"])
        self.epoch_steps = int(state.get("epoch_step", 0))  # a checkpoint of an epoch's end has none
        self.epoch_elapsed = float(state.get("epoch_elapsed", 0.0))
        self.loss_curve = [float(x) for x in state["loss_curve"]]
        self.epoch_times = [float(x) for x in state["epoch_times"]]


def train(run, progress: Progress) -> None:
    """Throughput mode: the planned steps; full mode: the remaining epochs, from the step a checkpoint holds, with a
    checkpoint after each epoch and every ``checkpoint_every_min`` minutes. Asked to stop (:mod:`.stopping`), the
    ranks stop after the same step and rank 0 writes its checkpoint: :class:`~.stopping.Interrupted`. The energy the
    loop used is measured on every rank and added up (:mod:`.energy`)."""
    with energy.Meter(run.device, run.backend.local_rank) as meter:
        _train(run, progress)
    progress.energy_j, progress.energy_source = energy.total(run.backend, meter.joules, meter.source)


def _train(run, progress: Progress) -> None:
    s = run.settings
    if s.mode == "throughput":
        if _throughput(run, progress):
            raise stopping.Interrupted(
                f"stopped after step {progress.steps_done} when asked (a throughput cell starts over)"
            )
        return
    for epoch in range(progress.epochs_done, s.epochs):
        started = time.perf_counter() - progress.epoch_elapsed
        done = progress.epoch_steps
        stream = iter(run.batches.epoch(epoch, skip=done * (s.global_batch // run.backend.world)))
        if _steps(run, progress, stream, run.schedule.steps_per_epoch - done, started=started):
            progress.epoch_elapsed = devices.now(run.device) - started
            _checkpoint(run, progress)
            run.backend.barrier()
            kept = "its checkpoint written" if s.checkpoint else "no checkpoint (train.checkpoint is off)"
            at = f"step {progress.steps_done} ({progress.epoch_steps} of epoch {epoch + 1})"
            raise stopping.Interrupted(f"stopped when asked after {at}, {kept}")
        progress.epoch_times.append(devices.now(run.device) - started)
        progress.epochs_done, progress.epoch_steps, progress.epoch_elapsed = epoch + 1, 0, 0.0
        log.info(
            "epoch %d/%d: %.1f s, last loss %.4f",
            epoch + 1,
            s.epochs,
            progress.epoch_times[-1],
            progress.loss_curve[-1],
        )
        _checkpoint(run, progress)
        run.backend.barrier()


def _throughput(run, progress: Progress) -> bool:
    """The warm-up steps, then the timed ones, under a profiler when a profile run armed one (:func:`.ranges.window`);
    True when the ranks agreed to stop."""
    stream, started, total = _forever(run.batches), time.perf_counter(), run.schedule.total_steps
    warm = min(total, max(1, run.settings.timing_warmup_steps))  # the steps the record leaves out (at least one)
    if _steps(run, progress, stream, warm, started=started):
        return True
    with ranges.window():
        return _steps(run, progress, stream, total - warm, started=started)


def _checkpoint(run, progress: Progress) -> None:
    """Rank 0 writes what a resume needs, the step it stands at included (full mode with ``checkpoint``)."""
    if run.settings.mode == "full" and run.settings.checkpoint and run.backend.primary:
        checkpoint.save(
            run.out_dir,
            {
                "fingerprint": run.fingerprint,
                **progress.state(),
                "model": unwrap(run.model).state_dict(),
                "optimizer": run.optimizer.state_dict(),
            },
        )
    progress.last_checkpoint = time.monotonic()


def _forever(source: batches.Batches):
    epoch = 0
    while True:
        yield from source.epoch(epoch)
        epoch += 1


def _steps(run, progress: Progress, stream, steps: int, *, started: float) -> bool:
    """``steps`` optimiser steps; True when the ranks agreed to stop after one of them (``started``: when the epoch
    began, for a checkpoint taken on the way)."""
    s, schedule, backend = run.settings, run.schedule, run.backend
    criterion = functools.partial(losses.loss, tasks.task(s.task))
    run.model.train()
    for _ in range(steps):
        lr = learning_rate(
            progress.steps_done,
            total=schedule.total_steps,
            warmup=schedule.warmup_steps,
            base=s.lr,
            min_fraction=s.min_lr_fraction,
            scale=s.lr_scale,
        )
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        with ranges.phase(ranges.STEP):
            step_started = devices.now(run.device)
            step_loss, waited = _micro_batches(run, progress, stream, criterion)
            with ranges.phase(ranges.COMMUNICATION):
                backend.synchronize(run.optimizer)
            with ranges.phase(ranges.OPTIMISER_STEP):
                backend.step(run.optimizer)
                backend.zero_grad(run.optimizer)
            with ranges.phase(ranges.COMMUNICATION):
                value, stop = backend.step_end(float(step_loss), run.stop.requested)
            progress.step_times.append(devices.now(run.device) - step_started)
        progress.wait_times.append(waited)
        progress.steps_done += 1
        progress.epoch_steps += 1
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"the training loss became {value} at step {progress.steps_done} (lr {lr:.3g}); "
                "lower lr or use fp32 to find the cause"
            )
        progress.loss_curve.append(value)
        _report(run, progress)
        if stop:
            asked = "here" if run.stop.requested else "on another rank"
            log.warning(
                "SIG%s (asked %s): stopping after step %d, with a checkpoint", STOP_SIGNAL, asked, progress.steps_done
            )
            return True
        if time.monotonic() - progress.last_checkpoint >= 60 * s.checkpoint_every_min:
            progress.epoch_elapsed = devices.now(run.device) - started
            _checkpoint(run, progress)
    return False


def _micro_batches(run, progress: Progress, stream, criterion) -> tuple:
    """One step's forward and backward passes, a micro-batch at a time: its loss, and the seconds spent waiting for
    input. Each phase is a named range (:mod:`.ranges`; nothing unless a run asks for them)."""
    step_loss, waited = 0.0, 0.0
    for micro in range(run.grad_accum):
        with ranges.phase(ranges.DATA_WAIT):
            asked = time.perf_counter()
            tiles, labels = next(stream)
            waited += time.perf_counter() - asked
        inputs, labels = batches.to_device(tiles, labels, run.settings.channels, run.device)
        observe = _observe_kernel(progress) if progress.kernel is None else contextlib.nullcontext()
        with observe, run.kernel(), run.backend.sync_gradients(run.model, micro == run.grad_accum - 1):
            with ranges.phase(ranges.FORWARD):
                with run.autocast():
                    logits = run.model(inputs)
                loss = criterion(logits, labels) / run.grad_accum
            with ranges.phase(ranges.BACKWARD):
                loss.backward()
        step_loss += loss.detach()
    return step_loss, waited


@contextlib.contextmanager
def _observe_kernel(progress: Progress):
    record: dict = {}
    with models.attention_kernels(record):
        yield
    progress.kernel = record["kernel"]


def _report(run, progress: Progress) -> None:
    if time.monotonic() - progress.last_report < PROGRESS_EVERY_S:
        return
    progress.last_report = time.monotonic()
    recent = progress.step_times[-20:]
    log.info(
        "step %d/%d: loss %.4f, %.2f img/s over the last %d step(s)",
        progress.steps_done,
        run.schedule.total_steps,
        progress.loss_curve[-1],
        run.settings.global_batch * len(recent) / sum(recent),
        len(recent),
    )


def evaluate(run) -> dict:
    """The final model's quality on the validation split (:mod:`.scores`: per breast, or per image and finding),
    each rank scoring a partition of the split; rank 0 writes the predictions."""
    if run.val is None:
        return scores.unscored()
    model, task = unwrap(run.model).eval(), tasks.task(run.settings.task)
    backend, micro = run.backend, run.settings.micro_batch
    backend.broadcast_buffers(model)  # a batch norm's statistics are rank 0's on every rank: one model is scored
    rows = batches.eval_rows(len(run.val), world=backend.world, rank=backend.rank)
    probabilities: list = []
    with torch.no_grad(), run.kernel():
        for start in range(0, len(rows), micro):
            tiles = torch.stack([run.val[i][0] for i in rows[start : start + micro]])
            with run.autocast():
                logits = model(batches.to_model_input(tiles, run.settings.channels, run.device))
            probabilities += losses.probabilities(task, logits).cpu().tolist()
    gathered = backend.gather((rows, probabilities))
    order = [i for part, _ in gathered for i in part]
    probs = np.asarray([p for _, part in gathered for p in part], dtype=np.float64)
    predictions, result = scores.score(task, run.val.index.iloc[order], probs)
    if backend.primary:
        scores.prediction_table(task).write(predictions, run.out_dir / files.PREDICTIONS)
    log.info(scores.describe(task, result))
    return result
