"""One outcome for a cell of several ranks, whatever happened on each.

Ranks can end differently: one runs out of memory while the others wait for it in a collective,
which then fails (a closed connection, or the bounded process-group timeout). Each rank writes how
it ended to a small file in the cell's directory (shared by the nodes of a job), and rank 0, which
writes the record, reads them all: any rank out of memory makes the cell ``oom``; else any failure
makes it ``failed``, naming the rank; else any skip ``skipped``. A collective that failed because a
peer ran out of memory is then explained, not reported as a crash, and rank 0 writes the record
even when it was not the rank that failed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from mammoscale import files

log = logging.getLogger("mammoscale.train")

SEVERITY = {"ok": 0, "skipped": 1, "failed": 2, "oom": 3}
"""The outcome that wins when ranks disagree."""
POLL_S = 0.5


def path(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / files.fill(files.RANK_OUTCOME, rank=rank)


def forget(out_dir: Path, rank: int) -> None:
    """Remove this rank's outcome of an earlier run of the cell (a rank starting anew has none yet)."""
    path(out_dir, rank).unlink(missing_ok=True)


def report(out_dir: Path, rank: int, status: str, message: str | None) -> None:
    files.write_json({"rank": rank, "status": status, "message": message}, path(out_dir, rank))


def agree(out_dir: Path, world: int, status: str, message: str | None, *, wait_s: float) -> tuple[str, str | None]:
    """Rank 0's status and message for the cell, from its own and every other rank's outcome.

    Waits up to ``wait_s`` for ranks that have not reported; one that never does counts as failed.
    """
    outcomes = {0: (status, message)}
    deadline = time.monotonic() + wait_s
    while len(outcomes) < world:
        for rank in range(1, world):
            if rank not in outcomes and path(out_dir, rank).is_file():
                found = files.read_json(path(out_dir, rank))
                outcomes[rank] = (found["status"], found["message"])
        if len(outcomes) < world:
            if time.monotonic() > deadline:
                for rank in set(range(world)) - set(outcomes):
                    outcomes[rank] = ("failed", f"gave no outcome within {wait_s:.0f} s (the process died?)")
                break
            time.sleep(POLL_S)
    for rank in range(world):
        path(out_dir, rank).unlink(missing_ok=True)
    worst = max(outcomes, key=lambda rank: (SEVERITY[outcomes[rank][0]], -rank))
    final, said = outcomes[worst]
    if worst != 0 and SEVERITY[final] > SEVERITY[status]:
        log.warning("rank %d ended %s (%s); rank 0 ended %s: the cell is %s", worst, final, said, status, final)
        return final, f"rank {worst}: {said}"
    return status, message
