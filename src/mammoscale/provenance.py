"""Where and with what a step ran: package versions, the commit of the code, the host and the SLURM job.

Torch-free, so that the preprocessing steps record their versions as the training cells do;
the report puts both side by side.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path

PREPROCESSING_PACKAGES = ("pydicom", "numpy", "pillow", "scikit-image", "scipy")
"""What stage 1 and 2 compute with, besides the codec that decoded each image (recorded per image)."""


@functools.cache
def version(package: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(packages) -> dict[str, str | None]:
    return {package: version(package) for package in packages}


def git_commit() -> str | None:
    """The commit of the mammoscale checkout, ``+dirty`` when it has uncommitted changes; None outside git.

    ``MAMMOSCALE_GIT_COMMIT`` names it where the package is installed without its checkout.
    """
    if os.environ.get("MAMMOSCALE_GIT_COMMIT"):
        return os.environ["MAMMOSCALE_GIT_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def host() -> dict:
    """The machine and the SLURM job a step ran in."""
    return {
        "python": platform.python_version(),
        "mammoscale": version("mammoscale"),
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
