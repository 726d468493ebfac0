"""One cell as a workflow job: its settings file, its launcher, and a failure Snakemake can see.

The rule ``train_cell`` calls :func:`run_job` with the cell's settings and its profile's launch
keys. A cell whose profile has a launcher (torchrun, horovod, several ranks) runs under it, in
processes of its own that each call :func:`mammoscale.train.run_cell`; otherwise it runs here.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import yaml

from mammoscale import files
from mammoscale.errors import UserError
from mammoscale.plan.launch import check_allocation, in_process, launch_command
from mammoscale.plan.settings import Settings
from mammoscale.train import checkpoint, rendezvous
from mammoscale.train.cell import run_cell

log = logging.getLogger(__name__)


def run_job(cell: dict, launch: dict, out_dir: Path | str) -> dict:
    """Run one cell as a workflow job: write ``cell.yaml``, launch, and fail the job if the cell failed.

    A checkpoint left in ``out_dir`` is resumed only when it is an unfinished run of these very
    settings (a requeued job); one of other settings, or of a finished run, means the workflow
    asked for this cell anew (a changed config, ``--forcerun``), so it is removed first.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_dict(cell)
    _drop_stale_checkpoint(out_dir, settings)
    (out_dir / files.FAILED_METRICS).unlink(missing_ok=True)
    cell_file = out_dir / files.CELL_SETTINGS
    files.write_text(yaml.safe_dump(cell, sort_keys=False), cell_file)
    if in_process(launch):
        result = run_cell(cell, out_dir)
    else:
        command = launch_command(launch, cell_file, out_dir)
        check_allocation(launch)
        with rendezvous.hosted(launch, settings.collective_timeout_s) as env:
            log.info("launching: %s", " ".join(command))
            code = subprocess.run(command, env={**os.environ, **env}).returncode
        metrics_file = out_dir / files.METRICS
        if not metrics_file.is_file():
            raise UserError(
                f"the cell's launcher exited {code} without writing {metrics_file}; see {out_dir / files.TRAIN_LOG}"
            )
        result = json.loads(metrics_file.read_text())
    if result["status"] == "failed":
        # Snakemake deletes a failed job's outputs: keep the record where the tables can find it
        os.replace(out_dir / files.METRICS, out_dir / files.FAILED_METRICS)
        raise UserError(f"cell {out_dir} failed: {result['message']} (record kept in {out_dir / files.FAILED_METRICS})")
    return result


def _drop_stale_checkpoint(out_dir: Path, settings: Settings) -> None:
    path = out_dir / checkpoint.NAME
    if not path.is_file():
        return
    try:
        state = checkpoint.load(out_dir, checkpoint.fingerprint(settings.training_identity()))
        stale = state["epoch"] >= settings.epochs
        reason = "of a finished run"
    except checkpoint.CheckpointError as exc:
        stale, reason = True, str(exc)
    if stale:
        log.warning("removing %s: %s", path, reason)
        path.unlink()
