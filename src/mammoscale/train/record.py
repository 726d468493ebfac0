"""A cell's record (``metrics.json``): what it measured, what it was, and where and with what it ran.

:func:`metrics` turns a run's :class:`~mammoscale.train.loop.Progress` into the record of
DESIGN.md's schema, for every status; the schema check and the atomic write are
:func:`mammoscale.files.write_metrics`'s, so a cell validates its own record on a cluster node
before writing it, and a record that would break the tables is a bug caught at the source.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys

import torch

from mammoscale import files, provenance
from mammoscale.plan import flops, memory
from mammoscale.plan.launch import job_restarts
from mammoscale.plan.settings import Settings
from mammoscale.plan.vit import seq_len
from mammoscale.train import devices
from mammoscale.train.backends import Backend

log = logging.getLogger(__name__)


def environment(device: torch.device, backend: str) -> dict:
    """Where and with what a cell ran: devices, versions, commit, host, SLURM job."""
    names = devices.names(device)
    return {
        "devices": names,
        "device_count": len(names) if device.type == "cuda" else 0,
        "device_type": device.type,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
        "x_transformers": provenance.version("x-transformers"),
        "transformers": provenance.version("transformers"),
        "flash_attn": provenance.version("flash-attn") or provenance.version("flash_attn"),
        "horovod": provenance.version("horovod") if backend == "horovod" else None,
        **provenance.host(),
        # the job's GPUs as SLURM allocated them (inside a job step, SLURM sets SLURM_STEP_GPUS)
        "slurm_job_gpus": os.environ.get("SLURM_JOB_GPUS") or os.environ.get("SLURM_STEP_GPUS"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_restarts": job_restarts(),
        "pytorch_cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
        "nccl_debug": os.environ.get("NCCL_DEBUG"),
        "argv": sys.argv,
    }


def metrics(
    s: Settings,
    backend: Backend,
    progress,
    *,
    status: str,
    message: str | None,
    peak: devices.PeakMemory,
    quality: dict | None = None,
) -> dict:
    """The record of a run that ended with ``status``, from what it did (``progress``): ``s`` are the
    cell's settings as planned; the micro-batch trained with is the probe's (``progress.micro_batch``)."""
    tokens = seq_len(s.family, s.image_size, s.patch_size)
    per_image = flops.train_flops_per_image(s.model_size, seq_len=tokens, patch_size=s.patch_size, channels=s.channels)
    first = max(1, s.timing_warmup_steps)
    timed = progress.step_times[first:] if status == "ok" else []
    waits = progress.wait_times[first:] if status == "ok" else []
    throughput = s.global_batch * len(timed) / sum(timed) if timed and sum(timed) > 0 else None
    if status == "ok" and throughput is None:
        log.warning(
            "no throughput: %d step(s) ran and the first %d are warm-up (timing_warmup_steps, at least 1)",
            len(progress.step_times),
            first,
        )
    achieved = flops.achieved_tflops(per_image, throughput) if throughput else None
    quality = quality or {"val_auc": None, "val_pf1": None}
    return {
        "schema_version": files.METRICS_SCHEMA_VERSION,
        "status": status,
        "message": message,
        "hardware": s.hardware,
        "variant": s.variant,
        "model": f"{s.family}/{s.model_size}",
        "attention": s.attention,
        "attention_backend": progress.kernel,
        "image_size": s.image_size,
        "patch_size": s.patch_size,
        "seq_len": tokens,
        "params": progress.params,
        "mode": s.mode,
        "epochs": progress.epochs_done,
        "steps": progress.steps_done,
        "global_batch": s.global_batch,
        **_batches(s, progress, backend),
        "world_size": backend.world,
        "backend": backend.name,
        "ranks": backend.placement,
        "throughput_img_s": throughput,
        "step_time_s": statistics.median(timed) if timed else None,
        "input_wait_fraction": sum(waits) / sum(timed) if throughput else None,
        "loader_img_s": s.global_batch * len(waits) / sum(waits) if throughput and sum(waits) > 0 else None,
        "epoch_times_s": progress.epoch_times,
        "train_time_s": sum(progress.epoch_times) if s.mode == "full" else (sum(progress.step_times) or None),
        **_memory(s, progress, backend, peak, status),
        "loader_workers": progress.loader_workers,
        "flops_per_img": per_image,
        "achieved_tflops": achieved,
        "mfu": flops.mfu(achieved, s.peak_tflops, backend.world) if achieved else None,
        "val_auc": quality["val_auc"],
        "val_pf1": quality["val_pf1"],
        "loss_curve": progress.loss_curve,
        "resumed_from_epoch": progress.resumed_from,
        "resumed_from_step": progress.resumed_step,
        "env": environment(backend.device, backend.name),
        "config": s.as_dict(),
    }


def _batches(s: Settings, progress, backend: Backend) -> dict:
    """The micro-batch trained with (the probe's), the one planned, and those the probe found out of memory."""
    micro = progress.micro_batch or s.micro_batch
    return {
        "micro_batch": micro,
        "micro_batch_planned": s.micro_batch,
        "micro_batch_retries": progress.micro_batch_retries,
        "grad_accum": s.global_batch // (micro * backend.world),
    }


def _memory(s: Settings, progress, backend: Backend, peak: devices.PeakMemory, status: str) -> dict:
    """The measured peak (the split held on the device left out), the predicted one, and how an OOM is known."""
    return {
        "peak_mem_bytes": max(0, peak.peak() - (progress.data_bytes or 0)) if progress.params is not None else None,
        "peak_mem_kind": peak.kind,
        **peak.on_device(),
        "predicted_peak_bytes": predicted_peak(s, progress.micro_batch or s.micro_batch, backend),
        "oom_basis": "measured" if status == "oom" else None,
        "data_on_device": progress.data_on_device,
        "data_bytes": progress.data_bytes,
    }


def predicted_peak(s: Settings, micro_batch: int, backend: Backend) -> int:
    """What the memory model predicts for the micro-batch trained with, on this device and backend."""
    return memory.step_peak(
        s.family,
        s.attention,
        s.model_size,
        image_size=s.image_size,
        patch_size=s.patch_size,
        channels=s.channels,
        precision=s.precision,
        micro_batch=micro_batch,
        device=backend.device.type,
        backend=backend.name,
    ).total
