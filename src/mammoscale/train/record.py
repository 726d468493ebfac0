"""A cell's record (``metrics.json``): what it measured, what it was, and where and with what it ran.

:func:`metrics` turns a run's :class:`~mammoscale.train.loop.Progress` into the record of
DESIGN.md's schema, for every status; the schema check and the atomic write are
:func:`mammoscale.records.write_metrics`'s, so a cell validates its own record on a cluster node
before writing it, and a record that would break the tables is a bug caught at the source.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys

import torch

from mammoscale import provenance, records, stats, tasks
from mammoscale.plan import flops, memory
from mammoscale.plan.families import seq_len
from mammoscale.plan.launch import job_restarts
from mammoscale.plan.settings import Settings
from mammoscale.train import devices, energy, scores
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
    shape = {"image_size": s.image_size, "patch_size": s.patch_size, "channels": s.channels}
    per_image = flops.train_flops_per_image(s.family, s.model_size, **shape, outputs=tasks.task(s.task).outputs)
    timing = _timing(s, progress, status)
    throughput = timing["throughput_img_s"]
    achieved = flops.achieved_tflops(per_image, throughput) if throughput else None
    quality = quality or scores.unscored()
    return records.metrics_record(
        {
            "schema_version": records.METRICS_SCHEMA_VERSION,
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
            **timing,
            "epoch_times_s": progress.epoch_times,
            "train_time_s": sum(progress.epoch_times) if s.mode == "full" else (sum(progress.step_times) or None),
            **_memory(s, progress, backend, peak, status),
            "loader_workers": progress.loader_workers,
            **energy.record_fields(progress, s.global_batch * (progress.steps_done - (progress.resumed_step or 0))),
            "flops_per_img": per_image,
            "achieved_tflops": achieved,
            "mfu": flops.mfu(achieved, s.peak_tflops, backend.world) if achieved else None,
            **{key: quality[key] for key in scores.QUALITY_KEYS},
            "loss_curve": progress.loss_curve,
            "resumed_from_epoch": progress.resumed_from,
            "resumed_from_step": progress.resumed_step,
            "env": environment(backend.device, backend.name),
            "config": s.as_dict(),
        },
        complete=True,
    )


def _timing(s: Settings, progress, status: str) -> dict:
    """Throughput from the timed steps (the warm-up left out) cut into windows (:mod:`mammoscale.stats`): their
    median, its bootstrap interval and how much they vary; the median step; the input wait."""
    first = max(1, s.timing_warmup_steps)
    timed = progress.step_times[first:] if status == records.OK else []
    waits = progress.wait_times[first:] if status == records.OK else []
    # a throughput cell's timed steps cut into timing_windows; a full-mode cell's, one window an epoch of this process
    count = s.timing_windows if s.mode == "throughput" else progress.epochs_done - (progress.resumed_from or 0)
    windows = stats.Throughput.of(stats.window_throughputs(timed, s.global_batch, max(1, count)))
    throughput = windows.median
    if status == records.OK and throughput is None:
        log.warning(
            "no throughput: %d step(s) ran and the first %d are warm-up (timing_warmup_steps, at least 1)",
            len(progress.step_times),
            first,
        )
    if windows.unstable:
        log.warning(
            "throughput unstable: the %d windows' images/s vary by %.0f%% of their mean (over %.0f%%); %s",
            len(windows.windows),
            100 * windows.cv,
            100 * stats.UNSTABLE_CV,
            "the machine was busy or the windows too short: more train.timed_steps, or a quieter node"
            if s.mode == "throughput"
            else "the machine was busy while it trained (each epoch is a window): a quieter node",
        )
    return {
        "throughput_img_s": throughput,
        "throughput_ci_low_img_s": windows.ci_low,
        "throughput_ci_high_img_s": windows.ci_high,
        "throughput_cv": windows.cv,
        "throughput_unstable": windows.unstable,
        "throughput_windows_img_s": windows.windows,
        "step_time_s": statistics.median(timed) if timed else None,
        "input_wait_fraction": sum(waits) / sum(timed) if throughput else None,
        "loader_img_s": s.global_batch * len(waits) / sum(waits) if throughput and sum(waits) > 0 else None,
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
        outputs=tasks.task(s.task).outputs,
    ).total
