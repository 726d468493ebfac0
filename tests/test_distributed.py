"""Data-parallel training: 2 ranks under torchrun (DDP, gloo) and horovodrun (Horovod, gloo) train the same
model as one process with the same global batch; ranks come from torchrun's or SLURM's environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mammoscale import files, records, train
from mammoscale.errors import UserError
from mammoscale.plan import launch
from mammoscale.train import backends

from conftest import Preempted, preempt_after_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BIN = Path(sys.executable).parent


def need_horovod() -> None:
    """Skip without Horovod, or fail where it is required (make test sets MAMMOSCALE_REQUIRE_HOROVOD=1)."""
    try:
        import horovod.torch  # noqa: F401
    except ImportError:
        if os.environ.get("MAMMOSCALE_REQUIRE_HOROVOD") == "1":
            pytest.fail(
                "Horovod is required here (MAMMOSCALE_REQUIRE_HOROVOD=1) but does not import: run `make horovod`"
            )
        pytest.skip("Horovod is not installed (make horovod)")


def cell(cache_root: Path, **overrides) -> dict:
    base = {
        "cache_root": str(cache_root),
        "image_size": 64,
        "patch_size": 16,
        "mode": "full",
        "epochs": 2,
        "global_batch": 8,
        "micro_batch": 4,
        "loader_workers": 0,
        "precision": "fp32",
        "lr": 1e-3,
        "checkpoint": False,
    }
    return {**base, **overrides}


def run_launched(launcher: list[str], out: Path, settings: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [f"{key}={value}" for key, value in settings.items()]
    proc = subprocess.run(
        [*launcher, "-m", "mammoscale.train", "--out", str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def single(train_cache, tmp_path_factory) -> dict:
    return train.run_cell(cell(train_cache), tmp_path_factory.mktemp("single"))


def assert_same_training(result: dict, single: dict, world: int) -> None:
    assert result["status"] == "ok" and result["world_size"] == world
    assert result["grad_accum"] * result["micro_batch"] * world == single["global_batch"] == result["global_batch"]
    assert result["loss_curve"] == pytest.approx(single["loss_curve"], rel=1e-4)
    assert result["val_auc"] == pytest.approx(single["val_auc"], abs=1e-6)


@pytest.mark.parametrize("micro_batch", [4, 2])
def test_two_ddp_ranks_under_torchrun_match_one_process(train_cache, tmp_path, single, micro_batch):
    """Without accumulation, and with two micro-batches a step (the first under no_sync, accumulating into the
    gradients DDP's zero_grad keeps as views of its buckets)."""
    launcher = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2"]
    result = run_launched(launcher, tmp_path, cell(train_cache, backend="ddp", micro_batch=micro_batch))
    assert_same_training(result, single, world=2)
    assert result["grad_accum"] == 4 // micro_batch and result["backend"] == "ddp"


def test_two_horovod_ranks_under_horovodrun_match_one_process(train_cache, tmp_path, single):
    need_horovod()
    launcher = [str(BIN / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo", sys.executable]
    result = run_launched(launcher, tmp_path, cell(train_cache, backend="horovod"))
    assert_same_training(result, single, world=2)
    assert result["backend"] == "horovod" and result["env"]["horovod"] == "0.28.1"


def run_as_srun_would(profile: dict, out: Path, settings: dict) -> dict:
    """The ranks of a cell on ``profile["nodes"]`` nodes (one rank each), started with the variables srun gives each
    task, meeting at the rendezvous the job's process holds (:func:`mammoscale.train.rendezvous.hosted`)."""
    from mammoscale.train import rendezvous

    nodes, per_node = profile["nodes"], launch.ranks_per_node(profile)
    args = [f"{key}={value}" for key, value in settings.items()]
    with rendezvous.hosted(profile, timeout_s=120) as meet:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "mammoscale.train", "--out", str(out), *args],
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HOROVOD_", "MASTER_"))},
                    **meet,
                    "OMP_NUM_THREADS": "1",
                    "SLURM_JOB_ID": "77",
                    "SLURM_PROCID": str(node * per_node + local),
                    "SLURM_NTASKS": str(nodes * per_node),
                    "SLURM_LOCALID": str(local),
                    "SLURM_NODEID": str(node),
                    "SLURM_NNODES": str(nodes),
                    "SLURM_TASKS_PER_NODE": f"{per_node}(x{nodes})",
                },
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for node in range(nodes)
            for local in range(per_node)
        ]
        outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), "\n".join(outputs)
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize(
    "launcher, backend, per_node", [("torchrun", "ddp", 0), ("horovod", "horovod", 0), ("horovod", "horovod", 2)]
)
def test_ranks_started_as_srun_starts_them_match_one_process(
    train_cache, tmp_path, single, launcher, backend, per_node
):
    """Two nodes of one rank (Horovod's local size 1, cross size 2), and of two (local 2, cross 2), as srun runs
    a cell on two nodes: the same training as one process."""
    if backend == "horovod":
        need_horovod()
    profile = {"launcher": launcher, "nodes": 2, "gpus_per_node": per_node, "cpus_per_task": 2}
    world = launch.ranks(profile)
    result = run_as_srun_would(profile, tmp_path, cell(train_cache, backend=backend, micro_batch=8 // world))
    assert_same_training(result, single, world=world)
    local = [rank % launch.ranks_per_node(profile) for rank in range(world)]
    assert [(rank["rank"], rank["local_rank"], rank["slurm_job_id"]) for rank in result["ranks"]] == [
        (rank, local[rank], "77") for rank in range(world)
    ]


def test_the_rendezvous_of_a_cell_on_one_node_is_its_launchers():
    from mammoscale.train import rendezvous

    with rendezvous.hosted({"launcher": "torchrun", "nodes": 1, "gpus_per_node": 8}) as env:
        assert env == {}


def test_two_cells_rendezvous_on_ports_of_their_own_and_name_the_interface():
    """Two jobs sharing a node: the kernel gives each rendezvous its own port."""
    from mammoscale.train import rendezvous

    profile = {"launcher": "torchrun", "nodes": 2, "gpus_per_node": 8, "network_interface": "ib0"}
    with rendezvous.hosted(profile) as first, rendezvous.hosted(profile) as second:
        assert first[rendezvous.STORE] != second[rendezvous.STORE]
        assert first["GLOO_SOCKET_IFNAME"] == first["NCCL_SOCKET_IFNAME"] == first["HOROVOD_GLOO_IFACE"] == "ib0"
    need_horovod()
    profile = {**profile, "launcher": "horovod", "network_interface": None}
    with rendezvous.hosted(profile) as first, rendezvous.hosted(profile) as second:
        assert first["HOROVOD_GLOO_RENDEZVOUS_PORT"] != second["HOROVOD_GLOO_RENDEZVOUS_PORT"]
        assert "HOROVOD_GLOO_IFACE" not in first


def test_a_horovod_cell_on_several_nodes_without_horovod_is_one_line(monkeypatch):
    from mammoscale.train import rendezvous

    monkeypatch.setitem(sys.modules, "horovod.runner.http.http_server", None)  # import fails, as without Horovod
    profile = {"launcher": "horovod", "nodes": 2, "gpus_per_node": 8}
    with (
        pytest.raises(UserError, match="backend horovod needs Horovod built against this torch"),
        rendezvous.hosted(profile),
    ):
        pass


def test_a_horovod_rank_learns_its_place_from_srun():
    env = {
        "SLURM_PROCID": "9",
        "SLURM_NTASKS": "16",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_NNODES": "2",
        "SLURM_NTASKS_PER_NODE": "8",
    }
    assert launch.horovod_env_from_slurm(env) == {
        "HOROVOD_RANK": "9",
        "HOROVOD_SIZE": "16",
        "HOROVOD_LOCAL_RANK": "1",
        "HOROVOD_LOCAL_SIZE": "8",
        "HOROVOD_CROSS_RANK": "1",
        "HOROVOD_CROSS_SIZE": "2",
        "HOROVOD_HOSTNAME": launch.horovod_host(1),
    }
    assert launch.horovod_env_from_slurm({**env, "HOROVOD_RANK": "0"}) == {}  # horovodrun's own
    assert launch.horovod_env_from_slurm({}) == {}


def test_a_cell_on_several_nodes_is_launched_by_srun_one_task_per_rank():
    profile = {"launcher": "horovod", "nodes": 2, "gpus_per_node": 4, "cpus_per_task": 32}
    command = launch.launch_command(profile, "cell.yaml", "out")
    assert command[:10] == [
        "srun",
        "--nodes=2",
        "--ntasks=8",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--cpus-per-task=8",
        "--distribution=block",
        "--cpu-bind=none",  # ranks on GPUs bind themselves near their GPU
        "--export=ALL,OMP_NUM_THREADS=8",
        "--kill-on-bad-exit=1",
    ]
    assert command[10:] == [
        sys.executable,
        "-m",
        launch.TRAIN_MODULE,
        "--cell",
        "cell.yaml",
        "--out",
        "out",
        "--rank-log",
    ]
    cpu = launch.launch_command({**profile, "launcher": "torchrun", "gpus_per_node": 0, "cpus_per_task": 2}, "c", "o")
    assert cpu[:5] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=2"]
    assert "--cpu-bind=none" not in cpu  # CPU ranks keep SLURM's binding
    with pytest.raises(UserError, match=r"cpus_per_task \(2\) are the CPUs of each node, shared by its 4 ranks"):
        launch.launch_command({**profile, "cpus_per_task": 2}, "c", "o")
    with pytest.raises(UserError, match="launcher none runs one process"):
        launch.launch_command({**profile, "launcher": "none"}, "c", "o")


@pytest.mark.parametrize("backend", ["ddp", "horovod"])
def test_a_backend_in_a_world_of_one_matches_no_backend(train_cache, tmp_path, single, backend):
    if backend == "horovod":
        need_horovod()
    result = train.run_cell(cell(train_cache, backend=backend), tmp_path)
    assert_same_training(result, single, world=1)


def test_ranks_from_torchrun_slurm_or_nothing():
    assert launch.ranks_from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == (3, 8, 1)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    assert launch.ranks_from_env(slurm) == (5, 8, 1)
    assert launch.ranks_from_env({**slurm, "RANK": "0", "WORLD_SIZE": "2"}) == (0, 2, 0)  # torchrun wins
    assert launch.ranks_from_env({}) == (0, 1, 0)


@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("gpu03", ["gpu03"]),
        ("gpu[03-05,07],cpu1", ["gpu03", "gpu04", "gpu05", "gpu07", "cpu1"]),
        ("node[7,9]", ["node7", "node9"]),
        ("a1,b2", ["a1", "b2"]),
    ],
)
def test_hosts_of_a_slurm_node_list(nodelist, hosts, monkeypatch):
    if shutil.which("scontrol"):
        assert launch.hostnames(nodelist) == hosts
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(OSError()))
    assert launch.hostnames(nodelist) == hosts
    assert launch.first_host(nodelist) == hosts[0]


def test_unknown_backend_and_missing_master_are_user_errors(monkeypatch):
    with pytest.raises(UserError, match="backend must be one of"):
        backends.init("mpi", "cpu")
    for name in ("MASTER_ADDR", "SLURM_JOB_NODELIST", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    with pytest.raises(UserError, match="needs MASTER_ADDR"):
        backends.init("ddp", "cpu")


@pytest.mark.parametrize("backend", ["none", "ddp", "horovod"])
def test_every_backend_resumes_to_the_uninterrupted_result(train_cache, tmp_path, monkeypatch, backend):
    if backend == "horovod":
        need_horovod()

    settings = cell(train_cache, backend=backend, epochs=3, checkpoint=True)
    reference = train.run_cell(settings, tmp_path / "reference")
    preempt_after_checkpoint(monkeypatch)
    with pytest.raises(Preempted):
        train.run_cell(settings, tmp_path / "preempted")
    resumed = train.run_cell(settings, tmp_path / "preempted")
    assert resumed["resumed_from_epoch"] == 1 and resumed["epochs"] == 3
    assert resumed["loss_curve"] == pytest.approx(reference["loss_curve"], rel=1e-6)


def test_a_rank_on_a_gpu_takes_its_share_of_the_cpus_near_it():
    """Two sockets of 52 cores, GPUs 0-3 on the first and 4-7 on the second (an XE9680). The job's 48 CPUs, 24 on each
    socket: each rank binds to 6 on its GPU's socket, none shared. Ranks already on their GPU's node, or with no CPU
    there, or with no topology known, keep what they have."""
    from mammoscale.train import devices

    sockets = [set(range(0, 52)), set(range(52, 104))]
    numa = [sockets[0]] * 4 + [sockets[1]] * 4
    allowed = devices.parse_cpus("0-23,52-75")
    chosen = [devices.near_gpu(allowed, numa, rank) for rank in range(8)]
    assert [devices.format_cpus(cpus) for cpus in chosen] == [
        "0-5", "6-11", "12-17", "18-23", "52-57", "58-63", "64-69", "70-75"
    ]  # fmt: skip
    assert devices.near_gpu(devices.parse_cpus("6-11"), numa, 1) is None  # SLURM bound it near its GPU already
    assert devices.near_gpu(devices.parse_cpus("0-47"), numa, 5) is None  # nothing near GPU 5: keep, with a warning
    assert devices.near_gpu(allowed, [None] * 8, 3) is None  # no topology
    assert devices.parse_cpus("0-2,7,9-10\n") == {0, 1, 2, 7, 9, 10} and devices.format_cpus({3, 1, 2, 8}) == "1-3,8"
    placed = devices.bind_near_gpu(torch_device("cpu"), 0, 1)  # a CPU rank: left as it is
    assert placed["gpu_numa_cpus"] is None and devices.parse_cpus(placed["cpus"]) == os.sched_getaffinity(0)


def torch_device(name: str):
    import torch

    return torch.device(name)


def test_the_cpus_a_nodes_ranks_share():
    """srun's tasks each hold SLURM_CPUS_PER_TASK (a binding cluster shows a rank only its own); the ranks
    torchrun or horovodrun start inside one task share its CPUs, which each of them sees."""
    srun = {"SLURM_NTASKS": "16", "SLURM_CPUS_PER_TASK": "6"}
    assert launch.node_cpus(6, 8, srun) == 48  # each rank bound to its own 6
    assert launch.node_cpus(64, 8, srun) == 48  # no binding: still the 48 SLURM gave the node's tasks
    one_task = {"SLURM_NTASKS": "1", "SLURM_CPUS_PER_TASK": "48"}  # torchrun's or horovodrun's ranks inside it
    assert launch.node_cpus(48, 8, one_task) == 48
    assert launch.node_cpus(2, 1, {}) == 2


def test_the_interface_of_this_hosts_address():
    import socket

    import psutil

    name = launch.interface_of_host()
    address = socket.gethostbyname(socket.gethostname())
    holders = [nic for nic, entries in psutil.net_if_addrs().items() if any(e.address == address for e in entries)]
    assert name == (holders[0] if holders else None)


def test_the_ranks_on_a_node_from_torchrun_slurm_or_the_world():
    assert launch.local_world_from_env(16, {"LOCAL_WORLD_SIZE": "8", "SLURM_NTASKS_PER_NODE": "4"}) == 8
    assert launch.local_world_from_env(16, {"SLURM_NTASKS_PER_NODE": "8(x2)"}) == 8
    assert launch.local_world_from_env(16, {"SLURM_TASKS_PER_NODE": "4,4"}) == 4
    assert launch.local_world_from_env(2, {}) == 2


def test_one_ranks_oom_ends_the_cell_at_once_and_the_job_records_it(train_cache, tmp_path, monkeypatch):
    """Rank 1 alone runs out of memory (a ``sitecustomize`` caps its address space as it starts: a real allocation
    failure) under torchrun, through the workflow's job. It exits non-zero at once, torchrun stops rank 0 (which waits
    for it in a collective: under NCCL one that never returns), and the job builds the cell's record from the ranks'
    outcomes: oom, measured, naming rank 1, every rank's last log lines in it. Seconds, not the 600 s collective
    timeout. (Gloo notices a peer gone by itself; NCCL does not, which is why the failing rank must end the cell.)"""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, resource\n"
        "if os.environ.get('RANK') == '1':\n"
        "    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    # 4,096 materialised tokens: a 201 MB score tensor per layer, over rank 1's 2 GiB address space once trained
    settings = cell(
        train_cache,
        image_size=128,
        patch_size=2,
        attention="materialised",
        variant="materialised",
        mode="throughput",
        timing_warmup_steps=1,
        timed_steps=1,
        global_batch=2,
        micro_batch=1,
        backend="ddp",
        device="cpu",
        collective_timeout_s=600,
    )
    profile = {"launcher": "torchrun", "nodes": 1, "gpus_per_node": 2, "cpus_per_task": 2}
    out = tmp_path / "run"
    started = time.monotonic()
    record = train.run_job(settings, profile, out)
    elapsed = time.monotonic() - started
    assert elapsed < 120, f"the cell took {elapsed:.0f} s to end"
    assert record["status"] == "oom" and record["oom_basis"] == "measured"
    assert record["message"].startswith("rank 1: ") and "allocate" in record["message"]
    assert json.loads((out / files.METRICS).read_text()) == record and not list(out.glob(".rank*"))
    tails = {placed["rank"]: "\n".join(placed["log_tail"]) for placed in record["ranks"]}
    assert "rank 1 ended oom" in tails[1] and "ending the cell" in tails[1]
    assert set(tails) == {0, 1} and (out / "rank0.log").is_file()


def test_ranks_stop_after_the_same_step_when_one_is_signalled(train_cache, tmp_path, monkeypatch):
    """SIGUSR1 (SLURM's warning ahead of the time limit) to rank 1 alone, under torchrun through the workflow's job:
    both ranks stop after the same step (they agree in the step's all-reduce) and rank 0, never signalled, writes the
    checkpoint. Outside SLURM the job cannot be requeued, so it fails saying so; run again, the cell resumes and
    trains as one process does."""
    import threading

    import psutil

    from mammoscale.train import checkpoint, stopping

    for name in ("SLURM_JOB_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    settings = cell(train_cache, backend="ddp", device="cpu", epochs=30, checkpoint=True)
    profile = {"launcher": "torchrun", "nodes": 1, "gpus_per_node": 2, "cpus_per_task": 2}
    out = tmp_path / "run"
    sent = threading.Event()

    def signal_rank_1():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not sent.is_set():
            if (out / checkpoint.NAME).exists():
                for proc in psutil.Process().children(recursive=True):
                    try:
                        if proc.environ().get("RANK") == "1" and "mammoscale.train" in proc.cmdline():
                            proc.send_signal(stopping.SIGNAL)
                            sent.set()
                    except psutil.Error:
                        pass
            time.sleep(0.05)

    signaller = threading.Thread(target=signal_rank_1, daemon=True)
    signaller.start()
    with pytest.raises(UserError, match=r"stopped when asked after step .*not requeued \(this process is in no SLURM"):
        train.run_job(settings, profile, out)
    signaller.join(timeout=10)
    assert sent.is_set()
    saved = torch_load(out / checkpoint.NAME)
    assert 1 <= saved["epoch"] < 30 and not (out / files.METRICS).exists()
    stopped = f"SIGUSR1 (asked on another rank): stopping after step {saved['step']}, with a checkpoint"
    assert stopped in (out / files.TRAIN_LOG).read_text()  # rank 0, never signalled, stopped with rank 1
    resumed = train.run_job(settings, profile, out)
    assert resumed["status"] == "ok" and resumed["world_size"] == 2 and resumed["resumed_from_step"] == saved["step"]
    reference = train.run_cell({**settings, "backend": "none"}, tmp_path / "one")
    assert resumed["loss_curve"] == pytest.approx(reference["loss_curve"], rel=1e-4)


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True)


def test_the_worst_outcome_of_any_rank_is_the_cells(tmp_path):
    from mammoscale.train import outcome

    outcome.report(tmp_path, 1, "ok", None)
    outcome.report(tmp_path, 2, "failed", "RuntimeError: boom")
    assert outcome.agree(tmp_path, 3, "ok", None, wait_s=1) == ("failed", "rank 2: RuntimeError: boom")
    outcome.report(tmp_path, 1, "oom", "CUDA out of memory")
    outcome.report(tmp_path, 2, "failed", "RuntimeError: Connection closed by peer")
    assert outcome.agree(tmp_path, 3, "failed", "Connection closed", wait_s=1) == ("oom", "rank 1: CUDA out of memory")
    assert outcome.agree(tmp_path, 2, "ok", None, wait_s=0.6) == (
        "failed",
        "rank 1: gave no outcome within 1 s (the process died?)",
    )
    outcome.report(tmp_path, 1, "skipped", "no flash")
    assert outcome.agree(tmp_path, 2, "oom", "mine", wait_s=1) == ("oom", "mine") and not list(tmp_path.iterdir())


def test_every_status_of_a_record_has_a_severity_and_an_exit_code():
    """The ranks' and the process's tables of statuses cover the owner's (:data:`mammoscale.records.STATUSES`)."""
    from mammoscale.train import cell, outcome

    assert set(outcome.SEVERITY) == {*records.STATUSES, outcome.INTERRUPTED}
    assert set(cell.EXIT_CODES) == set(records.STATUSES)


BUFFERS_SCRIPT = """
import json, pathlib, sys, torch
from mammoscale.train import backends
backend = backends.BACKEND_CLASSES[sys.argv[1]].start("cpu", 60)
norm = torch.nn.BatchNorm1d(3)  # each rank's running statistics its own, as after training on its own micro-batches
norm.running_mean.fill_(float(backend.rank + 1))
norm.num_batches_tracked.fill_(backend.rank + 5)
backend.broadcast_buffers(norm)
seen = [backend.rank, norm.running_mean.tolist(), int(norm.num_batches_tracked)]
pathlib.Path(sys.argv[2], f"rank{backend.rank}.json").write_text(json.dumps(seen))  # a file a rank: ranks share stdout
backend.close()
"""


@pytest.mark.parametrize("backend", ["ddp", "horovod"])
def test_every_rank_evaluates_with_rank_zeros_batch_norm_statistics(tmp_path, backend):
    """A CNN's batch norms keep running statistics each rank updates on its own data: before the validation split is
    scored, rank 0's reach every rank, so one model (the one rank 0 checkpoints) is scored."""
    if backend == "horovod":
        need_horovod()
        launcher = [str(BIN / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo", sys.executable]
    else:
        launcher = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2"]
    script = tmp_path / "buffers.py"
    script.write_text(BUFFERS_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*launcher, str(script), backend, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = sorted(json.loads(path.read_text()) for path in tmp_path.glob("rank*.json"))
    assert seen == [[0, [1.0, 1.0, 1.0], 5], [1, [1.0, 1.0, 1.0], 5]]
