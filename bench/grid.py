"""The study's Flash Attention grid on one GPU: ViT-Base, bf16, throughput mode, every variant x size x patch.

Variants: ``flash`` (x-transformers, attn_flash=True, the flash SDPA kernel forced), ``materialised``
(the same model with attn_flash=False) and ``hf-eager`` (Hugging Face ViT, the study's baseline).
Each cell runs ``python -m mammoscale.train`` in its own process on a cache of random tiles held on
the device, so an OOM is recorded and the next cell starts clean. Micro-batches hold about
--token-budget tokens (a power of two, at most the global batch); the global batch is constant.
Prints one table of throughput, peak memory, MFU and status, and one of speed-ups over the
baseline, to compare with the study (paper.md, section 1): patch 8: 3.0-4.2x, patch 16: 2.8-4.0x,
patch 32: 0-2.3x; the baseline OOMs at 2048 except with patch 32.

Run on a GPU:  python bench/grid.py --peak-tflops 989 (H100 SXM dense bf16; 312 for an A100)
Tiny CPU mode: python bench/grid.py --tiny   (vit-tiny, 32/64 px, the tests run this)
"""

from __future__ import annotations

import argparse
import platform
from importlib.metadata import version
from pathlib import Path

import torch

from mammoscale import bench


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke mode: vit-tiny, 32 and 64 px, patches 8 and 16")
    parser.add_argument("--sizes", type=int, nargs="+", help="default 384 512 1024 2048 (tiny: 32 64)")
    parser.add_argument("--patches", type=int, nargs="+", help="default 8 16 32 (tiny: 8 16)")
    parser.add_argument("--variants", nargs="+", default=list(bench.GRID_VARIANTS), choices=list(bench.GRID_VARIANTS))
    parser.add_argument("--baseline", default="hf-eager", choices=list(bench.GRID_VARIANTS))
    parser.add_argument("--global-batch", type=int, default=64, help="a power of two")
    parser.add_argument("--token-budget", type=int, default=1 << 16, help="tokens per micro-batch")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--timed-steps", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--hardware", default="gpu")
    parser.add_argument("--out", type=Path, default=Path("results/bench/grid"))
    args = parser.parse_args(argv)
    model_size, device, sizes, patches = "vit-base", "cuda", [384, 512, 1024, 2048], [8, 16, 32]
    if args.tiny:
        model_size, device, sizes, patches = "vit-tiny", "cpu", [32, 64], [8, 16]
        args.global_batch, args.token_budget, args.warmup_steps, args.timed_steps = 4, 64, 1, 2
        args.hardware = "cpu-tiny"
    args.sizes, args.patches = args.sizes or sizes, args.patches or patches
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), x-transformers {version('x-transformers')}, "
          f"transformers {version('transformers')}, python {platform.python_version()}")
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name(0)}")
    cells = bench.grid_cells(sizes=args.sizes, patches=args.patches, variants=args.variants, model_size=model_size,
                             token_budget=args.token_budget, global_batch=args.global_batch,
                             warmup_steps=args.warmup_steps, timed_steps=args.timed_steps, device=device,
                             peak_tflops=args.peak_tflops, cache_root=args.out / "cache", hardware=args.hardware)
    table = bench.run_grid(cells, args.out / "runs")
    table["peak_mem_gb"] = table.pop("peak_mem_bytes") / 1e9
    print(bench.markdown(table))
    print()
    print(bench.markdown(bench.speedups(table, args.baseline)))
    table.to_csv(args.out / "grid.csv", index=False)


if __name__ == "__main__":
    main()
