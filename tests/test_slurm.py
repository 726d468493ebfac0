"""The embedded study through a real SLURM cluster of two nodes (tests/local_slurm.py) with `--profile slurm`.

Each training job must get its own GPU from SLURM (recorded in its metrics.json: the job id,
SLURM_JOB_GPUS and CUDA_VISIBLE_DEVICES); a cell on two nodes runs a rank on each, started by
srun, for the DDP and the Horovod launcher alike, and trains as one process would. Status comes
from `squeue`: without slurmdbd, `sacct` does not answer, and running MariaDB + slurmdbd in CI
would test the database, not the workflow. Skipped, with the reason, where the machine cannot
run SLURM (not root).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from mammoscale import files
from mammoscale.train import checkpoint, run_cell

import local_slurm
from conftest import REPO
from test_workflow import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.workflow
REASON = local_slurm.unavailable_reason()
STATUS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "2",
]
# tests/conftest.py's training dataset: both classes in the train and val splits, as full-mode cells need
DATASET = "synthetic={n_patients: 16, image_shape: [192, 144], seed: 9, cancer_rate: 0.3}"
LONG_EPOCHS = 700
"""Epochs of the time-limit test's cell: about 2 minutes of training (0.18 s an epoch on 2 cores), past the signal
SLURM sends 60 to 90 s into a 2-minute job (``--signal=USR1@30``; the controller checks limits every 30 s)."""
TWO_NODE_CELLS = (
    "grid={hardware: [slurm-gpu], extra_cells: ["
    "{hardware: slurm-2node-ddp, variant: flash, image_size: 64, patch_size: 32}, "
    "{hardware: slurm-2node-horovod, variant: flash, image_size: 64, patch_size: 32}]}"
)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if REASON:
        pytest.skip(f"no local SLURM: {REASON}")
    with local_slurm.cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def workdir(slurm, tmp_path_factory):
    """One workflow copy for the module: the first test builds its cache, the two-node tests reuse it."""
    workdir = copy_workflow(tmp_path_factory.mktemp("wf"))
    shutil.copytree(REPO / "slurm", workdir / "slurm")
    return workdir


def through_slurm(slurm, workdir: Path, config: list[str], targets: list[str], *, dry_run: bool = False):
    """``snakemake --profile slurm`` on the test profile, with ``config`` after the module's dataset."""
    return snakemake(
        workdir,
        "--profile",
        "slurm",
        "--configfile",
        "config/test.yaml",
        *STATUS,
        "--default-resources",
        "mem_mb=500",
        "runtime=10",
        "--set-threads",
        "cache_views=1",
        "--latency-wait",
        "5",
        *(["-n"] if dry_run else []),
        "--config",
        DATASET,
        *config,
        "--",
        *targets,
        env={"SLURM_CONF": slurm.env["SLURM_CONF"]},
    )


def test_the_study_runs_through_slurm_with_a_gpu_per_cell(slurm, workdir):
    config = [
        "grid={hardware: [slurm-gpu], extra_cells: [{hardware: slurm-xe8545, variant: flash, image_size: 64, "
        "patch_size: 32}]}",
        "train={global_batch: 4}",
    ]
    through_slurm(slurm, workdir, config, ["all"])
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
    assert [(rank["host"], rank["local_rank"]) for rank in server["ranks"]] == [
        (server["env"]["host"], i) for i in range(4)
    ]
    again = through_slurm(slurm, workdir, config, ["all"], dry_run=True)
    assert planned_jobs(again) == {}


def one_process(workdir: Path, run_dir: Path, out: Path) -> dict:
    """The cell a run directory holds, trained again by one process (no launcher) with the same global batch."""
    settings = yaml.safe_load((run_dir / files.CELL_SETTINGS).read_text())
    cache_root = workdir / settings["cache_root"]  # relative to the workflow's directory
    return run_cell({**settings, "backend": "none", "local_scratch": None, "cache_root": str(cache_root)}, out)


def assert_on_two_nodes(record: dict, backend: str, per_node: int) -> None:
    """``per_node`` ranks on each node (in blocks: the first node's ranks first), each seeing the ``per_node``
    GPUs SLURM gave its node, all in one SLURM job."""
    world = per_node * len(local_slurm.NODES)
    assert record["status"] == "ok" and record["world_size"] == world and record["backend"] == backend
    ranks = record["ranks"]
    assert [rank["rank"] for rank in ranks] == list(range(world))
    assert [rank["local_rank"] for rank in ranks] == [i % per_node for i in range(world)]
    assert [rank["host"] for rank in ranks] == [node for node in local_slurm.NODES for _ in range(per_node)]
    assert {rank["slurm_job_id"] for rank in ranks} == {record["env"]["slurm_job_id"]}
    for rank in ranks:
        assert rank["slurm_node_gpus"] is not None and len(rank["slurm_node_gpus"].split(",")) == per_node, rank
        assert rank["cuda_visible_devices"] is not None and len(rank["cuda_visible_devices"].split(",")) == per_node


def test_a_cell_on_two_nodes_trains_as_one_process_with_either_launcher(slurm, workdir, tmp_path):
    """Both two-node cells at once, sharing both nodes (ports, staging, checkpoints must not clash): DDP with
    one rank on each node, Horovod with two."""
    scratch = tmp_path / "scratch"
    through_slurm(
        slurm,
        workdir,
        [TWO_NODE_CELLS, "train={global_batch: 4, mode: full, epochs: 2}", f"cache={{local_scratch: {scratch}}}"],
        [
            f"results/runs/{hardware}/flash/img64_p32/{files.METRICS}"
            for hardware in ("slurm-2node-ddp", "slurm-2node-horovod")
        ],
    )
    records = {}
    for hardware, backend, per_node in (("slurm-2node-ddp", "ddp", 1), ("slurm-2node-horovod", "horovod", 2)):
        run_dir = workdir / "results" / "runs" / hardware / "flash" / "img64_p32"
        records[backend] = json.loads((run_dir / files.METRICS).read_text())
        assert_on_two_nodes(records[backend], backend, per_node)
    jobs = [int(record["env"]["slurm_job_id"]) for record in records.values()]
    allocations = slurm.allocations()
    (nodes_a, start_a, end_a), (nodes_b, start_b, end_b) = (allocations[job] for job in jobs)
    assert nodes_a == nodes_b == f"msnode[1-{len(local_slurm.NODES)}]"
    assert start_a < end_b and start_b < end_a, f"the two cells' jobs did not overlap: {allocations}"
    reference = one_process(workdir, run_dir, tmp_path / "one")
    assert reference["world_size"] == 1 and reference["epochs"] == 2
    for record in records.values():
        assert record["grad_accum"] * record["micro_batch"] * record["world_size"] == reference["global_batch"]
        assert record["loss_curve"] == pytest.approx(reference["loss_curve"], rel=1e-4)
        assert record["val_auc"] == pytest.approx(reference["val_auc"], abs=1e-6)
    assert list(scratch.rglob(files.TILE_INDEX.split("/")[-1])), "the cells staged the cache to local scratch"


def test_a_cell_past_its_time_limit_is_signalled_requeued_and_resumes(slurm, workdir, tmp_path):
    """A two-node cell whose job's limit (2 minutes) is shorter than its training: SLURM signals its ranks 30 s ahead
    (--signal=USR1@30, from the plan), they stop after the same step with a checkpoint, the job has SLURM requeue it,
    and the requeued job resumes mid-run; the cell ends with the loss curve and AUC of one uninterrupted process."""
    run_dir = workdir / "results" / "runs" / "slurm-2node-ddp" / "flash" / "img64_p32"
    limit = "hardware={slurm-2node-ddp: {runtime_min: 2}}"
    config = [TWO_NODE_CELLS, limit, f"train={{global_batch: 4, mode: full, epochs: {LONG_EPOCHS}}}"]
    through_slurm(slurm, workdir, config, [str((run_dir / files.METRICS).relative_to(workdir))])
    record = json.loads((run_dir / files.METRICS).read_text())
    assert "SIGUSR1 (asked here): stopping after step" in (run_dir / files.TRAIN_LOG).read_text()
    assert_on_two_nodes(record, "ddp", 1)
    assert record["env"]["slurm_restarts"] >= 1, "the job was never requeued"
    assert record["resumed_from_step"] is not None and 0 < record["resumed_from_step"] < len(record["loss_curve"])
    reference = one_process(workdir, run_dir, tmp_path / "one")
    assert record["epochs"] == reference["epochs"] == LONG_EPOCHS
    # two ranks sum their gradients in another order than one process: 1e-4 of the loss, or 1e-6 once it is near 0
    assert record["loss_curve"] == pytest.approx(reference["loss_curve"], rel=1e-4, abs=1e-6)
    assert record["val_auc"] == pytest.approx(reference["val_auc"], abs=1e-6)
    slurm.wait_idle()


def test_a_node_that_dies_mid_run_resumes_from_the_last_checkpoint(slurm, workdir, tmp_path):
    """Node 2 is killed (its slurmd, the job step, the rank) after the first epoch's checkpoint; SLURM marks it
    down; the job fails or is requeued; the node comes back; the rerun resumes and ends as an uninterrupted run."""
    run_dir = workdir / "results" / "runs" / "slurm-2node-ddp" / "flash" / "img64_p32"
    epochs = 20  # about 3 s of training: time to kill it after the first checkpoint
    killed = threading.Event()

    def kill_after_first_checkpoint():
        deadline = time.monotonic() + 500
        while time.monotonic() < deadline:
            if (run_dir / checkpoint.NAME).is_file() and (run_dir / files.CELL_SETTINGS).is_file():
                settings = yaml.safe_load((run_dir / files.CELL_SETTINGS).read_text())
                if settings.get("epochs") == epochs:
                    slurm.kill_node("msnode2")
                    killed.set()
                    time.sleep(3 * local_slurm.SLURMD_TIMEOUT_S)  # down, as SLURM sees it, then back
                    slurm.start_node("msnode2")
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    result = through_slurm(
        slurm,
        workdir,
        [TWO_NODE_CELLS, f"train={{global_batch: 4, mode: full, epochs: {epochs}}}"],
        [str((run_dir / files.METRICS).relative_to(workdir))],
    )
    killer.join(timeout=120)
    assert killed.is_set(), "the run ended before its first checkpoint could be interrupted"
    record = json.loads((run_dir / files.METRICS).read_text())
    assert_on_two_nodes(record, "ddp", 1)
    assert record["resumed_from_epoch"] is not None and 1 <= record["resumed_from_epoch"] < epochs, result.stdout
    reference = one_process(workdir, run_dir, tmp_path / "one")
    assert record["epochs"] == reference["epochs"] == epochs
    assert record["loss_curve"] == pytest.approx(reference["loss_curve"], rel=1e-4)
    assert record["val_auc"] == pytest.approx(reference["val_auc"], abs=1e-6)
    slurm.wait_idle()


SCALING_PROFILES = (
    "hardware={"
    "scale-1: {launcher: none, nodes: 1, gpus_per_node: 1, cpus_per_task: 1, mem_mb: 1000, runtime_min: 10, "
    "micro_batch: 2, precision: fp32, device: cpu}, "
    "scale-2: {launcher: torchrun, nodes: 1, gpus_per_node: 2, cpus_per_task: 2, mem_mb: 1000, runtime_min: 10, "
    "micro_batch: 2, precision: fp32, device: cpu}, "
    "scale-2nodes: {launcher: torchrun, nodes: 2, gpus_per_node: 1, cpus_per_task: 1, mem_mb: 1000, runtime_min: 10, "
    "micro_batch: 2, precision: fp32, device: cpu}}"
)
"""A scaling sweep of CPU ranks (a fake GPU each, gloo): 1 rank, 2 ranks on one node, 1 rank on each of two nodes."""


def test_a_scaling_sweep_over_ranks_and_nodes_gives_its_table_and_figure(slurm, workdir):
    """One cell (vit-tiny, 64 px) on the three profiles, each its own SLURM job, to the scaling table and figure:
    one series of three points, each point's ranks and nodes those its record ran on."""
    config = [
        SCALING_PROFILES,
        "grid={image_sizes: [64], patch_sizes: [32], variants: {flash: {family: xtransformers, attention: flash}}, "
        "hardware: [scale-1, scale-2, scale-2nodes], extra_cells: []}",
        "cache={canonical_size: 128}",  # the module's cache (64 and 128 px): not rebuilt for this grid
        "figures={reference: {image_size: 64, patch_size: 32}}",
        "train={global_batch: 4, timed_steps: 5, timing_windows: 5}",  # five windows: the speed-ups' intervals
    ]
    through_slurm(slurm, workdir, config, [files.SCALING_CSV, files.fill(files.FIGURE, figure="scaling", ext="png")])
    table = files.SCALING_TABLE.read(workdir / files.SCALING_CSV)
    assert len(table) == 3 and table["series"].nunique() == 1, table
    assert table["hardware"].tolist() == ["scale-1", "scale-2", "scale-2nodes"]
    assert table["ranks"].tolist() == [1, 2, 2] and table["nodes"].tolist() == [1, 1, 2]
    assert (table["status"] == "ok").all() and (table["throughput_img_s"] > 0).all()
    assert table["efficiency"].notna().all() and table["efficiency"].iloc[0] == 1.0
    assert table["efficiency"].tolist() == pytest.approx((table["speedup"] / table["ranks"]).tolist())
    assert table["speedup_ci_low"].iloc[1:].notna().all() and (table["time_to_train_h"] > 0).all()
    for hardware, ranks, nodes in zip(table["hardware"], table["ranks"], table["nodes"]):
        record = json.loads((workdir / files.RUNS / hardware / "flash" / "img64_p32" / files.METRICS).read_text())
        assert record["world_size"] == ranks and len({rank["host"] for rank in record["ranks"]}) == nodes, hardware
    assert (workdir / files.fill(files.FIGURE, figure="scaling", ext="png")).stat().st_size > 0
