"""Writing files so that a reader never sees half of one and a failed writer leaves nothing behind.

Every file is written to a temporary name in its directory and renamed into place when complete
(:func:`atomic_path`), so a half-written file never appears under its real name, whatever kills the
writer. The temporary file is removed when the writer fails; one left by a writer killed outright
(SIGKILL runs no cleanup) is removed by the next writer of the same file. A full disk is one line
naming the file (:class:`DiskFullError`), and an array's blocks are claimed before it is filled
(:func:`atomic_array`), so that running out of space is that error, never a SIGBUS halfway through.
:mod:`mammoscale.files` re-exports these.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from mammoscale.errors import UserError

log = logging.getLogger(__name__)


class DiskFullError(UserError, OSError):
    """No space (or no quota) left where a file is written: one line naming the file and the space left."""

    def __init__(self, message: str):
        OSError.__init__(self, errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` (synced) only if the block ends cleanly.

    The temporary file is removed when the block fails; one left by a writer that was killed (no
    ``finally`` runs after SIGKILL) is removed by the next writer of the same file. A full disk is
    a :class:`DiskFullError` naming the file, whatever step of the block found it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(exc, DiskFullError):
            raise disk_full(path) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


TEMPORARY = ".tmp"
"""The suffix of :func:`atomic_path`'s temporary files: ``.<name>.<pid>.tmp`` beside the file."""


def sweep_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` whose writer is no longer running on this machine (killed before
    it could clean up); the ones removed. A writer on another machine sharing the directory never writes the same
    file at the same time (Snakemake runs one job per output)."""
    swept = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{TEMPORARY}"):
        pid = tmp.name[len(path.name) + 2 : -len(TEMPORARY)]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)
            swept.append(tmp)
            log.warning("removed %s, left by a writer of %s that was killed", tmp, path.name)
    return swept


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def disk_full(path: Path | str) -> DiskFullError:
    """The error of a full disk (or quota) met writing ``path``: the file, and what is left where it goes."""
    path = Path(path)
    try:
        left = shutil.disk_usage(path.parent).free
        where = f"{left / 2**20:,.1f} MiB left there"
    except OSError:
        where = "its directory cannot be measured"
    return DiskFullError(f"no space left on device writing {path} ({where}): free space, or write elsewhere")


def write_csv(frame: pd.DataFrame, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_text(text: str, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(value, path: Path | str) -> None:
    write_text(json.dumps(value, indent=2) + "\n", path)


@contextlib.contextmanager
def atomic_array(path: Path | str, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """A writable memory map of ``shape`` (uint8, zeros) that becomes the ``.npy`` file ``path`` only
    if the block ends cleanly."""
    with atomic_path(path) as tmp:
        if 0 in shape:  # an empty file cannot be memory-mapped
            yield np.zeros(shape, np.uint8)
            with open(tmp, "wb") as handle:  # np.save(path) would append ".npy" to the name
                np.save(handle, np.zeros(shape, np.uint8))
        else:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            with open(tmp, "rb+") as handle:  # the blocks claimed now: a full disk is an error here, not a SIGBUS
                os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)  # on the first page written
            yield array
            array.flush()
            del array
