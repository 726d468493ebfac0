"""Data-parallel training behind one interface: ``none``, ``ddp`` (torch) or ``horovod``.

The training loop asks a :class:`Context` to wrap the model and optimiser, to tell it when
gradients must be synchronised, to average a number over ranks and to gather predictions. It
never branches on the backend itself.

Ranks come from the launcher's environment: torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``), SLURM under ``srun`` (``SLURM_PROCID``, ``SLURM_NTASKS``,
``SLURM_LOCALID``, the first host of ``SLURM_JOB_NODELIST`` as master), or ``horovodrun``/
``mpirun`` for Horovod. With none of them a backend runs as a world of one, which is how the
single-process tests exercise the ``ddp`` and ``horovod`` code paths.

Gradient accumulation: DDP skips the all-reduce on all but the last micro-batch of a step
(``no_sync``); Horovod's ``DistributedOptimizer`` counts ``backward_passes_per_step``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import subprocess
from dataclasses import dataclass, field

import torch
from torch import nn

from mammoscale.errors import UserError

log = logging.getLogger(__name__)

BACKENDS = ("none", "ddp", "horovod")


@dataclass
class Context:
    backend: str
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def primary(self) -> bool:
        return self.rank == 0

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """DDP wraps (and broadcasts rank 0's weights); Horovod broadcasts rank 0's weights."""
        model = model.to(self.device)
        if self.backend == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        elif self.backend == "horovod":
            import horovod.torch as hvd

            hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        return model

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module,
                       grad_accum: int) -> torch.optim.Optimizer:
        if self.backend != "horovod":
            return optimizer
        import horovod.torch as hvd

        return hvd.DistributedOptimizer(optimizer, named_parameters=unwrap(model).named_parameters(),
                                        backward_passes_per_step=grad_accum, op=hvd.Average)

    def broadcast_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Horovod: rank 0's optimiser state to all, after a resume (a fresh optimiser has none to share;
        Horovod would otherwise take a zero-gradient step to create it, which shifts Adam's step count)."""
        if self.backend == "horovod" and optimizer.state_dict()["state"]:
            import horovod.torch as hvd

            hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def sync_gradients(self, model: nn.Module, last_micro_batch: bool):
        """The context for one micro-batch's backward: DDP all-reduces only on the last of a step."""
        if self.backend == "ddp" and not last_micro_batch:
            return model.no_sync()
        return contextlib.nullcontext()

    def mean(self, value: float) -> float:
        if self.world == 1:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self._collective_device())
        if self.backend == "horovod":
            import horovod.torch as hvd

            return float(hvd.allreduce(tensor, op=hvd.Average).item())
        torch.distributed.all_reduce(tensor)
        return float(tensor.item()) / self.world

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        if self.backend == "horovod":
            import horovod.torch as hvd

            return hvd.allgather_object(obj)
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1 and self.backend == "ddp":
            torch.distributed.barrier()
        elif self.world > 1 and self.backend == "horovod":
            import horovod.torch as hvd

            hvd.join()

    def close(self) -> None:
        if self.backend == "ddp" and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        elif self.backend == "horovod":
            import horovod.torch as hvd

            hvd.shutdown()

    def _collective_device(self) -> torch.device:
        return self.device if self.backend == "horovod" or self.device.type == "cuda" else torch.device("cpu")


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, outside a DistributedDataParallel wrapper."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def ranks_from_env(env=os.environ) -> tuple[int, int, int]:
    """(rank, world, local rank) from torchrun's or SLURM's variables; (0, 1, 0) when neither is set."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def hostnames(nodelist: str) -> list[str]:
    """The hosts of a SLURM node list: ``gpu[03-05,07],cpu1`` -> gpu03 gpu04 gpu05 gpu07 cpu1.

    ``scontrol show hostnames`` where SLURM is installed; otherwise the list is expanded here
    (prefix[ranges] groups, zero padding kept).
    """
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    hosts = []
    for prefix, ranges in re.findall(r"([^,\[]+)(?:\[([^\]]*)\])?,?", nodelist):
        if not ranges:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            width = len(low)
            hosts += [f"{prefix}{n:0{width}d}" for n in range(int(low), int(high or low) + 1)]
    if not hosts:
        raise UserError(f"cannot read the hosts of SLURM node list {nodelist!r}")
    return hosts


def first_host(nodelist: str) -> str:
    return hostnames(nodelist)[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init(backend: str, device_request: str) -> Context:
    """Join the job's process group (if any) and choose this rank's device."""
    from mammoscale import devices

    if backend not in BACKENDS:
        raise UserError(f"distributed backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "none":
        return Context("none", device=devices.choose(device_request, 0))
    if backend == "horovod":
        try:
            import horovod.torch as hvd
        except ImportError:
            raise UserError("backend horovod needs Horovod built against this torch: run `make horovod` "
                            "(README, 'Horovod')") from None
        hvd.init()
        device = devices.choose(device_request, hvd.local_rank())
        return Context("horovod", hvd.rank(), hvd.size(), hvd.local_rank(), device)
    rank, world, local_rank = ranks_from_env()
    if "MASTER_ADDR" not in os.environ:
        if "SLURM_JOB_NODELIST" in os.environ and world > 1:
            os.environ["MASTER_ADDR"] = first_host(os.environ["SLURM_JOB_NODELIST"])
            os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", 0)) % 20000))
        elif world == 1:
            os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(_free_port())
        else:
            raise UserError("backend ddp with several ranks needs MASTER_ADDR/MASTER_PORT (torchrun sets them) "
                            "or SLURM_JOB_NODELIST (srun sets it)")
    os.environ.setdefault("MASTER_PORT", "29500")
    device = devices.choose(device_request, local_rank)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    log.info("ddp: rank %d of %d (local rank %d) on %s", rank, world, local_rank, device)
    return Context("ddp", rank, world, local_rank, device)
