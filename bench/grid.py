"""The study's Flash Attention grid on one GPU: ViT-Base, bf16, throughput mode, every variant x size x patch.

The cells are the workflow's own (:mod:`mammoscale.plan`): the variants, sizes, patches and training
settings of ``config/paper.yaml`` on a one-GPU profile, throughput mode; the tables are the
workflow's (:mod:`mammoscale.report.tables`). Each cell runs ``python -m mammoscale.train`` in its
own process on a cache of random tiles held on the device, so an OOM is recorded and the next
cell starts clean. Each cell's micro-batch is the workflow's plan (:mod:`mammoscale.plan.sizing`:
the largest divisor of the global batch whose predicted peak fits --device-memory-gib, by default
the GPU's), settled on the device by the probe; the global batch is constant. Prints throughput,
peak memory (measured and predicted), MFU and status per cell, and the speed-up of each flash
variant over each baseline, to compare with the study (paper.md, section 1): patch 8: 3.0-4.2x,
patch 16: 2.8-4.0x, patch 32: 0-2.3x; the baseline OOMs at 2048 except with patch 32.

Run on a GPU:  python bench/grid.py --peak-tflops 989 (H100 SXM dense bf16; 312 for an A100)
Tiny CPU mode: python bench/grid.py --tiny   (vit-tiny, 32/64 px, the tests run this)
"""

from __future__ import annotations

import argparse
import platform
from importlib.metadata import version
from pathlib import Path

import torch
import yaml

from mammoscale import config, files
from mammoscale.plan import grid, sizing
from mammoscale.report import tables
from mammoscale.train import bench

REPO = Path(__file__).resolve().parents[1]
HARDWARE = "bench"


def cells(args, variants: dict) -> list[tuple[grid.Cell, dict]]:
    """Every cell of the grid with its settings, as the workflow resolves and plans them."""
    paper = config.with_defaults(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    train = {
        **paper["train"],
        "mode": "throughput",
        "model_size": args.model_size,
        "global_batch": args.global_batch,
        "timing_warmup_steps": args.warmup_steps,
        "timed_steps": args.timed_steps,
        "loader_workers": 0,
        "checkpoint": False,
        "full_mode_at": [],
    }
    chosen = []
    for cell in grid.cells(args.sizes, args.patches, {name: variants[name] for name in args.variants}, [HARDWARE]):
        profile = {
            "launcher": "none",
            "nodes": 1,
            "gpus_per_node": 0 if args.tiny else 1,
            "peak_tflops": args.peak_tflops,
            "device_memory_gib": args.device_memory_gib,
            "micro_batch": args.global_batch,
            "data_on_device": "yes",
            "device": args.device,
        }
        profile = config.with_defaults({"hardware": {HARDWARE: profile}})["hardware"][HARDWARE]  # the schema's rest

        spec = {
            "profile": profile,
            "variant": variants[cell.variant],
            "train": train,
            "cache_root": str(args.out / "cache"),
            "local_scratch": None,
        }
        bound = grid.cell_settings(cell, **spec, micro_batch=args.global_batch)
        plan = sizing.plan_cell(cell, bound, profile, paper["plan"], train_breasts=1)
        chosen.append((cell, grid.cell_settings(cell, **spec, micro_batch=plan.micro_batch)))
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke mode: vit-tiny, 32 and 64 px, patches 8 and 16")
    parser.add_argument("--sizes", type=int, nargs="+", help="default 384 512 1024 2048 (tiny: 32 64)")
    parser.add_argument("--patches", type=int, nargs="+", help="default 8 16 32 (tiny: 8 16)")
    parser.add_argument("--variants", nargs="+", help="of config/paper.yaml's grid.variants (default: all)")
    parser.add_argument("--global-batch", type=int, default=64, help="a power of two")
    parser.add_argument("--device-memory-gib", type=float, help="plan micro-batches for it (default: the GPU's)")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--timed-steps", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--out", type=Path, default=Path("results/bench/grid"))
    args = parser.parse_args(argv)
    variants = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["grid"]["variants"]
    args.variants = args.variants or list(variants)
    args.model_size, args.device, sizes, patches = "vit-base", "cuda", [384, 512, 1024, 2048], [8, 16, 32]
    if args.tiny:
        args.model_size, args.device, sizes, patches = "vit-tiny", "cpu", [32, 64], [8, 16]
        args.global_batch, args.warmup_steps, args.timed_steps = 4, 1, 2
    args.sizes, args.patches = args.sizes or sizes, args.patches or patches
    print(
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), x-transformers {version('x-transformers')}, "
        f"transformers {version('transformers')}, python {platform.python_version()}"
    )
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name(0)}")
        args.device_memory_gib = args.device_memory_gib or torch.cuda.get_device_properties(0).total_memory / 2**30
    planned = cells(args, variants)
    runs_root = args.out / "runs"
    for cell, settings in planned:
        bench.random_cache(args.out / "cache", cell.image_size, args.global_batch)
        record = bench.run_in_process(settings, cell.run_dir(runs_root))
        print(f"{cell.name}: {record['status']} {record.get('throughput_img_s')}", flush=True)
    runs = tables.runs_table([cell for cell, _ in planned], variants, runs_root)
    runs.to_csv(args.out / "grid.csv", index=False)
    shown = runs[
        [
            "variant",
            "image_size",
            "patch_size",
            "seq_len",
            "micro_batch",
            "micro_batch_planned",
            "status",
            "throughput_img_s",
            "peak_mem_bytes",
            "predicted_peak_bytes",
            "mfu",
            "attention_backend",
        ]
    ].assign(peak_mem_bytes=runs["peak_mem_bytes"] / 2**30, predicted_peak_bytes=runs["predicted_peak_bytes"] / 2**30)
    gib = {"peak_mem_bytes": "peak_mem_gib", "predicted_peak_bytes": "predicted_gib"}
    print(bench.markdown(shown.rename(columns=gib)))
    print()
    pairs = tables.speedups(runs)
    files.SPEEDUP_TABLE.write(pairs, args.out / "speedups.csv")
    print(
        bench.markdown(
            pairs[["image_size", "patch_size", "flash_variant", "baseline_variant", "throughput_ratio", "memory_ratio"]]
        )
    )


if __name__ == "__main__":
    main()
