"""One outcome for a cell of several ranks, whatever happened on each, and a record even when rank 0 could not write it.

Ranks can end differently: one runs out of memory while the others wait for it in a collective.
Under NCCL a collective whose peer is gone never returns (until the watchdog's timeout, minutes
of every GPU), so a rank whose own outcome ends the cell does not wait for anyone: it writes how
it ended, with its whole record, to a small file in the cell's directory (shared by the nodes of
a job) and exits non-zero at once, and the launcher (``srun --kill-on-bad-exit``, torchrun,
horovodrun) stops the others. Ranks that end well report ``ok`` and rank 0, which writes the
record, reads them all (:func:`agree`). When rank 0 was stopped before it could, the job builds
the cell's record from the files (:func:`cell_record`): any rank out of memory makes the cell
``oom``, else any failure ``failed``, naming the rank, else any skip ``skipped``. A rank stopped
ahead of its time limit (``interrupted``, with a checkpoint) leaves no record: the job runs again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from mammoscale import files, records

log = logging.getLogger("mammoscale.train")

INTERRUPTED = "interrupted"
"""A rank's outcome that is no cell status: the rank stopped at a step boundary ahead of a time limit (or on request),
its checkpoint written, and the cell runs again."""
SEVERITY = {records.OK: 0, INTERRUPTED: 1, records.SKIPPED: 2, records.FAILED: 3, records.OOM: 4}
"""The outcome that wins when ranks disagree."""
POLL_S = 0.5


def path(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / files.fill(files.RANK_OUTCOME, rank=rank)


def forget(out_dir: Path, rank: int) -> None:
    """Remove this rank's outcome of an earlier run of the cell (a rank starting anew has none yet)."""
    path(out_dir, rank).unlink(missing_ok=True)


def report(out_dir: Path, rank: int, status: str, message: str | None, record: dict | None = None) -> None:
    """How this rank ended, and (unless ``ok`` or ``interrupted``) its own record, for the cell's record."""
    files.write_json({"rank": rank, "status": status, "message": message, "record": record}, path(out_dir, rank))


def found(out_dir: Path, world: int) -> dict[int, dict]:
    """The outcomes the ranks of ``world`` left in ``out_dir``, by rank."""
    return {rank: files.read_json(path(out_dir, rank)) for rank in range(world) if path(out_dir, rank).is_file()}


def worst(outcomes: dict[int, dict]) -> int:
    """The rank whose outcome is the cell's: the most severe, the lowest rank among equals."""
    return max(outcomes, key=lambda rank: (SEVERITY[outcomes[rank]["status"]], -rank))


def clear(out_dir: Path, world: int) -> None:
    for rank in range(world):
        forget(out_dir, rank)


def agree(out_dir: Path, world: int, status: str, message: str | None, *, wait_s: float) -> tuple[str, str | None]:
    """Rank 0's status and message for the cell, from its own and every other rank's outcome.

    Waits up to ``wait_s`` for ranks that have not reported; one that never does counts as failed.
    """
    outcomes = {0: {"status": status, "message": message}}
    deadline = time.monotonic() + wait_s
    while len(outcomes) < world:
        outcomes = {**found(out_dir, world), 0: outcomes[0]}
        if len(outcomes) < world:
            if time.monotonic() > deadline:
                for rank in set(range(world)) - set(outcomes):
                    said = f"gave no outcome within {wait_s:.0f} s (the process died?)"
                    outcomes[rank] = {"status": records.FAILED, "message": said}
                break
            time.sleep(POLL_S)
    clear(out_dir, world)
    rank = worst(outcomes)
    final, said = outcomes[rank]["status"], outcomes[rank]["message"]
    if rank != 0 and SEVERITY[final] > SEVERITY[status]:
        log.warning("rank %d ended %s (%s); rank 0 ended %s: the cell is %s", rank, final, said, status, final)
        return final, f"rank {rank}: {said}"
    return status, message


def cell_record(outcomes: dict[int, dict]) -> dict | None:
    """The cell's record built from its ranks' outcomes, when rank 0 could not write it: the record of the rank whose
    outcome is the cell's, its message naming the rank; None when no rank left a record."""
    recorded = {rank: outcome for rank, outcome in outcomes.items() if outcome.get("record")}
    if not recorded:
        return None
    rank = worst(recorded)
    record = dict(recorded[rank]["record"])
    if rank != 0:
        record["message"] = f"rank {rank}: {record['message']}"
    return record
