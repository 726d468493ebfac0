"""Cell records for the table, figure and report tests: what train.run_cell writes, with chosen numbers.

The aggregation, figures and claims are tested on these (fast, every status and ratio chosen);
the workflow tests run them on records real training wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from mammoscale import files, stats
from mammoscale.plan import families

VARIANTS = {
    "flash": {"family": "xtransformers", "attention": "flash"},
    "materialised": {"family": "xtransformers", "attention": "materialised"},
    "hf-eager": {"family": "hf", "attention": "eager"},
}
CNN = {"densenet": {"family": "densenet"}}
"""A variant without patches nor attention: its cells are ``img<S>``, their ``patch`` None."""


def record(
    hardware: str,
    variant: str,
    size: int,
    patch: int | None,
    status: str = "ok",
    *,
    throughput: float | None = 10.0,
    peak: int | None = 2**30,
    auc: float | None = None,
    wait: float | None = 0.05,
    job: str | None = None,
    message: str | None = None,
    spread: float = 0.01,
    windows: int = 5,
) -> dict:
    """``windows`` timing windows around ``throughput``, ``spread`` apart (their median is ``throughput``)."""
    ok = status == "ok"
    timed = (
        stats.Throughput.of([throughput * (1 + spread * (k - (windows - 1) / 2)) for k in range(windows)])
        if ok and throughput
        else stats.Throughput.of([])
    )
    spec = {**VARIANTS, **CNN}[variant]
    attention = families.variant_attention(spec)
    tokens = families.seq_len(spec["family"], size, patch)
    flops = 3 * 2 * (tokens or (size // 16) ** 2) * 86_000_000 * 2
    tflops = flops / 1e12
    return {
        "schema_version": 1,
        "status": status,
        "message": message,
        "hardware": hardware,
        "variant": variant,
        "model": f"{spec['family']}/{families.model_size(spec, 'vit-base')}",
        "attention": attention,
        "attention_backend": (
            {"flash": "sdpa-flash", families.NO_ATTENTION: "none observed"}.get(attention, "matmul-softmax")
            if ok
            else None
        ),
        "image_size": size,
        "patch_size": patch,
        "seq_len": tokens,
        "params": 86_000_000,
        "mode": "throughput",
        "epochs": 0,
        "steps": 4 if ok else 0,
        "global_batch": 64,
        "micro_batch": 8,
        "grad_accum": 2,
        "world_size": 4,
        "backend": "ddp",
        "throughput_img_s": throughput if ok else None,
        "throughput_ci_low_img_s": timed.ci_low,
        "throughput_ci_high_img_s": timed.ci_high,
        "throughput_cv": timed.cv,
        "throughput_unstable": timed.unstable,
        "throughput_windows_img_s": timed.windows,
        "step_time_s": 64 / throughput if ok and throughput else None,
        "input_wait_fraction": wait if ok else None,
        "loader_img_s": (throughput / wait if wait else None) if ok and throughput else None,
        "epoch_times_s": [],
        "train_time_s": 12.5 if ok else None,
        "peak_mem_bytes": peak if ok else None,
        "peak_mem_kind": "cuda_max_allocated",
        "flops_per_img": flops,
        "achieved_tflops": tflops * throughput if ok and throughput else None,
        "mfu": tflops * throughput / (4 * 312) if ok and throughput else None,
        "val_auc": auc if ok else None,
        "val_pf1": (auc / 2 if auc else None) if ok else None,
        "loss_curve": [0.7, 0.6, 0.5, 0.4] if ok else [],
        "resumed_from_epoch": None,
        "env": {
            "devices": ["NVIDIA A100-SXM4-80GB"] * 4,
            "device_count": 4,
            "device_type": "cuda",
            "torch": "2.13.0",
            "cuda": "12.8",
            "python": "3.11.7",
            "x_transformers": "2.31.10",
            "git_commit": "0123abc",
            "host": "node01",
            "slurm_job_id": job,
            "slurm_job_gpus": "0,1,2,3",
            "cuda_visible_devices": "0,1,2,3",
        },
        "config": {"image_size": size, "patch_size": patch, "lr": 3e-4, "hardware": hardware, "variant": variant},
    }


def write(runs_root: Path, rec: dict, name: str = "metrics.json") -> Path:
    directory = Path(runs_root) / files.cell_name(rec["hardware"], rec["variant"], rec["image_size"], rec["patch_size"])
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(rec))
    return path
