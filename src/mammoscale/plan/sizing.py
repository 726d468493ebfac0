"""Each cell's plan before it runs: its micro-batch, its predicted memory, whether it fits, what it costs.

A hardware profile's ``micro_batch`` is an upper bound (the study's numbers are for 512 px,
patch 16). Each cell takes the largest micro-batch that divides its images per rank (the global
batch over the ranks: accumulation keeps the global batch), is within the bound, and whose
predicted peak (:mod:`mammoscale.plan.memory`) is at most ``plan.memory_headroom`` of the
profile's ``device_memory_gib``. A cell that does not fit even at micro-batch 1 is *predicted out
of memory*: unless ``plan.submit_predicted_oom``, it is not submitted, and :func:`predicted_oom_record`
is its record, written without a GPU. Profiles without ``device_memory_gib`` (CPUs) take the largest
divisor within the bound.

The cost: training FLOPs (:mod:`mammoscale.plan.flops`) of the images a cell trains on, and the
GPU-hours they take at ``plan.mfu`` of the profile's ``peak_tflops``.

Torch-free: the Snakefile plans every cell when it is parsed.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass

from mammoscale import files, provenance, records, tasks
from mammoscale.dataset import chestxray14
from mammoscale.errors import UserError
from mammoscale.plan import flops, memory
from mammoscale.plan.families import seq_len
from mammoscale.plan.grid import Cell
from mammoscale.plan.launch import BACKEND_OF_LAUNCHER, ranks

RSNA_PATIENTS = 11_913
"""Patients of the RSNA Screening Mammography training set (54,706 images; the study's paper)."""
SIGNAL_MIN_S = 300
"""The least warning a cell gets before its time limit (:attr:`CellPlan.signal_before_limit_s`)."""


@dataclass(frozen=True)
class CellPlan:
    cell: Cell
    seq_len: int | None
    """Tokens a ViT attends over; None for a CNN."""
    mode: str
    device: str
    """``cuda``, or ``cpu`` for CPU profiles (and fake GPUs): what the memory is predicted for."""
    world_size: int
    micro_batch: int
    grad_accum: int
    predicted_peak_bytes: int
    """The training step's peak (the split held on the device not included, as in the record's peak)."""
    memory_limit_bytes: int | None
    """``plan.memory_headroom`` x ``device_memory_gib`` (GiB); None without a device memory (no memory planning)."""
    fits: bool
    data_bytes: int
    """The training split as a rank would hold it on the device (:func:`mammoscale.plan.memory.split_bytes`)."""
    data_on_device: bool | None
    """Where each rank holds the split (:func:`place_data`); None: decided on the device (no device memory given)."""
    submitted: bool
    flops_per_img: int
    steps: int
    images: int
    gpu_hours: float | None
    """GPU-hours of the training at ``mfu`` of the profile's peak; None on CPUs or without a peak."""
    predicted_hours: float | None
    """Wall-clock hours of the training: the GPU-hours shared by the cell's GPUs."""
    time_limit_hours: float
    """The profile's ``runtime_min``: one job's time limit."""
    mfu: float
    runs: int = 1
    """Times the cell trains: ``train.seeds`` for a full-mode (quality) cell, each seed a job of its own; 1 else.
    ``gpu_hours`` and ``predicted_hours`` are one run's."""

    @property
    def predicted_oom(self) -> bool:
        return not self.fits

    def row(self) -> dict:
        """The cell's row of ``plan.csv``."""
        return {
            **self.cell._asdict(),
            **{key: getattr(self, key) for key in files.PLAN_TABLE.columns if hasattr(self, key)},
        }

    @property
    def step_s(self) -> float:
        """One optimiser step's predicted seconds (0 where no hours are predicted: CPUs, no peak)."""
        return 3600 * self.predicted_hours / self.steps if self.predicted_hours and self.steps else 0.0

    def profile_runtime_min(self, profile: dict) -> int:
        """The time limit of this cell's profile job (``profile.*``): ``runtime_min`` for starting and writing the
        trace, plus twice its steps' predicted time, never past the cell's own limit."""
        steps_s = 2 * (profile["warmup_steps"] + profile["steps"]) * self.step_s
        return int(min(60 * self.time_limit_hours, profile["runtime_min"] + math.ceil(steps_s / 60)))

    @property
    def signal_before_limit_s(self) -> int:
        """How long before the time limit SLURM signals the cell to stop with a checkpoint (``--signal``): two of its
        predicted steps and two minutes to write the checkpoint, at least :data:`SIGNAL_MIN_S`, at most a quarter of
        the limit (SLURM sends it up to a minute early)."""
        return int(min(max(SIGNAL_MIN_S, 2 * self.step_s + 120), 3600 * self.time_limit_hours / 4))

    @property
    def data_setting(self) -> str:
        """The cell's ``data_on_device`` setting: the plan's decision, or ``auto`` for the device to decide."""
        return {True: "yes", False: "no", None: "auto"}[self.data_on_device]


def per_rank(global_batch: int, world: int, where: str) -> int:
    """Images per rank per optimiser step; a global batch the ranks cannot share is refused."""
    if global_batch % world:
        raise UserError(
            f"{where}: global batch {global_batch} cannot be shared by {world} rank(s); "
            f"make train.global_batch a multiple of {world}"
        )
    return global_batch // world


def place_data(asked: str, *, on_gpu: bool, peak: int, data_bytes: int, limit: int | None) -> bool | None:
    """Whether each rank holds the training split on its device: as ``asked`` (``yes``, ``no``); for ``auto``, on a
    GPU when the step's predicted ``peak`` and the split fit under ``limit`` together, never on a CPU, and None
    (the device decides, with its own memory as the limit) when no limit is known."""
    if asked in ("yes", "no"):
        return asked == "yes"
    if not on_gpu:
        return False
    if limit is None:
        return None
    return peak + data_bytes <= limit


def plan_cell(cell: Cell, settings: dict, profile: dict, plan: dict, *, train_breasts: int, seeds: int = 1) -> CellPlan:
    """The plan of ``cell`` whose resolved settings (``micro_batch`` not yet chosen) are ``settings``.

    The micro-batch comes first (it decides the speed the study measures), the split's place second: ``auto``
    holds it on the device only beside the chosen micro-batch's peak, never at the cost of a smaller micro-batch;
    ``yes`` plans the micro-batch with the split already held."""
    world = ranks(profile)
    images_per_rank = per_rank(settings["global_batch"], world, f"cell {cell.name}")
    on_gpu = profile["gpus_per_node"] > 0 and settings["device"] != "cpu"
    memory_gib = profile.get("device_memory_gib")
    limit = int(plan["memory_headroom"] * memory_gib * memory.GiB) if memory_gib else None
    data_bytes = memory.split_bytes(train_breasts, cell.image_size)
    asked = settings.get("data_on_device", "auto")

    shape = {
        "image_size": cell.image_size,
        "patch_size": cell.patch_size,
        "channels": settings["channels"],
        "outputs": outputs(settings),
    }

    def peak_of(micro_batch: int) -> int:
        return memory.step_peak(
            settings["family"],
            settings["attention"],
            settings["model_size"],
            **shape,
            precision=settings["precision"],
            micro_batch=micro_batch,
            device="cuda" if on_gpu else "cpu",
            backend=BACKEND_OF_LAUNCHER[profile["launcher"]],
        ).total

    step_limit = limit - data_bytes if limit is not None and asked == "yes" and on_gpu else limit
    chosen = memory.choose_micro_batch(images_per_rank, profile["micro_batch"], step_limit, peak_of)
    tokens = seq_len(settings["family"], cell.image_size, cell.patch_size)
    per_image = flops.train_flops_per_image(settings["family"], settings["model_size"], **shape)
    steps = _steps(settings, train_breasts)
    images = steps * settings["global_batch"]
    peak_tflops = profile.get("peak_tflops")
    gpu_hours = images * per_image / (plan["mfu"] * peak_tflops * 1e12) / 3600 if on_gpu and peak_tflops else None
    return CellPlan(
        cell=cell,
        seq_len=tokens,
        mode=settings["mode"],
        device="cuda" if on_gpu else "cpu",
        world_size=world,
        micro_batch=chosen.micro_batch,
        grad_accum=images_per_rank // chosen.micro_batch,
        predicted_peak_bytes=chosen.peak,
        memory_limit_bytes=limit,
        fits=chosen.fits,
        data_bytes=data_bytes,
        data_on_device=place_data(asked, on_gpu=on_gpu, peak=chosen.peak, data_bytes=data_bytes, limit=limit),
        submitted=chosen.fits or plan["submit_predicted_oom"],
        flops_per_img=per_image,
        steps=steps,
        images=images,
        gpu_hours=gpu_hours,
        predicted_hours=gpu_hours / world if gpu_hours is not None else None,
        time_limit_hours=profile["runtime_min"] / 60,
        mfu=plan["mfu"],
        runs=seeds if settings["mode"] == "full" else 1,
    )


def outputs(settings: dict) -> int:
    """The classifier's outputs of a cell's task (settings name a task only where it is not the default)."""
    return tasks.task(settings.get("task", tasks.BREAST_CANCER.name)).outputs


def _steps(settings: dict, train_breasts: int) -> int:
    if settings["mode"] == "throughput":
        return settings["timing_warmup_steps"] + settings["timed_steps"]
    return settings["epochs"] * (train_breasts // settings["global_batch"])


def nominal_train_breasts(config: dict) -> int:
    """``plan.train_breasts``, else the data source's nominal training examples: two breasts a patient of an RSNA
    source times the training split; a ChestX-ray14 source's train_val images times its training share
    (:func:`mammoscale.dataset.chestxray14.nominal_train_images`)."""
    if config["plan"]["train_breasts"]:
        return config["plan"]["train_breasts"]
    if tasks.source(config["data"]["source"]).layout == "chestxray14":
        return chestxray14.nominal_train_images(config)
    patients = config["synthetic"]["n_patients"] if config["data"]["source"] == "synthetic" else RSNA_PATIENTS
    return max(1, round(2 * patients * config["manifest"]["split"]["train"]))


def over_time_limit(plans, headroom: float) -> list[CellPlan]:
    """The submitted cells whose predicted hours pass ``headroom`` (``plan.runtime_headroom``) of their time limit."""
    return [plan for plan in plans if plan.submitted and (plan.predicted_hours or 0) > headroom * plan.time_limit_hours]


def time_limit_message(late: list[CellPlan], headroom: float) -> str:
    """One line naming the cells that cannot finish within their job, and the ways out."""
    named = "; ".join(
        f"{plan.cell.name} {plan.predicted_hours:.1f} h, {headroom * plan.time_limit_hours:.1f} h allowed"
        for plan in late[:3]
    )
    more = f" and {len(late) - 3} more" if len(late) > 3 else ""
    return (
        f"{len(late)} cell(s) would not finish within their SLURM time limit ({named}{more}; hours predicted at "
        f"plan.mfu {late[0].mfu:.0%} of the profile's peak_tflops, allowed plan.runtime_headroom x runtime_min): give "
        "the cell more nodes (a profile with nodes: 2 halves its hours), a longer runtime_min, or a smaller grid "
        "(fewer train.epochs, or grid sizes without it)"
    )


def oom_message(row: dict) -> str:
    return (
        f"predicted out of memory: {row['predicted_peak_bytes'] / memory.GiB:.1f} GiB at micro-batch 1, over the "
        f"{row['memory_limit_bytes'] / memory.GiB:.1f} GiB allowed (plan.memory_headroom x device_memory_gib); "
        "plan.submit_predicted_oom: true runs it to confirm"
    )


def predicted_oom_record(row: dict, settings: dict) -> dict:
    """The record (metrics.json) of a cell predicted out of memory and not submitted, from its row of
    ``plan.csv`` and its settings: status ``oom``, ``oom_basis: predicted``, nothing measured (every key the
    schema has and this does not set is empty: :func:`mammoscale.records.metrics_record`)."""
    return records.metrics_record(
        {
            "schema_version": records.METRICS_SCHEMA_VERSION,
            "status": records.OOM,
            "message": oom_message(row),
            "oom_basis": records.PREDICTED,
            "hardware": row["hardware"],
            "variant": row["variant"],
            "model": f"{settings['family']}/{settings['model_size']}",
            "attention": settings["attention"],
            "image_size": row["image_size"],
            "patch_size": row["patch_size"],
            "seq_len": row["seq_len"],
            "params": memory.parameters(
                settings["family"],
                settings["model_size"],
                image_size=row["image_size"],
                patch_size=row["patch_size"],
                channels=settings["channels"],
                outputs=outputs(settings),
            )[0],
            "mode": row["mode"],
            "epochs": 0,
            "steps": 0,
            "global_batch": settings["global_batch"],
            "micro_batch": row["micro_batch"],
            "micro_batch_planned": row["micro_batch"],
            "grad_accum": row["grad_accum"],
            "world_size": row["world_size"],
            "backend": settings["backend"],
            "peak_mem_kind": "cuda_max_allocated" if row["device"] == "cuda" else "cpu_peak_rss",
            "predicted_peak_bytes": row["predicted_peak_bytes"],
            "flops_per_img": row["flops_per_img"],
            "env": {
                "devices": [],
                "device_count": 0,
                "torch": provenance.version("torch") or "not installed",
                "cuda": None,
                "x_transformers": provenance.version("x-transformers"),
                **provenance.host(),
            },
            "config": settings,
        },
        complete=False,
    )


def write(rows: list[dict], table: str, predicted: dict[str, dict]) -> None:
    """``plan.csv`` from the plans' rows, and the record of each cell predicted out of memory and not
    submitted (``predicted``: its metrics.json path -> ``{"row": its row, "settings": its settings}``)."""
    files.PLAN_TABLE.write(files.PLAN_TABLE.frame(rows), table)
    for path, cell in predicted.items():
        records.write_metrics(predicted_oom_record(cell["row"], cell["settings"]), path)
    said = f"{summary(rows)}; every cell in {table}"
    logging.getLogger(__name__).info("%s", said)
    print(f"plan: {said}", file=sys.stderr)


def summary(rows: list[dict]) -> str:
    """The plan in a sentence: what is submitted, where the data lives, the longest cell against its limit."""
    submitted = [row for row in rows if row["submitted"]]
    held = sum(1 for row in submitted if row["data_on_device"])
    said = (
        f"{len(rows)} cells, {len(submitted)} submitted ({held} with their training split on the device), "
        f"{sum(1 for row in rows if not row['fits'])} predicted out of memory"
    )
    seeded = [row for row in submitted if row.get("runs", 1) > 1]
    if seeded:
        extra = sum((row["runs"] - 1) * (row["gpu_hours"] or 0) for row in seeded)
        said += (
            f"; train.seeds trains {len(seeded)} quality cell(s) {seeded[0]['runs']} times: "
            f"{sum(row['runs'] - 1 for row in seeded)} more jobs" + (f", {extra:,.0f} more GPU-hours" if extra else "")
        )
    timed = [row for row in submitted if row["predicted_hours"] is not None]
    if timed:
        longest = max(timed, key=lambda row: row["predicted_hours"] / row["time_limit_hours"])
        name = files.fill(files.CELL, **{key: longest[key] for key in Cell._fields})
        said += (
            f"; the closest to its time limit: {name}, {longest['predicted_hours']:.1f} h of "
            f"{longest['time_limit_hours']:.0f} h"
        )
    return said
