"""Batches of tiles from the cache, for training and evaluation, on any number of ranks.

Tiles leave the cache as uint8 and are turned into floats on the device
(:func:`to_model_input`), so a host-to-GPU copy moves a quarter of the bytes. Two ways to feed a
rank, with the same sample order:

- a ``DataLoader`` over the memory-mapped cache, with workers and pinned memory;
- the whole split held on the device as one uint8 tensor (no loader at all), when it fits.

The training order is ``DistributedSampler``'s: one seeded permutation per epoch, rank ``r``
taking every ``world``-th index. Over one optimiser step the ranks together see the same global
batch whatever the world size, which is what makes a 1-, 2- or 8-rank run the same experiment.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mammoscale import files
from mammoscale.cache import Tiles, open_tiles
from mammoscale.errors import UserError
from mammoscale.plan.launch import node_cpus
from mammoscale.plan.memory import split_bytes
from mammoscale.tasks import BREAST_CANCER, Task

log = logging.getLogger(__name__)

# uint8 -> roughly zero-mean, unit-range floats; fixed, so a cell never depends on data statistics
MEAN, SCALE = 0.5 * 255, 0.25 * 255


class Split(Dataset):
    """The tiles of one split (``train``/``val``/``test``): ``(uint8 (S, S) tensor, target)`` pairs, the target
    ``task``'s: the int label of a one-label task, a float32 ``(labels,)`` row of 0/1 (the tile index's columns
    ``task.labels``) of a task of several (:mod:`mammoscale.train.losses`)."""

    def __init__(self, tiles: Tiles, split: str, task: Task = BREAST_CANCER):
        self.tiles, self.task = tiles, task
        rows = np.flatnonzero(tiles.index["split"].to_numpy() == split)
        self.rows = rows
        self.index = tiles.index.iloc[rows].reset_index(drop=True)
        missing = [name for name in task.labels if name not in self.index.columns]
        if missing:
            raise UserError(
                f"the {files.size_label(tiles.image_size)} cache at {tiles.directory.parent} has no label column(s) "
                f"{', '.join(missing)}: it was not built for task {task.name}; point cache.root at a cache of a "
                f"{task.name} data source"
            )
        kind = np.float32 if task.multilabel else np.int64
        self.labels = self.index[list(task.labels)].to_numpy(dtype=kind).reshape(len(rows), -1)
        if not task.multilabel:
            self.labels = self.labels[:, 0]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        tile = torch.from_numpy(np.array(self.tiles[int(self.rows[i])]))
        return tile, torch.from_numpy(self.labels[i].copy()) if self.task.multilabel else int(self.labels[i])

    def positives(self) -> np.ndarray:
        """Positive examples of each label (one number for a one-label task)."""
        return self.labels.astype(bool).sum(axis=0)

    def nbytes(self) -> int:
        """Bytes of the split held on the device (tiles and labels), as the plan counts them."""
        return split_bytes(len(self), self.tiles.image_size)


def open_split(
    cache_root,
    image_size: int,
    split: str,
    *,
    min_size: int = 1,
    both_classes: bool = False,
    task: Task = BREAST_CANCER,
) -> Split:
    """The tiles of ``split``, their targets ``task``'s; refused when fewer than ``min_size``, or (``both_classes``)
    when one class is absent: a cancer classifier cannot learn, or be judged, without positive and negative breasts;
    a classifier of several findings, without one finding that has both (the others are left out of the mean AUROC,
    :mod:`.scores`)."""
    data = Split(open_tiles(cache_root, image_size), split, task)
    cache = files.size_label(image_size)
    if len(data) < min_size:
        raise UserError(f"the {split} split of the {cache} cache has {len(data)} tiles; at least {min_size} are needed")
    positive = data.positives()
    if both_classes and not ((positive > 0) & (positive < len(data))).any():
        found = (
            f"{int(positive)} positive {task.unit}(s) of {len(data)}"
            if positive.ndim == 0
            else f"no label with both classes among its {len(data)} {task.unit}s"
        )
        raise UserError(
            f"the {split} split of the {cache} cache has {found}: "
            f"training and its AUC need both classes. See {files.DECODE_ERRORS} and {files.EXCLUDED} for what was "
            "lost, or change manifest.split / manifest.seed"
        )
    return data


def to_model_input(tiles: torch.Tensor, channels: int, device: torch.device) -> torch.Tensor:
    """uint8 (B, S, S) -> float32 (B, channels, S, S) on ``device``, grey replicated into channels."""
    images = tiles.to(device, non_blocking=True).unsqueeze(1).float().sub_(MEAN).div_(SCALE)
    return images.expand(-1, channels, -1, -1) if channels > 1 else images


def to_device(tiles: torch.Tensor, labels: torch.Tensor, channels: int, device: torch.device):
    """A micro-batch's model input and labels on ``device``, both copied without blocking (from pinned
    memory the copies overlap the work already queued), before the forward pass."""
    return to_model_input(tiles, channels, device), labels.to(device, non_blocking=True)


@dataclass(frozen=True)
class LoaderPlan:
    """How many loader processes feed a rank, and how many batches each keeps ready."""

    workers: int
    prefetch: int | None
    """Batches per worker in flight (DataLoader's ``prefetch_factor``); None without workers."""


IN_FLIGHT_SHARE = 0.125
"""At most this share of the job's memory may sit in prefetched batches (shared memory, pinned)."""


def plan_loader(asked: int, *, cpus: int, local_ranks: int, batch_bytes: int, memory_bytes: int | None) -> LoaderPlan:
    """Workers and prefetch for one rank that neither oversubscribe the node's CPUs nor fill its memory.

    The ranks of a node share its CPUs: each keeps one for itself and may have the rest of its share
    as workers (at most ``asked``). Batches in flight on the node (ranks x workers x prefetch x batch)
    stay within :data:`IN_FLIGHT_SHARE` of the job's memory: prefetch drops first (to 1), then workers.
    """
    workers = max(0, min(asked, cpus // max(1, local_ranks) - 1))
    if workers == 0:
        return LoaderPlan(0, None)
    prefetch = 2
    if memory_bytes:
        budget = IN_FLIGHT_SHARE * memory_bytes

        def in_flight():
            return local_ranks * workers * prefetch * batch_bytes

        while in_flight() > budget and prefetch > 1:
            prefetch -= 1
        while in_flight() > budget and workers > 1:
            workers -= 1
    return LoaderPlan(workers, prefetch)


def node_resources(local_ranks: int = 1) -> tuple[int, int | None]:
    """The CPUs this node's ranks share (:func:`mammoscale.plan.launch.node_cpus`) and the job's memory in bytes
    (SLURM's ``SLURM_MEM_PER_NODE``, else the machine's)."""
    cpus = node_cpus(len(os.sched_getaffinity(0)), local_ranks)
    memory_mb = os.environ.get("SLURM_MEM_PER_NODE")
    if memory_mb and memory_mb.isdigit():
        return cpus, int(memory_mb) * 2**20
    try:
        return cpus, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return cpus, None


class EpochSampler(DistributedSampler):
    """``DistributedSampler``'s order for an epoch, from the ``skip``-th index of this rank's share on: an epoch resumed
    after the steps a checkpoint holds sees exactly the samples an uninterrupted one would, whatever the micro-batch
    (a step is ``global_batch / world`` of this rank's indices, on any number of ranks)."""

    skip = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return super().__len__() - self.skip


def train_sampler(data: Split, *, world: int, rank: int, seed: int) -> EpochSampler:
    return EpochSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)


class Batches:
    """Micro-batches of (uint8 tiles, labels) for one rank, epoch by epoch, from a loader or the device."""

    def __init__(
        self,
        data: Split,
        sampler: EpochSampler,
        *,
        micro_batch: int,
        device: torch.device,
        on_device: bool,
        loader: LoaderPlan,
        pin_memory: bool,
    ):
        self.data, self.sampler = data, sampler
        self.on_device = on_device
        self.plan = LoaderPlan(0, None) if on_device else loader
        self.pin_memory = pin_memory and device.type == "cuda"
        self.device_bytes = 0
        """Bytes of the split held on the device (the tiles and labels), not part of a step's peak."""
        if on_device:
            log.info("holding %d tiles (%.1f MiB) on %s: no data loader", len(data), data.nbytes() / 2**20, device)
            self.tiles = torch.from_numpy(np.stack([data.tiles[int(r)] for r in data.rows])).to(device)
            self.labels = torch.from_numpy(data.labels.copy()).to(device)
            self.device_bytes = self.tiles.nbytes + self.labels.nbytes
        self.resize(micro_batch)

    def resize(self, micro_batch: int) -> None:
        """Micro-batches of ``micro_batch`` tiles from now on (before the first epoch: the probe's choice)."""
        self.micro_batch = micro_batch
        if not self.on_device:
            self.loader = DataLoader(
                self.data,
                batch_size=micro_batch,
                sampler=self.sampler,
                drop_last=True,
                num_workers=self.plan.workers,
                prefetch_factor=self.plan.prefetch,
                pin_memory=self.pin_memory,
                persistent_workers=self.plan.workers > 0,
            )

    @classmethod
    def for_rank(
        cls, data: Split, s, *, world: int, rank: int, local_ranks: int, device: torch.device, on_device: bool
    ) -> Batches:
        """This rank's training micro-batches under a cell's settings ``s``: the split held on the device
        (``on_device``: the plan's decision, :func:`mammoscale.train.cell.holds_split`), else a loader whose
        workers and prefetch fit the node (:func:`plan_loader`, said in the log)."""
        cpus, memory = node_resources(local_ranks)
        batch_bytes = s.micro_batch * data.tiles.image_size**2
        loader = plan_loader(
            s.loader_workers, cpus=cpus, local_ranks=local_ranks, batch_bytes=batch_bytes, memory_bytes=memory
        )
        if not on_device:
            log.info(
                "data loader: %d worker(s) per rank (asked %d; %d CPU(s) shared by %d rank(s) on this node), "
                "prefetch %s batch(es) of %.1f MB: %.1f MB in flight on the node of %s",
                loader.workers,
                s.loader_workers,
                cpus,
                local_ranks,
                loader.prefetch or 0,
                batch_bytes / 1e6,
                local_ranks * loader.workers * (loader.prefetch or 0) * batch_bytes / 1e6,
                f"{memory / 1e9:.1f} GB" if memory else "unknown memory",
            )
        sampler = train_sampler(data, world=world, rank=rank, seed=s.seed)
        return cls(
            data,
            sampler,
            micro_batch=s.micro_batch,
            device=device,
            on_device=on_device,
            loader=loader,
            pin_memory=s.pin_memory,
        )

    def first(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's first ``n`` tiles and labels, from where the run holds them (the probe's micro-batch)."""
        if self.on_device:
            return self.tiles[:n], self.labels[:n]
        return torch.stack([self.data[i][0] for i in range(n)]), torch.from_numpy(self.data.labels[:n].copy())

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The micro-batches of ``epoch``, after the first ``skip`` of this rank's samples (a resumed epoch)."""
        self.sampler.set_epoch(epoch)
        self.sampler.skip = skip
        if not self.on_device:
            yield from self.loader
            return
        order = torch.tensor(list(iter(self.sampler)), device=self.tiles.device)
        for start in range(0, len(order) - self.micro_batch + 1, self.micro_batch):
            chosen = order[start : start + self.micro_batch]
            yield self.tiles[chosen], self.labels[chosen]


def eval_rows(n: int, *, world: int, rank: int) -> list[int]:
    """This rank's share of an evaluation set: a partition, no sample repeated or dropped."""
    return list(range(rank, n, world))
