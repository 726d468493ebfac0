"""One cell as a workflow job: its settings, its ranks, its record whatever happened, a failure Snakemake can see.

The rule ``train_cell`` calls :func:`run_job` with the cell's settings and its profile's launch
keys. A cell of one rank with no launcher, outside a SLURM job step, runs here; any other starts
its ranks (:func:`mammoscale.plan.launch.launch_command`: ``srun`` in a SLURM job, torchrun or
horovodrun outside one), each writing everything to its own log, and the job then:

- takes the record rank 0 wrote, or builds it from the ranks' outcomes when rank 0 was stopped
  before it could (another rank ended the cell: :mod:`mammoscale.train.outcome`); an OOM is the
  cell's result, recorded and not retried;
- puts the last lines of every rank's log into a failed or out-of-memory cell's record, and on
  standard error;
- when the ranks stopped ahead of the time limit (:mod:`mammoscale.train.stopping`), has SLURM
  requeue the job (the same job, resuming from its checkpoint) or, where it cannot, fails it so
  that Snakemake's retry resumes it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from mammoscale import files, records
from mammoscale.errors import UserError
from mammoscale.plan.launch import check_allocation, in_process, launch_command, rank_env, ranks, requeue
from mammoscale.plan.settings import Settings
from mammoscale.train import checkpoint, outcome, ranges, rendezvous, stopping
from mammoscale.train.cell import run_cell

log = logging.getLogger(__name__)

TAIL_LINES = 20
"""Lines of each rank's log kept in a failed cell's record."""
TAIL_BYTES = 1 << 16
"""How much of the end of a rank's log is read for them (a log with NCCL's INFO lines runs to megabytes)."""
REQUEUE_WAIT_S = 300
"""How long the job waits for SLURM to stop it after asking for a requeue."""


def run_job(cell: dict, launch: dict, out_dir: Path | str) -> dict:
    """Run one cell as a workflow job: write ``cell.yaml``, run its ranks, and fail the job if the cell failed.

    A checkpoint left in ``out_dir`` is resumed only when it is an unfinished run of these very
    settings (a requeued job); one of a finished run means the workflow asked for this cell anew
    (``--forcerun``), so it is removed first; one of other settings (a changed config), or a damaged
    one, is set aside (:mod:`mammoscale.train.checkpoint`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_dict(cell)
    _drop_stale_checkpoint(out_dir, settings)
    (out_dir / files.FAILED_METRICS).unlink(missing_ok=True)
    cell_file = out_dir / files.CELL_SETTINGS
    files.write_text(yaml.safe_dump(cell, sort_keys=False), cell_file)
    if in_process(launch):
        os.environ.update(rank_env(launch))
        try:
            result = run_cell(cell, out_dir)
        except stopping.Interrupted as exc:
            _again_later(str(exc))
    else:
        result = launched(settings, launch, cell_file, out_dir)
    if result["status"] == records.FAILED:
        # Snakemake deletes a failed job's outputs: keep the record where the tables can find it
        os.replace(out_dir / files.METRICS, out_dir / files.FAILED_METRICS)
        raise UserError(f"cell {out_dir} failed: {result['message']} (record kept in {out_dir / files.FAILED_METRICS})")
    return result


def run_profile(cell: dict, launch: dict, out_dir: Path | str) -> dict:
    """Profile one cell (the rule ``profile_cell``): ``cell`` its settings as profiled
    (:func:`mammoscale.plan.grid.profile_settings`: its warm-up steps, then its timed steps under the profiler,
    :mod:`mammoscale.train.profiling`), its ranks started as :func:`run_job` starts them; the profile's files, and
    the profiled run's own record and log, in ``out_dir``."""
    out_dir = Path(out_dir)
    for name in (files.PROFILE_TRACE, files.PROFILE_OPERATORS, files.PROFILE_BREAKDOWN):
        (out_dir / name).unlink(missing_ok=True)
    asked = os.environ.get(ranges.ENV)
    os.environ[ranges.ENV] = "profile"  # for this process's rank, and those a launcher starts
    try:
        result = run_job(cell, launch, out_dir)
    finally:
        os.environ.pop(ranges.ENV)
        os.environ.update({ranges.ENV: asked} if asked is not None else {})
    if not (out_dir / files.PROFILE_BREAKDOWN).is_file():
        if result["status"] == records.OK:
            raise RuntimeError(f"the profiled cell ended ok but wrote no profile: {out_dir / files.TRAIN_LOG}")
        # out of memory, or a kernel this device cannot run: a finding about the cell, told where its profile would be
        said = f"not profiled: the cell ended {result['status']} ({result['message']})"
        log.warning("%s; %s and %s say so", said, files.PROFILE_BREAKDOWN, files.PROFILE_TRACE)
        files.write_text(json.dumps({"traceEvents": [], "mammoscale": said}) + "\n", out_dir / files.PROFILE_TRACE)
        files.OPERATOR_TABLE.write(files.OPERATOR_TABLE.frame(), out_dir / files.PROFILE_OPERATORS)
        files.BREAKDOWN_TABLE.write(files.BREAKDOWN_TABLE.frame(), out_dir / files.PROFILE_BREAKDOWN)
    return result


def launched(settings: Settings, launch: dict, cell_file: Path, out_dir: Path) -> dict:
    """Start the cell's ranks and wait for them; the cell's record (:func:`finish`)."""
    command = launch_command(launch, cell_file, out_dir)
    check_allocation(launch)
    world = ranks(launch)
    outcome.clear(out_dir, world)
    (out_dir / files.METRICS).unlink(missing_ok=True)
    for rank in range(world):
        (out_dir / files.fill(files.RANK_LOG, rank=rank)).unlink(missing_ok=True)
    with rendezvous.hosted(launch, settings.collective_timeout_s) as meet:
        log.info("launching: %s", " ".join(command))
        code = subprocess.run(command, env={**os.environ, **rank_env(launch), **meet}).returncode
    return finish(out_dir, world, code)


def finish(out_dir: Path, world: int, code: int) -> dict:
    """The record of a cell whose ``world`` ranks have ended (their launcher exited ``code``): rank 0's, else the one
    the ranks' outcomes make; the last lines of every rank's log added where the cell did not end ``ok``."""
    metrics = out_dir / files.METRICS
    found = outcome.found(out_dir, world)
    if metrics.is_file():
        result = json.loads(metrics.read_text())
    elif found and all(said["status"] == outcome.INTERRUPTED for said in found.values()):
        outcome.clear(out_dir, world)
        _again_later(found[min(found)]["message"])
    else:
        result = outcome.cell_record(found)
        if result is None:
            tails = log_tails(out_dir, world)
            _tell(tails)
            raise UserError(
                f"the cell's ranks exited {code} and none wrote how it ended, nor {metrics}; their logs: "
                f"{out_dir}/{files.fill(files.RANK_LOG, rank='*')}"
            )
        log.warning("the cell's record is built from its ranks' outcomes: rank 0 was stopped before it could write it")
    outcome.clear(out_dir, world)
    if result["status"] != records.OK:
        tails = log_tails(out_dir, world)
        for placed in result.get("ranks") or []:
            placed["log_tail"] = tails.get(placed["rank"], [])
        _tell(tails)
    records.write_metrics(result, metrics)
    return result


def log_tails(out_dir: Path, world: int, lines: int = TAIL_LINES) -> dict[int, list[str]]:
    """The last ``lines`` lines of each rank's log that exists, by rank."""
    tails = {}
    for rank in range(world):
        path = out_dir / files.fill(files.RANK_LOG, rank=rank)
        if path.is_file():
            with open(path, "rb") as log_file:
                log_file.seek(max(0, path.stat().st_size - TAIL_BYTES))
                tails[rank] = log_file.read().decode(errors="replace").splitlines()[-lines:]
    return tails


def _tell(tails: dict[int, list[str]]) -> None:
    """Every rank's last lines, in the job's log and on standard error: the first look at a failure."""
    for rank, lines in tails.items():
        text = "\n".join(f"  | {line}" for line in lines) or "  | (empty)"
        log.error("rank %d, the last lines of its log:\n%s", rank, text)
        print(f"rank {rank}, the last lines of its log:\n{text}", file=sys.stderr)


def _again_later(why: str) -> None:
    """The cell stopped ahead of its time limit with a checkpoint: have SLURM requeue this job and wait to be stopped,
    or (where it cannot) fail the job so that a retry resumes from the checkpoint."""
    refused = requeue()
    if refused is None:
        log.warning("%s: SLURM requeues this job, which resumes from the checkpoint", why)
        time.sleep(REQUEUE_WAIT_S)
        refused = f"SLURM took the requeue but did not stop this job within {REQUEUE_WAIT_S} s"
    raise UserError(f"{why}; not requeued ({refused}): rerun the cell, which resumes from its checkpoint")


def _drop_stale_checkpoint(out_dir: Path, settings: Settings) -> None:
    """A finished run's checkpoints mean the workflow asked for the cell anew (``--forcerun``): removed, so that the
    cell starts over. A damaged one, or one of other settings (a changed config), is set aside by the load itself."""
    state = checkpoint.load(out_dir, checkpoint.fingerprint(settings.training_identity()))
    if state is not None and state["epoch"] >= settings.epochs:
        removed = checkpoint.discard(out_dir)
        log.warning("removing %s: of a finished run", ", ".join(str(path) for path in removed))
