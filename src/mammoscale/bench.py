"""Measurements behind ``bench/``: the attention kernel's cost per training step, and the study's grid.

Two instruments, both measuring the real training code:

- :func:`measure_step` times training steps of a ViT on random input and reports the peak memory
  those steps add (CUDA max allocated; on a CPU the peak RSS above the RSS before the first step).
  Each call is meant to run in a fresh process (:func:`measure_in_subprocess`) so that neither
  the allocator's cache nor an earlier OOM colours the next measurement.
- :func:`run_grid` runs :func:`mammoscale.train.run_cell` in throughput mode for every cell of
  variant x image size x patch size, each in its own process, on a cache of random tiles, and
  tabulates throughput, memory, MFU, status and the speed-up of each variant over a baseline.
  Random tiles: the kernel comparison is about compute; the data path is measured elsewhere.
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
import pandas as pd
import torch

from mammoscale import cache, devices, models
from mammoscale.train import autocast, optimizer_for

# variant name -> (family, attention): the study's flash model, the same with materialised attention,
# and the study's baseline
GRID_VARIANTS = {
    "flash": ("xtransformers", "flash"),
    "materialised": ("xtransformers", "materialised"),
    "hf-eager": ("hf", "eager"),
}


# one training step, timed


def measure_step(attention: str, *, family: str = "xtransformers", size: str = "vit-tiny", image_size: int,
                 patch_size: int, batch: int = 1, steps: int = 5, warmup: int = 2, precision: str = "bf16",
                 device: str = "cpu") -> dict:
    """Median step time and the peak memory the steps add, for one model on random input."""
    dev = devices.choose(device, 0)
    torch.manual_seed(0)
    model = models.build(family, attention, size, image_size=image_size, patch_size=patch_size, channels=1).to(dev)
    optimizer = optimizer_for(model, 1e-4, 0.05)
    images = torch.randn(batch, 1, image_size, image_size, device=dev)
    labels = torch.randint(0, 2, (batch,), device=dev)
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
            with autocast(precision, dev):
                logits = model(images)
            torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(devices.now(dev) - started)
    return {"attention": attention, "kernel": record["kernel"], "tokens": models.seq_len(family, image_size, patch_size),
            "step_time_s": statistics.median(times[warmup:]), "peak_mem_bytes": peak.peak() - baseline}


def measure_in_subprocess(**kwargs) -> dict:
    """:func:`measure_step` in a fresh Python process; ``{"status": "oom"|"failed", ...}`` if it dies."""
    proc = subprocess.run([sys.executable, "-m", "mammoscale.bench", "step", json.dumps(kwargs)],
                          capture_output=True, text=True)
    if proc.returncode == 0:
        return {"status": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}
    status = "oom" if "out of memory" in proc.stderr or "can't allocate memory" in proc.stderr else "failed"
    return {"status": status, "attention": kwargs["attention"], "message": proc.stderr.strip().splitlines()[-1:]}


# the grid


def random_cache(root: Path, image_size: int, n_tiles: int, *, seed: int = 0) -> Path:
    """A one-shard cache of ``n_tiles`` random tiles, all in the train split, in the real cache format."""
    directory = cache.size_dir(root, image_size)
    if (directory / "index.csv").is_file():
        return Path(root)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    name = "shard0000.npy"
    with cache.atomic_array(directory / name, (n_tiles, image_size, image_size)) as tiles:
        for i in range(n_tiles):
            tiles[i] = rng.integers(0, 256, (image_size, image_size), dtype=np.uint8)
    stored = np.load(directory / name, mmap_mode="r")
    index = pd.DataFrame({
        "breast_id": [f"{i}_L" for i in range(n_tiles)], "patient_id": np.arange(n_tiles), "laterality": "L",
        "label": np.arange(n_tiles) % 2, "split": "train", "shard": 0, "file": name, "offset": np.arange(n_tiles),
        "crc32": [cache.crc32(stored[i]) for i in range(n_tiles)],
        "shard_sha256": cache.sha256_file(directory / name)})
    cache.atomic_csv(index[list(cache.TILE_INDEX_COLUMNS)], directory / "index.csv")
    return Path(root)


def micro_batch_for(tokens: int, token_budget: int, largest: int) -> int:
    """Images per micro-batch holding about ``token_budget`` tokens (1 at least, ``largest`` at most),
    a power of two so that it divides the global batch."""
    micro = max(1, min(largest, token_budget // tokens))
    return 1 << (micro.bit_length() - 1)


def grid_cells(*, sizes, patches, variants, model_size: str, token_budget: int, global_batch: int,
               warmup_steps: int, timed_steps: int, device: str, peak_tflops: float | None, cache_root: Path,
               hardware: str) -> list[dict]:
    cells = []
    for image_size in sizes:
        for patch_size in patches:
            for variant in variants:
                family, attention = GRID_VARIANTS[variant]
                tokens = models.seq_len(family, image_size, patch_size)
                cells.append({
                    "hardware": hardware, "variant": variant, "model": family, "attention": attention,
                    "model_size": model_size, "image_size": image_size, "patch_size": patch_size,
                    "channels": 3, "mode": "throughput", "timing_warmup_steps": warmup_steps,
                    "timed_steps": timed_steps, "global_batch": global_batch,
                    "micro_batch": micro_batch_for(tokens, token_budget, global_batch),
                    "device": device, "data_on_device": "yes", "loader_workers": 0, "checkpoint": False,
                    "peak_tflops": peak_tflops, "cache_root": str(cache_root)})
    return cells


def run_grid(cells: list[dict], out_dir: Path, *, log=print) -> pd.DataFrame:
    """Each cell in its own process (``python -m mammoscale.train``); one row per cell."""
    rows = []
    for cell in cells:
        out = Path(out_dir) / cell["variant"] / f"img{cell['image_size']}_p{cell['patch_size']}"
        random_cache(Path(cell["cache_root"]), cell["image_size"], cell["global_batch"])
        args = [f"{k}={'null' if v is None else v}" for k, v in cell.items()]
        proc = subprocess.run([sys.executable, "-m", "mammoscale.train", "--out", str(out), *args],
                              capture_output=True, text=True)
        metrics_file = out / "metrics.json"
        if metrics_file.is_file():
            record = json.loads(metrics_file.read_text())
        else:
            record = {**cell, "status": "failed", "message": proc.stderr.strip().splitlines()[-1:],
                      "seq_len": models.seq_len(cell["model"], cell["image_size"], cell["patch_size"])}
        rows.append({key: record.get(key) for key in ("variant", "image_size", "patch_size", "seq_len",
                                                        "micro_batch", "status", "throughput_img_s",
                                                        "peak_mem_bytes", "mfu", "attention_backend")})
        log(f"{cell['variant']} img{cell['image_size']} p{cell['patch_size']}: {record['status']} "
            f"{record.get('throughput_img_s')}")
    return pd.DataFrame(rows)


def speedups(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Throughput of every variant over ``baseline``'s, per (image size, patch size); NaN where either did not run."""
    wide = table.pivot_table(index=["image_size", "patch_size"], columns="variant", values="throughput_img_s",
                             aggfunc="first")
    out = pd.DataFrame(index=wide.index)
    for variant in wide.columns:
        if variant != baseline and baseline in wide.columns:
            out[f"{variant}/{baseline}"] = wide[variant] / wide[baseline]
    return out.reset_index()


def markdown(table: pd.DataFrame) -> str:
    """A pipe table (no extra dependency): numbers to 3 significant figures, missing values as '-'."""
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mammoscale.bench")
    parser.add_argument("what", choices=["step"])
    parser.add_argument("kwargs", help="measure_step's keyword arguments as JSON")
    args = parser.parse_args(argv)
    print(json.dumps(measure_step(**json.loads(args.kwargs))))


if __name__ == "__main__":
    main()
