"""Flash against materialised attention on the CPU: one training step of a tiny ViT at 1,024 and 4,096 tokens.

The same x-transformers ViT (dim 192, depth 4, 3 heads; the weights identical for both) with
``attn_flash=True`` (PyTorch's fused SDPA kernel; the kernel that ran is recorded) and
``attn_flash=False`` (the N x N score matrix materialised). bf16 autocast, batch 1, AdamW. Each
measurement runs in a fresh process: the median of --steps timed steps after --warmup, and the
peak memory the steps add over the RSS before the first step. Variants are interleaved per
repeat, and the ratios are taken within this one run.

Targets (issue: training engine): at 4,096 tokens flash >= 2.0x faster and >= 4x less peak memory.

Run: python bench/attention.py [--steps 3] [--warmup 1] [--repeat 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
from importlib.metadata import version

import torch
import x_transformers  # noqa: F401  (version below)

from mammoscale.train.bench import measure_in_subprocess

SHAPES = {1024: (512, 16), 4096: (1024, 16)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, x-transformers {version('x-transformers')}, python {platform.python_version()}, "
        f"{torch.get_num_threads()} threads"
    )
    results: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.repeat):
        for tokens, (image_size, patch_size) in SHAPES.items():
            for attention in ("flash", "materialised"):
                r = measure_in_subprocess(
                    attention=attention,
                    image_size=image_size,
                    patch_size=patch_size,
                    steps=args.steps,
                    warmup=args.warmup,
                )
                print(f"  {tokens} tokens, {attention}: {r}", flush=True)
                results.setdefault((tokens, attention), []).append(r)
    print("| tokens | attention | kernel | step, s | peak memory, MB | flash speed-up | flash memory saving |")
    print("|---|---|---|---|---|---|---|")
    for tokens in SHAPES:
        rows = {a: results[(tokens, a)] for a in ("flash", "materialised")}
        step = {a: statistics.median(r["step_time_s"] for r in rows[a]) for a in rows}
        mem = {a: max(r["peak_mem_bytes"] for r in rows[a]) for a in rows}
        for a in rows:
            ratio = f"{step['materialised'] / step['flash']:.2f}x" if a == "flash" else ""
            saving = f"{mem['materialised'] / mem['flash']:.1f}x" if a == "flash" else ""
            print(
                f"| {tokens} | {a} | {rows[a][0]['kernel']} | {step[a]:.2f} | {mem[a] / 1e6:.0f} | {ratio} | {saving} |"
            )


if __name__ == "__main__":
    main()
