"""Instruments behind ``bench/``: one training step timed, and one cell run in a process of its own.

- :func:`measure_step` times training steps of a ViT on random input and reports the peak memory
  those steps add (CUDA max allocated; on a CPU the peak RSS above the RSS before the first step).
  Each call is meant to run in a fresh process (:func:`measure_in_subprocess`) so that neither
  the allocator's cache nor an earlier OOM colours the next measurement.
- :func:`bare_steps` times a bare training loop (the cell's model, optimiser, autocast, micro-batch and
  accumulation on random tensors already in memory; no loader, probe, record or backend): what the
  harness's steps are measured against (``bench/harness.py``), in a process of its own with
  :func:`bare_in_subprocess`.
- :func:`run_in_process` runs ``python -m mammoscale.train`` for one cell (as the workflow's job
  does) and returns its record, or a ``failed`` record when the process wrote none.
- :func:`random_cache` writes a cache of random tiles in the real format, for benchmarks about
  compute (the data path is measured elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from mammoscale import cache, files, records, tasks
from mammoscale.config import defaults
from mammoscale.plan.families import seq_len
from mammoscale.tasks import BREAST_CANCER
from mammoscale.train import devices, losses, models
from mammoscale.train.optim import autocast_for, optimizer_for

# one training step, timed


def measure_step(
    attention: str,
    *,
    family: str = "xtransformers",
    size: str = "vit-tiny",
    image_size: int,
    patch_size: int,
    batch: int = 1,
    steps: int = 5,
    warmup: int = 2,
    precision: str = "bf16",
    device: str = "cpu",
) -> dict:
    """Median step time and the peak memory the steps add, for one model on random input."""
    dev = devices.choose(device, 0)
    torch.manual_seed(0)
    model = models.build(family, attention, size, image_size=image_size, patch_size=patch_size, channels=1).to(dev)
    optimizer = optimizer_for(model, 1e-4, 0.05)
    autocast = autocast_for(precision, dev)
    images = torch.randn(batch, 1, image_size, image_size, device=dev)
    labels = losses.random_targets(BREAST_CANCER, batch, dev)  # the attention benchmark's model: two logits
    record = {}
    peak = devices.PeakMemory(dev)
    devices.synchronize(dev)
    baseline = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else devices.rss()
    peak.reset()
    times = []
    for step in range(warmup + steps):
        started = devices.now(dev)
        probe = models.attention_kernels(record) if step == 0 else contextlib.nullcontext()
        with probe, models.kernel_context(attention, dev):
            with autocast():
                logits = model(images)
            losses.loss(BREAST_CANCER, logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(devices.now(dev) - started)
    return {
        "attention": attention,
        "kernel": record["kernel"],
        "tokens": seq_len(family, image_size, patch_size),
        "step_time_s": statistics.median(times[warmup:]),
        "peak_mem_bytes": peak.peak() - baseline,
    }


def measure_in_subprocess(**kwargs) -> dict:
    """:func:`measure_step` in a fresh Python process; ``{"status": "oom"|"failed", ...}`` if it dies."""
    proc = subprocess.run(
        [sys.executable, "-m", "mammoscale.train.bench", "step", json.dumps(kwargs)], capture_output=True, text=True
    )
    if proc.returncode == 0:
        return {"status": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}
    status = "oom" if "out of memory" in proc.stderr or "can't allocate memory" in proc.stderr else "failed"
    return {"status": status, "attention": kwargs["attention"], "message": proc.stderr.strip().splitlines()[-1:]}


# a bare training loop, timed

_TRAIN = defaults()["train"]


def bare_steps(
    *,
    family: str = "xtransformers",
    attention: str = "flash",
    size: str = "vit-tiny",
    image_size: int,
    patch_size: int | None,
    channels: int = _TRAIN["channels"],
    task: str = BREAST_CANCER.name,
    micro_batch: int = 2,
    global_batch: int = 2,
    steps: int = 10,
    warmup: int = 2,
    precision: str = "fp32",
    device: str = "cpu",
    lr: float = _TRAIN["lr"],
    weight_decay: float = _TRAIN["weight_decay"],
    seed: int = _TRAIN["seed"],
) -> list[float]:
    """The seconds of each of ``steps`` optimiser steps after ``warmup`` untimed ones, of a bare training loop.

    What a cell's step does, and nothing else: the model of :func:`mammoscale.train.models.build`, AdamW of
    :func:`~mammoscale.train.optim.optimizer_for`, the forward pass under :func:`~mammoscale.train.optim.autocast_for`,
    ``global_batch / micro_batch`` micro-batches a step (their losses divided by that number, as the loop does),
    the gradients freed after the step. Its input is random tensors already on the device: no loader, no probe,
    no learning-rate schedule, no kernel observation, no record, no backend. A step is timed as the loop times
    it (:func:`mammoscale.train.devices.now`: after the device's queued work has finished)."""
    if global_batch % micro_batch:
        raise ValueError(f"global batch {global_batch} is not a multiple of micro-batch {micro_batch}")
    dev = devices.choose(device, 0)
    torch.manual_seed(seed)
    predicts = tasks.task(task)  # a cell's ``task`` setting: the model's outputs, the loss and its targets
    shape = {"image_size": image_size, "patch_size": patch_size, "channels": channels, "outputs": predicts.outputs}
    model = models.build(family, attention, size, **shape).to(dev)
    model.train()
    optimizer = optimizer_for(model, lr, weight_decay)
    autocast = autocast_for(precision, dev)
    accum = global_batch // micro_batch
    inputs = [torch.randn(micro_batch, channels, image_size, image_size, device=dev) for _ in range(accum)]
    labels = [losses.random_targets(predicts, micro_batch, dev) for _ in range(accum)]
    times = []
    for _ in range(warmup + steps):
        started = devices.now(dev)
        for images, targets in zip(inputs, labels):
            with models.kernel_context(attention, dev), autocast():
                logits = model(images)
            (losses.loss(predicts, logits, targets) / accum).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(devices.now(dev) - started)
    return times[warmup:]


def bare_in_subprocess(**kwargs) -> list[float]:
    """:func:`bare_steps` in a fresh Python process (``python -m mammoscale.train.bench bare JSON``); raises
    ``RuntimeError`` with the process's last line of error when it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "mammoscale.train.bench", "bare", json.dumps(kwargs)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the bare loop failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["step_times_s"]


# one cell, in its own process


def run_in_process(cell: dict, out_dir: Path | str) -> dict:
    """``python -m mammoscale.train`` for ``cell`` into ``out_dir``; its record, or a failed one."""
    out_dir = Path(out_dir)
    args = [f"{key}={'null' if value is None else value}" for key, value in cell.items()]
    proc = subprocess.run(
        [sys.executable, "-m", "mammoscale.train", "--out", str(out_dir), *args], capture_output=True, text=True
    )
    record = records.read_cell_record(out_dir)
    if record is None:
        record = {**cell, "status": "failed", "message": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
        files.write_text(json.dumps(record) + "\n", out_dir / files.FAILED_METRICS)
    return record


def random_cache(root: Path, image_size: int, n_tiles: int, *, seed: int = 0) -> Path:
    """A one-shard cache of ``n_tiles`` random tiles, all in the train split, in the real cache format."""
    index = files.under(root, files.TILE_INDEX, image_size=image_size)
    if index.is_file():
        return Path(root)
    shard = files.under(root, files.TILES_SHARD, image_size=image_size, shard=0)
    rng = np.random.default_rng(seed)
    with files.atomic_array(shard, (n_tiles, image_size, image_size)) as tiles:
        for i in range(n_tiles):
            tiles[i] = rng.integers(0, 256, (image_size, image_size), dtype=np.uint8)
    stored = np.load(shard, mmap_mode="r")
    digest = files.sha256_file(shard)
    cache.write_index(
        files.TILE_TABLE.frame(
            {
                "breast_id": f"{i}_L",
                "patient_id": i,
                "laterality": "L",
                "label": i % 2,
                "split": "train",
                "shard": 0,
                "file": shard.name,
                "offset": i,
                "crc32": files.crc32(stored[i]),
                "shard_sha256": digest,
            }
            for i in range(n_tiles)
        ),
        index,
        files.under(root, files.TILE_INDEX_CHECK, image_size=image_size),
    )
    return Path(root)


def markdown(table) -> str:
    """A pipe table (no extra dependency): numbers to 3 significant figures, missing values as '-'."""

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mammoscale.train.bench")
    parser.add_argument("what", choices=["step", "bare"])
    parser.add_argument("kwargs", help="measure_step's (step) or bare_steps's (bare) keyword arguments as JSON")
    args = parser.parse_args(argv)
    kwargs = json.loads(args.kwargs)
    if args.what == "bare":
        print(json.dumps({"step_times_s": bare_steps(**kwargs)}))
    else:
        print(json.dumps(measure_step(**kwargs)))


if __name__ == "__main__":
    main()
