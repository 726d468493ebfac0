"""Data-parallel training behind one interface: :class:`Backend` (one process), :class:`DDP`, :class:`Horovod`.

The training loop asks its backend to wrap the model and optimiser, to tell it when gradients
must be synchronised, to average a number over ranks and to gather predictions. It never
branches on the backend itself; each backend is a small class that says only how it differs
from one process.

Ranks come from the launcher's environment (:func:`mammoscale.plan.launch.ranks_from_env`:
torchrun's or SLURM's variables), or from ``horovodrun`` for Horovod; ranks ``srun`` started on
several nodes meet at the rendezvous the job's process holds (:mod:`mammoscale.train.rendezvous`).
With none of them a backend runs as a world of one, which is how the single-process tests
exercise the ``ddp`` and ``horovod`` code paths.

Gradient accumulation: DDP skips the all-reduce on all but the last micro-batch of a step
(``no_sync``); Horovod's ``DistributedOptimizer`` counts ``backward_passes_per_step``.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mammoscale.errors import UserError
from mammoscale.plan.launch import (
    BACKENDS,
    HOROVOD_MISSING,
    first_host,
    horovod_env_from_slurm,
    interface_of_host,
    local_world_from_env,
    ranks_from_env,
)
from mammoscale.train import devices
from mammoscale.train.rendezvous import STORE

log = logging.getLogger(__name__)


class Backend:
    """One process, and the interface every backend implements."""

    name = "none"

    def __init__(self, device: torch.device, rank: int = 0, world: int = 1, local_rank: int = 0, local_world: int = 1):
        self.device, self.rank, self.world, self.local_rank = device, rank, world, local_rank
        self.local_world = local_world
        """The ranks on this node, which share its CPUs and memory."""
        self.placement: list[dict] = []
        """Where each rank runs, in rank order (:func:`placement`), once :func:`init` has asked them."""

    @classmethod
    def start(cls, device_request: str, timeout_s: int) -> Backend:
        return cls(devices.choose(device_request, 0))

    @property
    def primary(self) -> bool:
        return self.rank == 0

    def wrap_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def wrap_optimizer(
        self, optimizer: torch.optim.Optimizer, model: nn.Module, grad_accum: int
    ) -> torch.optim.Optimizer:
        return optimizer

    def broadcast_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Rank 0's optimiser state to every rank, after a resume."""

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (batch norms' running statistics) to every rank, before evaluation: each rank updated its
        own on its own micro-batches, and every rank must score with the model rank 0 checkpoints."""

    def sync_gradients(self, model: nn.Module, last_micro_batch: bool):
        """The context of one micro-batch's backward pass."""
        return contextlib.nullcontext()

    def synchronize(self, optimizer: torch.optim.Optimizer) -> None:
        """After a step's last backward pass: wait for the gradients' collectives the backend has not awaited yet
        (Horovod's; DDP's all-reduce ends inside the backward pass). Its own named range in a profile."""

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimiser step, the gradients synchronised (:meth:`synchronize`)."""
        optimizer.step()

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        """After an optimiser step: the gradients are freed (set to None) until the next backward pass."""
        optimizer.zero_grad(set_to_none=True)

    def step_end(self, loss: float, stop: bool) -> tuple[float, bool]:
        """The step's loss averaged over the ranks, and whether any rank was asked to stop (:mod:`.stopping`): one
        small all-reduce a step, so that every rank stops after the same step."""
        if self.world == 1:
            return float(loss), bool(stop)
        total, stops = self._sum([float(loss), float(stop)])
        return total / self.world, stops > 0

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        return [obj] if self.world == 1 else self._gather(obj)

    def barrier(self) -> None:
        if self.world > 1:
            self._barrier()

    def close(self) -> None:
        """Leave the process group."""

    # the collectives of a world of several ranks; a single process is its own world

    def _sum(self, values: list[float]) -> list[float]:
        return values

    def _gather(self, obj) -> list:
        return [obj]

    def _barrier(self) -> None:
        pass


class DDP(Backend):
    """torch DistributedDataParallel: NCCL on GPUs, Gloo on CPUs."""

    name = "ddp"

    @classmethod
    def start(cls, device_request: str, timeout_s: int) -> DDP:
        rank, world, local_rank = ranks_from_env()
        device = devices.choose(device_request, local_rank)
        timeout = datetime.timedelta(seconds=timeout_s)
        kind = "nccl" if device.type == "cuda" else "gloo"
        if STORE in os.environ and world > 1:
            # several nodes: every rank joins the store the job's process holds (mammoscale.train.rendezvous)
            host, _, port = os.environ[STORE].rpartition(":")
            store = torch.distributed.TCPStore(host, int(port), world, is_master=False, timeout=timeout)
            torch.distributed.init_process_group(kind, store=store, rank=rank, world_size=world, timeout=timeout)
            log.info("ddp: rank %d of %d (local rank %d) on %s, store at %s", rank, world, local_rank, device, host)
            return cls(device, rank, world, local_rank, local_world_from_env(world))
        if "MASTER_ADDR" not in os.environ:
            if "SLURM_JOB_NODELIST" in os.environ and world > 1:
                os.environ["MASTER_ADDR"] = first_host(os.environ["SLURM_JOB_NODELIST"])
                os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", 0)) % 20000))
            elif world == 1:
                os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(_free_port())
            else:
                raise UserError(
                    "backend ddp with several ranks needs MASTER_ADDR/MASTER_PORT (torchrun sets them) "
                    "or SLURM_JOB_NODELIST (srun sets it)"
                )
        os.environ.setdefault("MASTER_PORT", "29500")
        torch.distributed.init_process_group(kind, rank=rank, world_size=world, timeout=timeout)
        log.info("ddp: rank %d of %d (local rank %d) on %s", rank, world, local_rank, device)
        return cls(device, rank, world, local_rank, local_world_from_env(world))

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """Wrapping broadcasts rank 0's weights. The gradients are views of DDP's all-reduce buckets
        (``gradient_as_bucket_view``), so they take no second copy of the parameters' size, as long as
        they stay views (:meth:`zero_grad`; :mod:`mammoscale.plan.memory`)."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model.to(self.device), device_ids=ids, gradient_as_bucket_view=True)

    def broadcast_buffers(self, model: nn.Module) -> None:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)

    def sync_gradients(self, model: nn.Module, last_micro_batch: bool):
        """All-reduce only on the last micro-batch of a step."""
        return contextlib.nullcontext() if last_micro_batch else model.no_sync()

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero the gradients in place: they stay views of the buckets, which DDP holds anyway.

        Freed instead (``set_to_none``), the next micro-batch under ``no_sync`` would accumulate into new
        gradients beside the buckets until the synchronised one copies them in: a second 4 bytes per
        parameter at the peak of every step with accumulation (measured exactly by
        :func:`mammoscale.train.memory.measure_step`, ``tests/test_memory.py``)."""
        optimizer.zero_grad(set_to_none=False)

    def close(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def _sum(self, values: list[float]) -> list[float]:
        on = self.device if self.device.type == "cuda" else torch.device("cpu")
        tensor = torch.tensor(values, dtype=torch.float64, device=on)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def _gather(self, obj) -> list:
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def _barrier(self) -> None:
        torch.distributed.barrier()


class Horovod(Backend):
    """Horovod: rank 0's weights broadcast, gradients averaged by its DistributedOptimizer."""

    name = "horovod"

    @classmethod
    def start(cls, device_request: str, timeout_s: int) -> Horovod:
        os.environ.setdefault("HOROVOD_GLOO_TIMEOUT_SECONDS", str(timeout_s))
        # ranks srun started on several nodes: their places from SLURM, the interface from the host's address
        from_slurm = horovod_env_from_slurm()
        if from_slurm and "HOROVOD_GLOO_IFACE" not in os.environ:
            from_slurm["HOROVOD_GLOO_IFACE"] = interface_of_host() or ""
        os.environ.update(from_slurm)
        hvd = _horovod()
        hvd.init()
        return cls(
            devices.choose(device_request, hvd.local_rank()), hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size()
        )

    def wrap_model(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        _horovod().broadcast_parameters(model.state_dict(), root_rank=0)
        return model

    def wrap_optimizer(
        self, optimizer: torch.optim.Optimizer, model: nn.Module, grad_accum: int
    ) -> torch.optim.Optimizer:
        """A new optimiser over the same parameters: a checkpoint loads into it, not into ``optimizer``."""
        hvd = _horovod()
        return hvd.DistributedOptimizer(
            optimizer, named_parameters=model.named_parameters(), backward_passes_per_step=grad_accum, op=hvd.Average
        )

    def synchronize(self, optimizer: torch.optim.Optimizer) -> None:
        """Wait for the allreduces the gradients' hooks started during the backward passes."""
        optimizer.synchronize()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The step without synchronising again (Horovod's recipe for work between the two: ``skip_synchronize``)."""
        with optimizer.skip_synchronize():
            optimizer.step()

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        """Horovod's optimiser takes no arguments; it frees the gradients (torch's default)."""
        optimizer.zero_grad()

    def broadcast_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """After a resume only: a fresh optimiser has no state, and Horovod would create it with a
        zero-gradient step, which shifts Adam's step count."""
        if optimizer.state_dict()["state"]:
            _horovod().broadcast_optimizer_state(optimizer, root_rank=0)

    def broadcast_buffers(self, model: nn.Module) -> None:
        buffers = dict(model.named_buffers())
        if buffers:
            _horovod().broadcast_parameters(buffers, root_rank=0)

    def close(self) -> None:
        _horovod().shutdown()

    def _sum(self, values: list[float]) -> list[float]:
        hvd = _horovod()
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        return hvd.allreduce(tensor, op=hvd.Sum).tolist()

    def _gather(self, obj) -> list:
        return _horovod().allgather_object(obj)

    def _barrier(self) -> None:
        _horovod().join()


BACKEND_CLASSES = {cls.name: cls for cls in (Backend, DDP, Horovod)}
assert tuple(BACKEND_CLASSES) == BACKENDS, "mammoscale.plan.launch.BACKENDS names every backend"


def init(backend: str, device_request: str, timeout_s: int = 600) -> Backend:
    """Join the job's process group (if any, its collectives bounded by ``timeout_s``); choose this rank's device;
    learn where every rank runs (:attr:`Backend.placement`)."""
    if backend not in BACKEND_CLASSES:
        raise UserError(f"distributed backend must be one of {', '.join(BACKEND_CLASSES)}, not {backend!r}")
    started = BACKEND_CLASSES[backend].start(device_request, timeout_s)
    near = devices.bind_near_gpu(started.device, started.local_rank, started.local_world)
    started.placement = started.gather({**placement(started), **near})
    return started


def placement(backend: Backend) -> dict:
    """Where this rank runs: its host, its place there, its device and the GPUs SLURM gave its node."""
    return {
        "rank": backend.rank,
        "host": socket.gethostname(),
        "local_rank": backend.local_rank,
        "device": str(backend.device),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_node_gpus": os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, outside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _horovod():
    try:
        import horovod.torch as hvd
    except ImportError:
        raise UserError(HOROVOD_MISSING) from None
    return hvd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
