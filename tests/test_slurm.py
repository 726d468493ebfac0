"""The embedded study through a real SLURM cluster (tests/local_slurm.py) with `--profile slurm`.

Each training job must get its own GPU from SLURM (recorded in its metrics.json: the job id,
SLURM_JOB_GPUS and CUDA_VISIBLE_DEVICES). Status comes from `squeue`: without slurmdbd,
`sacct` does not answer, and running MariaDB + slurmdbd in CI would test the database, not
the workflow. Skipped, with the reason, where the machine cannot run SLURM (not root).
"""

from __future__ import annotations

import json
import shutil

import pytest

import local_slurm
from conftest import REPO
from test_workflow import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.workflow
REASON = local_slurm.unavailable_reason()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if REASON:
        pytest.skip(f"no local SLURM: {REASON}")
    with local_slurm.cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


def test_the_study_runs_through_slurm_with_a_gpu_per_cell(slurm, tmp_path, monkeypatch):
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    workdir = copy_workflow(tmp_path / "wf")
    shutil.copytree(REPO / "slurm", workdir / "slurm")
    snakemake(
        workdir,
        "--profile",
        "slurm",
        "--configfile",
        "config/test.yaml",
        "--config",
        "grid={hardware: [slurm-gpu], extra_cells: [{hardware: slurm-xe8545, variant: flash, image_size: 64, "
        "patch_size: 32}]}",
        "train={global_batch: 4}",
        "--slurm-status-command",
        "squeue",
        "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "2",
        "--default-resources",
        "mem_mb=500",
        "runtime=10",
        "--set-threads",
        "cache_views=1",
        "--latency-wait",
        "5",
        "all",
    )
    runs = sorted((workdir / "results" / "runs" / "slurm-gpu").rglob("metrics.json"))
    assert len(runs) == 4
    jobs = set()
    for path in runs:
        record = json.loads(path.read_text())
        env = record["env"]
        assert record["status"] == "ok" and env["slurm_job_id"]
        assert env["slurm_job_gpus"] is not None and len(env["slurm_job_gpus"].split(",")) == 1
        assert env["cuda_visible_devices"] is not None and len(env["cuda_visible_devices"].split(",")) == 1
        jobs.add(env["slurm_job_id"])
    assert len(jobs) == 4, "every cell ran as its own SLURM job"
    # a server of the study's shape: one task holding 32 CPUs and 4 GPUs, 4 DDP ranks started inside it
    server = json.loads(
        (workdir / "results" / "runs" / "slurm-xe8545" / "flash" / "img64_p32" / "metrics.json").read_text()
    )
    assert server["status"] == "ok" and server["world_size"] == 4 and server["backend"] == "ddp"
    assert len(server["env"]["slurm_job_gpus"].split(",")) == 4 and server["env"]["slurm_job_id"] not in jobs
    again = snakemake(
        workdir,
        "--profile",
        "slurm",
        "--configfile",
        "config/test.yaml",
        "--config",
        "grid={hardware: [slurm-gpu], extra_cells: [{hardware: slurm-xe8545, variant: flash, image_size: 64, "
        "patch_size: 32}]}",
        "train={global_batch: 4}",
        "--slurm-no-account",
        "-n",
        "all",
    )
    assert planned_jobs(again) == {}
