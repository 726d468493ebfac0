"""One logging set-up for command-line entries and Snakemake adapters.

Long steps report progress through :mod:`logging`; a Snakemake rule's log file gets the same
lines a terminal would. Codec libraries that chat at INFO level (openjpeg prints a line per
tile) are kept at WARNING. An error that ends the step is written to the log as well: a
:class:`~mammoscale.errors.UserError` as its message alone (on standard error too), anything
else with its traceback.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from mammoscale.errors import UserError

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
    sys.excepthook = _report


def tell(message: str) -> None:
    """A warning the user must see: in the log, and as one line on standard error (the terminal)."""
    logging.getLogger("mammoscale").warning("%s", message)
    if not any(getattr(h, "stream", None) is sys.stderr for h in logging.getLogger().handlers):
        print(f"warning: {message}", file=sys.stderr)


def _report(kind, error, trace) -> None:
    if isinstance(error, UserError):
        logging.getLogger("mammoscale").error("%s", error)
        print(f"error: {error}", file=sys.stderr)
    else:
        logging.getLogger("mammoscale").error("unexpected error", exc_info=(kind, error, trace))
        sys.__excepthook__(kind, error, trace)


@contextlib.contextmanager
def also_to(path: Path | str | None, logger: str = "mammoscale"):
    """Copy ``logger``'s INFO records into the file ``path`` too while the block runs (None: nothing)."""
    if path is None:
        yield
        return
    package = logging.getLogger(logger)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    level = package.level
    package.addHandler(handler)
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
        handler.close()
