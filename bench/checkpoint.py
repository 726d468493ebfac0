"""What a checkpoint's checksum costs: saving and loading a vit-base state before checksums and now.

A vit-base (x-transformers, 224/16) with AdamW's moments after one step, 85.4M parameters and about
1 GB: saved atomically and loaded as before checksums (a plain ``torch.save`` / ``torch.load``) and as
:mod:`mammoscale.train.checkpoint` does now (the sha256 taken as the bytes are written, checked before
they are read, the previous checkpoint kept). A save's time is mostly the disk's (fsync): serialising
to nowhere, with and without the digest, isolates what the digest adds.

Run: python bench/checkpoint.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mammoscale import files
from mammoscale.train import checkpoint, models
from mammoscale.train.optim import optimizer_for

PROGRESS = {
    "fingerprint": "0123456789abcdef",
    "epoch": 1,
    "step": 9,
    "epoch_step": 0,
    "epoch_elapsed": 0.0,
    "loss_curve": [0.5] * 9,
    "epoch_times": [1.0],
}
"""What the loop saves besides the model and the optimiser."""


def measure(repeats: int) -> None:
    """Save and load a vit-base state (with AdamW's moments) as before the checksum and as now; the medians. A save's
    time is mostly the disk's (fsync): serialising to nowhere, with and without the digest, isolates its cost."""
    model = models.build("xtransformers", "flash", "vit-base", image_size=224, patch_size=16, channels=1)
    optimizer = optimizer_for(model, 1e-4, 0.05)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    big = {**PROGRESS, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
    params = sum(p.numel() for p in model.parameters())
    out = Path(tempfile.mkdtemp())

    def before_save():  # the save before checksums: atomic, synced
        with files.atomic_path(out / "before.pt") as tmp:
            torch.save(big, tmp)

    class Sink:  # serialising alone, no disk: what the digest adds to a save
        def write(self, data) -> int:
            return len(data)

        def flush(self) -> None:
            pass

    def seconds(work) -> float:
        started = time.perf_counter()
        work()
        return time.perf_counter() - started

    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, work in (
            ("serialise", lambda: torch.save(big, Sink())),
            ("serialise + sha256", lambda: torch.save(big, checkpoint._Hashing(Sink()))),
            ("save before", before_save),
            ("save now", lambda: checkpoint.save(out, big)),
            ("load before", lambda: torch.load(out / "before.pt", map_location="cpu", weights_only=True)),
            ("load now", lambda: checkpoint.load(out, PROGRESS["fingerprint"])),
            ("sha256 alone", lambda: files.sha256_file(out / "before.pt")),
        ):
            times.setdefault(name, []).append(seconds(work))
    size = (out / "checkpoint.pt").stat().st_size
    print(f"{params / 1e6:.1f}M parameters, {size / 1e9:.2f} GB, {os.cpu_count()} CPUs, medians of {repeats}:")
    for name, values in times.items():
        print(f"  {name}: {statistics.median(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"  sha256: {size / statistics.median(times['sha256 alone']) / 1e9:.2f} GB/s")
    for path in out.iterdir():
        path.unlink()
    out.rmdir()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    measure(parser.parse_args().repeats)
