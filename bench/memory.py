"""The memory model against exact measurement: predicted vs measured peak bytes of one training step.

For every ViT model size x sequence length x attention (x-transformers flash and materialised, Hugging
Face eager and SDPA), and DenseNet-121 x image size, x micro-batch {1, 2, 4} x precision, one optimiser
step (two micro-batches, AdamW) as the training loop runs it, measured by
:func:`mammoscale.train.memory.measure_step`: the exact peak of live tensors, on real tensors where the step
fits in --real-below GiB and on fake tensors (same operators, shapes and autograd graph, no data) beyond; on a
GPU, also CUDA's
``max_memory_allocated``. The prediction is :func:`mammoscale.plan.memory.step_peak` for the same
device. Target (issue: memory-aware cells): every CPU row within +-10 %.

--fit refits the activation coefficients (:data:`mammoscale.plan.memory.COEFFICIENTS`) by least
squares on the vit-tiny and vit-small rows and DenseNet's 128 and 224 px rows only (:func:`in_fit`), relative
error weighted, and prints them; the vit-base rows and DenseNet's 64 and 512 px rows are then a held-out check.

Run: python bench/memory.py [--fit] [--families xtransformers hf densenet] [--sizes vit-tiny vit-small vit-base]
     [--precisions bf16 fp32]
DenseNet alone: python bench/memory.py --fit --families densenet --real-below 0.5
GPU: python bench/memory.py --device cuda --max-tokens 65536
DDP: python bench/memory.py --ddp   (a step under a gloo group of one: gradients zeroed in place or freed)
"""

from __future__ import annotations

import argparse
import itertools
import platform
from importlib.metadata import version

import numpy as np
import pandas as pd
import torch

from mammoscale import files
from mammoscale.plan import families, memory, vit
from mammoscale.train.bench import markdown
from mammoscale.train.memory import measure_step

KINDS = [("xtransformers", "flash"), ("xtransformers", "materialised"), ("hf", "eager"), ("hf", "sdpa")]
SHAPES = [(256, 16), (256, 8), (512, 16), (512, 8), (1024, 16), (1024, 8), (2048, 16), (2048, 8)]
"""(image size, patch size): 256, 1,024, 1,024, 4,096, 4,096, 16,384, 16,384 and 65,536 patches."""
CNN_IMAGE_SIZES = (64, 128, 224, 512)
CNN_FIT_SIZES = (128, 224)
"""DenseNet-121's image sizes the fit sees (CheXNet's 224 among them); 64 px (where the 1-2 MiB a step holds
beyond the model weigh most) and 512 px are held out."""
VIT_FIT_SIZES = ("vit-tiny", "vit-small")
GiB, MiB = 2**30, 2**20


def shapes(args) -> list[tuple[str, str, str, int, int | None]]:
    """(family, attention, size, image size, patch size) of every row's model, the chosen families' only."""
    out = []
    for family in args.families:
        fam = families.family(family)
        if fam.has_patches:
            cells = [(s, p) for s, p in SHAPES if vit.patches(s, p) <= args.max_tokens]
            attentions = [attention for kind, attention in KINDS if kind == family]
            out += [(family, a, size, s, p) for a, size, (s, p) in itertools.product(attentions, args.sizes, cells)]
        else:
            out += [(family, families.NO_ATTENTION, size, s, None) for size in fam.sizes for s in args.cnn_image_sizes]
    return out


def in_fit(row) -> bool:
    """Whether ``--fit`` fits on a row: ViT-Tiny and ViT-Small, DenseNet at :data:`CNN_FIT_SIZES`."""
    if families.family(row.family).has_patches:
        return row.size in VIT_FIT_SIZES
    return row.image_size in CNN_FIT_SIZES


def rows(args) -> list[dict]:
    out = []
    for (family, attention, size, image, patch), micro, precision in itertools.product(
        shapes(args), args.micro_batches, args.precisions
    ):
        step = {"image_size": image, "patch_size": patch, "channels": args.channels, "precision": precision}
        predicted = memory.step_peak(family, attention, size, **step, micro_batch=micro, device=args.device)
        fake = args.device == "cpu" and predicted.total > args.real_below * GiB
        if args.device == "cuda" and predicted.total > args.real_below * GiB:
            continue  # beyond the GPU: not measurable
        measured = measure_step(family, attention, size, **step, micro_batch=micro, device=args.device, fake=fake)
        row = {
            "family": family,
            "attention": attention,
            "size": size,
            "image_size": image,
            "patch_size": patch,
            "tokens": families.seq_len(family, image, patch),
            "micro_batch": micro,
            "precision": precision,
            "how": "fake" if fake else "real",
            "state": measured.state,
            "measured": measured.peak,
            "cuda_max_allocated": measured.cuda_max_allocated,
            "predicted": predicted.total,
            "predicted_live": predicted.total - predicted.workspace,
        }
        out.append(row)
        print(
            f"{family}/{attention} {size} {files.cell_label(image, patch)} x{micro} {precision}: measured "
            f"{measured.peak / GiB:.3f} GiB ({row['how']}), predicted {row['predicted_live'] / GiB:.3f} GiB",
            flush=True,
        )
    return out


def fit(table: pd.DataFrame, channels: int) -> dict:
    """Least-squares activation coefficients per (family, attention, precision), relative error weighted."""
    found = {}
    for (family, attention, precision), group in table.groupby(["family", "attention", "precision"], sort=False):
        terms, target = [], []
        for row in group.itertuples():
            shape = {"image_size": row.image_size, "patch_size": _none(row.patch_size), "channels": channels}
            total, matmul = memory.parameters(family, row.size, **shape)
            fixed = (memory.STATE_BYTES_PER_PARAMETER + memory.GRADIENT_BYTES_PER_PARAMETER) * total + (
                memory.WEIGHT_COPY_BYTES[precision] * matmul
            )
            step = (
                memory.STATE_BYTES_PER_PARAMETER
                + memory.GRADIENT_BYTES_PER_PARAMETER
                + memory.OPTIMIZER_STEP_BYTES_PER_PARAMETER
            ) * total
            if row.measured <= step * 1.001:
                continue  # the optimiser step's peak: says nothing of the activations
            per_image = memory.activation_terms(family, row.size, **shape)
            terms.append([row.micro_batch * per_image.get(name, 0) for name in "abcte"])
            target.append(row.measured - fixed)
        x, y = np.array(terms, float), np.array(target, float)
        weights = 1 / (y + 1)
        fused = attention not in ("materialised", "eager")
        has = [i for i, name in enumerate("abcte") if name in per_image]  # a CNN: its maps' term alone
        columns = [i for i in has if not (fused and "abcte"[i] in "bt")]  # fused kernels keep no token^2 term
        solved, *_ = np.linalg.lstsq(x[:, columns] * weights[:, None], y * weights, rcond=None)
        values = dict.fromkeys("abcte", 0.0)
        values.update({"abcte"[i]: float(v) for i, v in zip(columns, solved)})
        found[(family, attention, precision)] = memory.Coefficients(**{k: round(v, 2) for k, v in values.items()})
    return found


DDP_SHAPES = [("vit-small", 128, 8, "fp32"), ("vit-base", 224, 16, "bf16")]
"""(size, image size, patch size, precision) of the ``--ddp`` rows."""


def ddp_rows(device: str) -> pd.DataFrame:
    """One step of two micro-batches (the first under no_sync), micro-batch 2: one process, DDP with its gradients
    zeroed in place (the DDP backend's), and DDP with them freed (``set_to_none``), in MiB; exact counts."""
    out = []
    for size, image, patch, precision in DDP_SHAPES:
        step = {"image_size": image, "patch_size": patch, "precision": precision, "micro_batch": 2, "grad_accum": 2}
        peaks = [
            measure_step("xtransformers", "flash", size, **step, device=device, **kwargs).peak
            for kwargs in ({}, {"backend": "ddp"}, {"backend": "ddp", "set_to_none": True})
        ]
        params = memory.parameters("xtransformers", size, image_size=image, patch_size=patch, channels=3)[0]
        out.append(
            {
                "model": size,
                "shape": f"{image}/{patch} {precision}",
                "one_process_mib": peaks[0] / MiB,
                "ddp_zeroed_mib": peaks[1] / MiB,
                "ddp_freed_mib": peaks[2] / MiB,
                "difference_mib": (peaks[2] - peaks[1]) / MiB,
                "four_x_params_mib": 4 * params / MiB,
            }
        )
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(families.FAMILIES), choices=list(families.FAMILIES))
    parser.add_argument("--sizes", nargs="+", default=list(vit.SIZES), help="the ViTs' sizes")
    parser.add_argument("--cnn-image-sizes", type=int, nargs="+", default=list(CNN_IMAGE_SIZES))
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp32"])
    parser.add_argument("--micro-batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--real-below", type=float, default=4.0, help="GiB: measure real tensors below, fake above")
    parser.add_argument("--fit", action="store_true", help="refit the coefficients on the rows in_fit chooses")
    parser.add_argument("--ddp", action="store_true", help="DDP's gradients under accumulation, zeroed or freed")
    args = parser.parse_args(argv)
    print(
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), x-transformers {version('x-transformers')}, "
        f"transformers {version('transformers')}, torchvision {version('torchvision')}, "
        f"python {platform.python_version()}, device {args.device}"
        + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else "")
    )
    if args.ddp:
        print(markdown(ddp_rows(args.device).round(2)))
        return
    table = pd.DataFrame(rows(args)).astype({"patch_size": "Int64", "tokens": "Int64"})  # a CNN's are empty
    table["error"] = table["predicted_live"] / table["measured"] - 1
    if args.fit:
        for key, value in fit(table[[in_fit(row) for row in table.itertuples()]], args.channels).items():
            print(f"    {key}: {value},")
    shown = table.assign(
        tokens=table["tokens"].astype(object).fillna(""),  # a CNN has none
        measured_gib=table["measured"] / GiB,
        predicted_gib=table["predicted_live"] / GiB,
        error_pct=table["error"] * 100,
    )
    shown["fitted"] = ["yes" if in_fit(row) else "held out" for row in table.itertuples()]
    columns = ["family", "attention", "size", "tokens", "image_size", "micro_batch", "precision", "how", "fitted"]
    columns += ["measured_gib", "predicted_gib", "error_pct"]
    if args.device == "cuda":
        shown["cuda_gib"] = table["cuda_max_allocated"] / GiB
        columns.append("cuda_gib")
    print(markdown(shown[columns]))
    worst = table.loc[table["error"].abs().idxmax()]
    print(
        f"\n{len(table)} rows; largest error {worst['error'] * 100:+.1f} % ({worst['family']}/{worst['attention']} "
        f"{worst['size']} {files.cell_label(worst['image_size'], _none(worst['patch_size']))} x{worst['micro_batch']} "
        f"{worst['precision']}); "
        f"{int((table['error'].abs() <= 0.10).sum())} of {len(table)} within +-10 %"
    )


def _none(value):
    return None if pd.isna(value) else int(value)


if __name__ == "__main__":
    main()
