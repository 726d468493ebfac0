"""What the training harness costs: a cell's optimiser step as the harness runs it against a bare training loop.

*Harness*: ``python -m mammoscale.train --out DIR key=value ...``, the cell's own process as the workflow's job
runs it (:func:`mammoscale.train.bench.run_in_process`), in throughput mode on a cache of random tiles
(:func:`~mammoscale.train.bench.random_cache`): its loader, micro-batch probe, learning-rate schedule, loss
check, backend and record. Its number is the record's ``step_time_s``, the median of the timed steps.
*Bare*: the same model (:func:`mammoscale.train.models.build`), optimiser (``optimizer_for``), autocast
(``autocast_for``), micro-batch, accumulation and precision in a loop of a few lines on random tensors already in
memory: no loader, no checkpoint, no DDP (:func:`mammoscale.train.bench.bare_steps`, in a process of its own too,
``python -m mammoscale.train.bench bare JSON``). Its number is the median of the same timed steps after the same
warm-up.

The two alternate (bare, harness, bare, harness, ...) for --repeats rounds, so that the machine's drift hits both;
the ratio harness/bare is taken within each round, and its median over the rounds is held against
--max-overhead (exit 1 with one line past it). Both processes pay the same process start, which is outside the
timed steps anyway.

Run: python bench/harness.py [--size vit-tiny] [--image-size 384] [--patch-size 16] [--micro-batch 2]
     [--steps 10] [--warmup 2] [--repeats 3] [--device cpu] [--precision fp32] [--max-overhead 0.03]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from mammoscale.train import bench, devices


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="vit-tiny", help="the model size (default vit-tiny)")
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=2, help="a multiple of --micro-batch (accumulation)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them (at least 1)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of bare then harness")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument(
        "--max-overhead", type=float, default=0.03, help="largest median harness/bare - 1 accepted (default 0.03)"
    )
    parser.add_argument("--out", type=Path, help="where the cache and the cells' records go (default: a temporary dir)")
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be at least 1: the harness's record never counts its first step")
    if args.steps < 1 or args.repeats < 1 or args.global_batch % args.micro_batch:
        parser.error("--steps and --repeats must be at least 1, --global-batch a multiple of --micro-batch")

    device = devices.choose(args.device, 0)
    print(
        f"torch {torch.__version__}, python {platform.python_version()}, {devices.names(device)[0]}, "
        f"{torch.get_num_threads()} threads; {args.size} {args.image_size}/{args.patch_size}, micro-batch "
        f"{args.micro_batch} x {args.global_batch // args.micro_batch} accumulation, {args.precision}, "
        f"{args.warmup} warm-up + {args.steps} timed steps per process, {args.repeats} round(s)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as scratch:
        rows = rounds(args, args.out or Path(scratch))
    table = pd.DataFrame(rows)
    print(bench.markdown(table))
    ratios = table["harness_over_bare"].tolist()
    median = statistics.median(ratios)
    print(
        f"harness/bare: median {median:.4f} of {len(ratios)} round(s) (range {min(ratios):.4f}-{max(ratios):.4f}): "
        f"overhead {median - 1:+.2%}, at most {args.max_overhead:.2%} accepted"
    )
    if median - 1 > args.max_overhead:
        print(
            f"error: the harness costs {median - 1:+.2%} per step over a bare loop (median of {len(ratios)} "
            f"round(s), range {min(ratios) - 1:+.2%} to {max(ratios) - 1:+.2%}), more than --max-overhead "
            f"{args.max_overhead:.2%}",
            file=sys.stderr,
        )
        return 1
    return 0


def rounds(args, root: Path) -> list[dict]:
    """Each round: the bare loop's and the harness's median step, and their ratio."""
    root.mkdir(parents=True, exist_ok=True)
    cache_root = bench.random_cache(root / "cache", args.image_size, 4 * args.global_batch)
    common = {
        "image_size": args.image_size,
        "patch_size": args.patch_size,
        "micro_batch": args.micro_batch,
        "global_batch": args.global_batch,
        "precision": args.precision,
        "device": args.device,
    }
    bare_kwargs = {**common, "size": args.size, "steps": args.steps, "warmup": args.warmup}
    cell = {
        **common,
        "cache_root": str(cache_root),
        "hardware": "bench",
        "model_size": args.size,
        "mode": "throughput",
        "timing_warmup_steps": args.warmup,
        "timed_steps": args.steps,
    }
    rows = []
    for i in range(1, args.repeats + 1):
        bare = statistics.median(bench.bare_in_subprocess(**bare_kwargs))
        print(f"round {i}: bare {bare:.4f} s/step", flush=True)
        record = bench.run_in_process(cell, root / "runs" / f"round{i}")
        if record["status"] != "ok":
            sys.exit(f"error: the harness's cell ended {record['status']}: {record.get('message')}")
        if (record["micro_batch"], record["grad_accum"]) != (args.micro_batch, args.global_batch // args.micro_batch):
            sys.exit(
                f"error: the harness trained with micro-batch {record['micro_batch']} x {record['grad_accum']} "
                f"accumulation (its probe's choice), not the bare loop's {args.micro_batch}: not comparable"
            )
        harness = record["step_time_s"]
        print(f"round {i}: harness {harness:.4f} s/step ({record['attention_backend']})", flush=True)
        rows.append(
            {
                "round": i,
                "bare_step_s": bare,
                "harness_step_s": harness,
                "harness_over_bare": harness / bare,
                "overhead_pct": 100 * (harness / bare - 1),
            }
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
