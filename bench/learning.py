"""Learning check: a small ViT learns the synthetic lesions within 5 minutes on a CPU.

The synthetic generator draws a small dense lesion in both views of every positive breast.
A model that reaches a high validation AUC on it proves that decoding, orientation, tiling, the
cache, labels, splits, loss and optimiser are wired to each other correctly; an inverted label
or a shuffled index would leave it at 0.5. The dataset goes through the same preprocessing
functions as the workflow (manifest, stage 1, stage 2, index), then one ``run_cell``.

Target (issue: training engine): val AUC >= 0.8 within 5 minutes of training on 2 CPU cores.

Run: python bench/learning.py [--patients 240] [--epochs 12] [--out results/bench/learning]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from mammoscale import synthetic, train
from mammoscale.preprocess.chain import build_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=240)
    parser.add_argument("--shape", default="384x288", help="rows x columns of the synthetic images")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("results/bench/learning"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    started = time.perf_counter()
    data = synthetic.generate(
        args.out / "rsna",
        n_patients=args.patients,
        image_shape=synthetic.parse_shape(args.shape),
        seed=7,
        cancer_rate=0.5,
        workers=2,
    )
    root = build_cache(
        data,
        args.out,
        workers=2,
        config={
            "grid": {"image_sizes": [args.image_size]},
            "cache": {"shards": 2},
            "manifest": {"split": {"train": 0.7, "val": 0.3, "test": 0.0}},
        },
    )
    prepared = time.perf_counter() - started
    cell = {
        "cache_root": str(root),
        "image_size": args.image_size,
        "patch_size": args.patch_size,
        "model_size": "vit-tiny",
        "mode": "full",
        "epochs": args.epochs,
        "global_batch": 32,
        "micro_batch": 32,
        "lr": 1e-3,
        "weight_decay": 0.05,
        "warmup_fraction": 0.1,
        "precision": "fp32",
        "loader_workers": 1,
        "checkpoint": False,
    }
    result = train.run_cell(cell, args.out / "run")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; data + cache {prepared:.0f} s")
    print(
        json.dumps(
            {
                key: result[key]
                for key in (
                    "status",
                    "epochs",
                    "steps",
                    "train_time_s",
                    "throughput_img_s",
                    "val_auc",
                    "val_pf1",
                    "attention_backend",
                )
            },
            indent=1,
        )
    )
    print(f"loss: first {result['loss_curve'][0]:.3f}, last {result['loss_curve'][-1]:.3f}")
    verdict = result["val_auc"] is not None and result["val_auc"] >= 0.8 and result["train_time_s"] <= 300
    print(f"target val AUC >= 0.8 within 300 s: {'met' if verdict else 'NOT met'}")


if __name__ == "__main__":
    main()
