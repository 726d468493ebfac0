"""One logging set-up for command-line entries and Snakemake adapters.

Long steps report progress through :mod:`logging`; a Snakemake rule's log file gets the same
lines a terminal would. Codec libraries that chat at INFO level (openjpeg prints a line per
tile) are kept at WARNING.
"""

from __future__ import annotations

import logging
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET = ("openjpeg", "libjpeg", "rle", "jpeg_ls", "PIL", "matplotlib")


def configure(log_file: Path | str | None = None, *, level: int = logging.INFO) -> None:
    """Send log records to ``log_file`` (appending) or, without one, to standard error."""
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
