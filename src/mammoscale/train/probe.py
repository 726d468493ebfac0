"""Before the first timed step, on the device: the largest micro-batch that really fits, from the planned one down.

The plan (:mod:`mammoscale.plan.sizing`) chose the micro-batch from a memory model; the device has
the last word. :func:`settle` first creates AdamW's state (the optimiser's step on zero gradients at
learning rate 0, which leaves every weight as it is, by a throwaway optimiser) so that the probe
holds what a training step holds, then runs one forward and backward pass at the planned
micro-batch. On an allocation failure, or on a GPU when the pass left less than :data:`FREE_MARGIN`
of the device free (the device's used memory at the pass's peak: the allocator's reserve with its
fragments, and the CUDA context, NCCL's buffers and anything else outside it), it frees what the
pass held and tries the next smaller micro-batch that divides the rank's images per step: the
global batch stays, made up by more accumulation steps. Every rank probes, and every rank learns
which ranks ran out of memory: the ranks train with the same micro-batch, the largest at which all
fit. A cell is out of memory only when micro-batch 1 fails.

Nothing the probe does reaches the training: its gradients and its optimiser are dropped, its
random numbers are drawn from a forked generator, and the weights are untouched, so a run that
settles on micro-batch ``m`` trains exactly as a run planned at ``m``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

import torch
from torch import nn

from mammoscale.plan.memory import GiB, divisors
from mammoscale.train import batches, devices, losses
from mammoscale.train.optim import optimizer_for

log = logging.getLogger("mammoscale.train")

FREE_MARGIN = 0.03
"""The share of the GPU a micro-batch's pass must leave free at its peak (allocated bytes, the allocator's fragments,
the CUDA context and NCCL's buffers all counted): room for what allocates later, NCCL's buffers of the first
all-reduce among them. 2.4 GiB of an 80 GiB A100."""


class ProbeOutOfMemory(MemoryError):
    """Even micro-batch 1 does not fit on some rank: the cell is out of memory."""


def settle(
    model: nn.Module, feed, s, backend, *, autocast: Callable, kernel: Callable, per_rank: int, retries: list[int]
) -> int:
    """The micro-batch to train with (at most ``s.micro_batch``, dividing ``per_rank``); those that ran out of
    memory before it are appended to ``retries``, largest first (also when none fits).

    ``model``: unwrapped, on ``backend.device``; ``feed``: the run's :class:`~mammoscale.train.batches.Batches`,
    the training split already where the run holds it (on the device, its bytes are there during the probe, as
    during training); ``autocast`` and ``kernel``: the run's context factories.
    """
    device = backend.device
    failures: list[tuple[int, str]] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        optimizer = _with_state(model, s.weight_decay)
        try:
            for micro in divisors(per_rank, s.micro_batch):
                error = _attempt(model, feed, s.channels, device, micro, autocast=autocast, kernel=kernel)
                error = error or over_margin(devices.device_use(device))
                failures = [(rank, said) for rank, said in enumerate(backend.gather(error)) if said]
                if not failures:
                    if retries:
                        log.warning(
                            "training with micro-batch %d, planned %d (global batch %d kept by accumulation)",
                            micro,
                            s.micro_batch,
                            s.global_batch,
                        )
                    return micro
                retries.append(micro)
                log.warning("probe: micro-batch %d out of memory on %s", micro, _where(failures, backend))
        finally:
            del optimizer
            model.zero_grad(set_to_none=True)
            _release(device)
    rank, said = failures[0]
    prefix = "" if rank == backend.rank else f"rank {rank}: "
    raise ProbeOutOfMemory(
        f"{prefix}out of memory at every micro-batch down to 1 (tried {', '.join(map(str, retries))}): {said}"
    )


def over_margin(use: devices.DeviceUse | None, margin: float = FREE_MARGIN) -> str | None:
    """Why a pass that fitted still does not do (the device's used memory at its peak, the CUDA context, NCCL's
    buffers and the allocator's fragments included, left less than ``margin`` of it free), or None."""
    if use is None or use.within(margin):
        return None
    return (
        f"{use.used_peak / GiB:.1f} GiB of the device's {use.total / GiB:.1f} GiB used at the pass's peak "
        f"({use.reserved_peak / GiB:.1f} GiB reserved by the allocator, {use.outside / GiB:.1f} GiB outside it): "
        f"less than {margin:.0%} left free"
    )


def _where(failures: list[tuple[int, str]], backend) -> str:
    if backend.world == 1:
        return f"the device ({failures[0][1]})"
    return "; ".join(f"rank {rank} ({said})" for rank, said in failures)


def _with_state(model: nn.Module, weight_decay: float) -> torch.optim.Optimizer:
    """A throwaway AdamW whose state exists: one step on zero gradients at learning rate 0 (weights unchanged)."""
    optimizer = optimizer_for(model, 0.0, weight_decay)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    return optimizer


def _attempt(model, feed, channels, device, micro, *, autocast, kernel) -> str | None:
    """One forward and backward pass of ``micro`` training images: the allocation failure's first line, or None.

    The pass runs in a function of its own, so that what it held is freed when it returns or raises; on a GPU the
    allocator's peaks start from it (:func:`over_margin` reads them)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        _forward_backward(model, feed, channels, device, micro, autocast=autocast, kernel=kernel)
        error = None
    except Exception as exc:  # an allocation failure is an answer; anything else is raised
        if not devices.is_oom(exc):
            raise
        error = str(exc).splitlines()[0][:300]
    _release(device)
    return error


def _forward_backward(model, feed, channels, device, micro, *, autocast, kernel) -> None:
    inputs, labels = batches.to_device(*feed.first(micro), channels, device)
    with kernel(), autocast():
        logits = model(inputs)
    losses.loss(feed.data.task, logits, labels).backward()


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
