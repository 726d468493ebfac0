"""The cell's ``metrics.json``: its provenance block, its schema check and its atomic write.

The schema ships inside the package (``mammoscale/schemas/metrics.schema.json``; the workflow's
``workflow/schemas/metrics.schema.json`` links to it), so a cell validates its own record on a
cluster node before writing it, and a record that would break the tables is a bug caught at
the source.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import torch

SCHEMA_VERSION = 1


@functools.cache
def schema() -> dict:
    return json.loads(resources.files("mammoscale").joinpath("schemas/metrics.schema.json").read_text())


def validate(metrics: dict) -> None:
    """Raise ``jsonschema.ValidationError`` naming the field when ``metrics`` breaks the schema."""
    jsonschema.validate(metrics, schema())


def write(metrics: dict, path: Path | str) -> None:
    """Validate, then write ``path`` atomically (a reader never sees half a file)."""
    validate(metrics)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the mammoscale checkout, ``+dirty`` when it has uncommitted changes; None outside git."""
    if os.environ.get("MAMMOSCALE_GIT_COMMIT"):
        return os.environ["MAMMOSCALE_GIT_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def environment(device_names: list[str], device_type: str, backend: str) -> dict:
    """Where and with what a cell ran: devices, versions, commit, host, SLURM job."""
    env = {
        "devices": device_names,
        "device_count": len(device_names) if device_type == "cuda" else 0,
        "device_type": device_type,
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
        "x_transformers": _version("x-transformers"),
        "transformers": _version("transformers"),
        "flash_attn": _version("flash-attn") or _version("flash_attn"),
        "horovod": _version("horovod") if backend == "horovod" else None,
        "mammoscale": _version("mammoscale"),
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        # the job's GPUs as SLURM allocated them (inside a job step, SLURM sets SLURM_STEP_GPUS)
        "slurm_job_gpus": os.environ.get("SLURM_JOB_GPUS") or os.environ.get("SLURM_STEP_GPUS"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "argv": sys.argv,
    }
    return env
