"""A digest of the package's own source, for the Snakefile's params of the cheap post-cell steps.

Snakemake reruns a job when its script or params change, not when a library it imports does.
The tables, figures and report take seconds to redo, so their rules carry a digest of the
modules that compute them: a change to how a figure is drawn redraws it. Training cells do not
(hours of GPU time); force them with ``--forcerun train_cell`` after changing training code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
POST_CELL = ("aggregate", "captions", "claims", "figures", "report")


def digest(modules=POST_CELL, package: Path = PACKAGE) -> str:
    """16 hex digits of SHA-256 over the named modules' source files, in name order."""
    sha = hashlib.sha256()
    for name in sorted(modules):
        sha.update(name.encode() + b"\0" + (package / f"{name}.py").read_bytes())
    return sha.hexdigest()[:16]
