"""The exact peak memory of one training step, measured: what :mod:`mammoscale.plan.memory` predicts.

:func:`measure_step` runs one optimiser step of a cell's model exactly as the training loop does
(bf16 autocast, micro-batches of uint8 tiles turned into the model's input on the device, the loss
divided by the accumulation steps, AdamW's step, gradients set to None) after a first step has
created the optimiser's state, and returns the peak bytes of live tensors during it:

- ``live`` (any device): a ``TorchDispatchMode`` (:class:`LiveTensors`) that sees every tensor an
  operator returns, counts the bytes of each new storage once, and uncounts them when the storage
  is freed (a weakref finaliser). Views and in-place results share an input's storage and are not
  new. What exists before the step (parameters, AdamW's state) is the starting count. This is the
  same quantity as CUDA's ``max_memory_allocated`` without the allocator's rounding, and it does not
  depend on the machine.
- ``fake=True`` runs the step on fake tensors (``FakeTensorMode``: shapes, dtypes and the autograd
  graph without data or compute), so that cells far beyond this machine's memory are measured in
  seconds; the parameters are real (initialisation is data-dependent), everything the step makes is
  fake. A test holds fake and real measurements equal where both fit.
- On CUDA, ``cuda_max_allocated`` is also reported: the caching allocator's peak over the same step.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from mammoscale import tasks
from mammoscale.tasks import BREAST_CANCER
from mammoscale.train import batches, losses, models
from mammoscale.train.backends import BACKEND_CLASSES, unwrap
from mammoscale.train.optim import autocast_for, optimizer_for


class LiveTensors(TorchDispatchMode):
    """Bytes of the storages alive now (``live``) and at most (``peak``) while the mode is active.

    Starts from ``base`` bytes (the tensors that exist already); counts each storage an operator
    returns that is not one of its inputs' storages and not a view or in-place result.
    """

    def __init__(self, base: int = 0, *, existing=()):
        super().__init__()
        self.live = self.peak = base
        self._sizes: dict[int, int] = {}
        self._existing = {id(t.untyped_storage()) for t in existing}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        aliases = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        returns = func._schema.returns
        outputs = tree_flatten(out)[0]
        for index, tensor in enumerate(outputs):
            if not isinstance(tensor, torch.Tensor):
                continue
            if len(returns) == len(outputs) and returns[index].alias_info is not None:
                continue  # a view or an in-place result: an input's storage
            storage = tensor.untyped_storage()
            key = id(storage)
            if key in aliases or key in self._sizes or key in self._existing or not storage.nbytes():
                continue
            self._sizes[key] = storage.nbytes()
            self.live += storage.nbytes()
            weakref.finalize(storage, self._free, key)
        self.peak = max(self.peak, self.live)
        return out

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key)


@dataclass(frozen=True)
class Measured:
    """Bytes of one training step: the state before it, and the peaks of live tensors during it."""

    state: int
    """Parameters and AdamW's state (what lives between steps)."""
    peak: int
    """The step's peak of live tensors, the state included."""
    forward_backward: int
    """The peak during the forward and backward passes, the state included."""
    cuda_max_allocated: int | None = None
    """On CUDA: the allocator's peak over the step (``max_memory_allocated``), state included."""


def measure_step(
    family: str,
    attention: str,
    model_size: str,
    *,
    image_size: int,
    patch_size: int | None,
    channels: int = 3,
    precision: str = "bf16",
    micro_batch: int = 1,
    grad_accum: int = 2,
    device: str | torch.device = "cpu",
    fake: bool = False,
    backend: str = "none",
    set_to_none: bool | None = None,
    task: str = BREAST_CANCER.name,
) -> Measured:
    """The peak memory of one optimiser step of ``grad_accum`` micro-batches of ``micro_batch`` images.

    ``backend="ddp"``: the model wrapped as the training's DDP backend wraps it, in a gloo process group
    of one rank (made here unless one exists), micro-batches before the last under ``no_sync``, the
    gradients zeroed as that backend zeroes them (``set_to_none`` overrides it, to measure the other
    choice); DDP's all-reduce buckets, alive between steps whatever ``zero_grad`` does, count in ``state``.
    Real tensors only (DDP cannot wrap fake ones)."""
    if backend not in ("none", "ddp"):
        raise ValueError(f"measure_step measures backends none and ddp, not {backend!r}")
    if fake and backend == "ddp":
        raise ValueError("DDP cannot wrap fake tensors: measure a ddp step on real ones")
    device = torch.device(device)
    with _process_group(backend == "ddp"):
        torch.manual_seed(0)
        runner = BACKEND_CLASSES[backend](device)
        model = runner.wrap_model(
            models.build(
                family,
                attention,
                model_size,
                image_size=image_size,
                patch_size=patch_size,
                channels=channels,
                outputs=tasks.task(task).outputs,
            )
        )
        return _measure(
            model,
            runner,
            precision=precision,
            channels=channels,
            tiles=torch.zeros(micro_batch, image_size, image_size, dtype=torch.uint8),
            grad_accum=grad_accum,
            kernel=models.kernel_context(attention, device),
            fake=fake,
            set_to_none=set_to_none,
            task=tasks.task(task),
        )


def _measure(model, runner, *, precision, channels, tiles, grad_accum, kernel, fake, set_to_none, task) -> Measured:
    device = runner.device
    optimizer = optimizer_for(unwrap(model), 1e-4, 0.05)
    autocast = autocast_for(precision, device)
    labels = losses.random_targets(task, len(tiles))
    buckets: dict[int, int] = {}
    fake_mode = contextlib.nullcontext()
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode

        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)

    def step(phases: LiveTensors | None = None) -> int | None:
        for micro in range(grad_accum):
            with runner.sync_gradients(model, micro == grad_accum - 1), kernel, autocast():
                inputs, targets = batches.to_device(tiles, labels, channels, device)
                logits = model(inputs)
                (losses.loss(task, logits, targets) / grad_accum).backward()
                del inputs, targets, logits
        if runner.name == "ddp":  # the gradients are views of the buckets after a synced pass
            buckets.clear()
            buckets.update(
                {p.grad.untyped_storage().data_ptr(): p.grad.untyped_storage().nbytes() for p in model.parameters()}
            )
        forward_backward = phases.peak if phases else None
        optimizer.step()
        if set_to_none is None:
            runner.zero_grad(optimizer)
        else:
            optimizer.zero_grad(set_to_none=set_to_none)
        return forward_backward

    with fake_mode:
        step()  # creates AdamW's state (and DDP's buckets)
        if runner.name == "ddp":
            step()  # DDP rebuilds its buckets in the order the gradients became ready, once, in its second step
        held = [*model.parameters(), *_optimizer_tensors(optimizer)]
        state = _storage_bytes(held) + sum(buckets.values())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        with LiveTensors(state, existing=held) as live:
            forward_backward = step(live)
        cuda_peak = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            cuda_peak = int(torch.cuda.max_memory_allocated(device))
    return Measured(state=state, peak=live.peak, forward_backward=forward_backward, cuda_max_allocated=cuda_peak)


@contextlib.contextmanager
def _process_group(needed: bool):
    """A gloo process group of one rank for the enclosed code, unless one exists already."""
    if not needed or torch.distributed.is_initialized():
        yield
        return
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [value for state in optimizer.state.values() for value in state.values() if torch.is_tensor(value)]


def _storage_bytes(tensors) -> int:
    storages = {id(t.untyped_storage()): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())
