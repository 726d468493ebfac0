"""How a cell's ranks are started and how each rank learns who it is: the launcher's side and the rank's.

A hardware profile names a launcher: ``none`` (one process), ``torchrun`` (torch DDP) or
``horovod`` (Horovod). :func:`job_request` is what a cell's job asks SLURM for and
:func:`launch_command` the command it runs inside its allocation (torchrun or horovodrun on one
node, ``srun`` on several); :func:`ranks_from_env` reads back, in each process, the variables
that command's launcher set: torchrun's (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) or SLURM's
under ``srun`` (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``). Torch-free.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from mammoscale.errors import UserError

LAUNCHERS = ("none", "torchrun", "horovod")
BACKEND_OF_LAUNCHER = {"none": "none", "torchrun": "ddp", "horovod": "horovod"}
BACKENDS = tuple(BACKEND_OF_LAUNCHER.values())
"""The data-parallel backends a cell can train with (:mod:`mammoscale.train.backends`)."""
TRAIN_MODULE = "mammoscale.train"
STOP_SIGNAL = "USR1"
"""The signal SLURM sends a cell's ranks ahead of its time limit: they stop at the next step with a checkpoint
(:mod:`mammoscale.train.stopping`)."""


def ranks(profile: dict) -> int:
    """Processes a profile's cell runs: one per GPU, or one per node without GPUs."""
    return profile["nodes"] * ranks_per_node(profile)


def ranks_per_node(profile: dict) -> int:
    return max(1, profile.get("gpus_per_node", 0))


def by_srun(profile: dict, env=os.environ) -> bool:
    """Whether a cell's ranks run as a SLURM job step of their own, one task per rank started by ``srun``: on several
    nodes always; on one, inside a SLURM job that holds a task per rank. The SLURM executor's job asked for them
    (:func:`job_request`) and its process sees no ``SLURM_NTASKS`` (the plugin drops a job's step variables); an
    allocation of your own (``salloc``) says how many tasks it holds, and one with fewer than the ranks runs the
    profile's launcher inside it instead."""
    if profile["nodes"] > 1:
        return True
    if not env.get("SLURM_JOB_ID"):
        return False
    tasks = env.get("SLURM_NTASKS", "")
    return not tasks.isdigit() or int(tasks) >= ranks(profile)


def in_process(profile: dict, env=os.environ) -> bool:
    """Whether a cell of this profile runs in the job's own process: one rank, no launcher, and not a SLURM step."""
    return profile["launcher"] == "none" and ranks(profile) == 1 and not by_srun(profile, env)


OWNED_OPTIONS = {
    *("-N", "--nodes", "-n", "--ntasks", "--ntasks-per-node", "--ntasks-per-gpu", "-c", "--cpus-per-task"),
    *("-G", "--gpus", "--gpus-per-node", "--gpus-per-task", "--gres", "--mem", "--mem-per-cpu", "--mem-per-gpu"),
    *("-t", "--time", "-p", "--partition", "-A", "--account", "-C", "--constraint", "--signal"),
}
"""The sbatch options a cell's job sets from its profile and plan (:func:`job_request`): not a profile's
``slurm_extra``'s, where they would contradict them."""


def check_profile(name: str, profile: dict) -> None:
    """Refuse, before any job is submitted, a profile whose cells could not start."""
    if profile["launcher"] == "none" and ranks(profile) > 1:
        raise UserError(
            f"hardware profile {name}: launcher none runs one process, but the profile asks for {ranks(profile)} "
            "ranks; use torchrun or horovod"
        )
    if profile["nodes"] > 1 and profile.get("cpus_per_task", 1) < ranks_per_node(profile):
        raise UserError(
            f"hardware profile {name}: cpus_per_task ({profile.get('cpus_per_task', 1)}) are the CPUs of each node, "
            f"shared by its {ranks_per_node(profile)} ranks: give each rank at least one"
        )
    taken = [option for option in (profile.get("slurm_extra") or "").split() if option.split("=")[0] in OWNED_OPTIONS]
    if taken:
        raise UserError(
            f"hardware profile {name}: slurm_extra sets {' '.join(taken)}, which the job sets from the profile's own "
            "keys (nodes, gpus_per_node, cpus_per_task, mem_mb, runtime_min, partition, account, constraint) and its "
            "plan (--signal): set those keys instead"
        )


def job_request(profile: dict, signal_before_limit_s: int | None = None) -> dict:
    """What one cell's job asks SLURM for, in snakemake-executor-plugin-slurm's resource names.

    One task per rank on every node: ``--ntasks-per-node`` ranks and ``--gpus-per-node`` GPUs on each,
    the node's ``cpus_per_task`` CPUs shared among its ranks (``--cpus-per-task`` is a rank's share).
    ``mpi`` makes the plugin run the job's command in the batch script instead of in a job step of its
    own, and the ranks are then the job's one step, started by ``srun`` (:func:`launch_command`):

    - every process of that step is a rank, so SLURM's signal ahead of the time limit
      (``--signal=USR1@seconds``, :mod:`mammoscale.train.stopping`) reaches the ranks and nothing else
      (a step of the plugin's would hold snakemake and the launcher, which the signal would kill);
    - on several nodes a step of the plugin's would hold the first node's CPUs and GPUs, so that the
      ranks' step could never be created (SLURM 22.05: "Invalid generic resource (gres) specification").

    The GPUs are asked per node (not the plugin's ``gpu``, a total SLURM may spread unevenly, and which
    with ``tasks`` it would turn into ``--ntasks-per-gpu``). ``None`` is a resource the job does not set.
    A cell of one rank sets ``mpi`` to ``""``: the plugin refuses an MPI job of one task, and reads an empty
    ``mpi`` as no MPI when it submits (``--ntasks=1``) but as present when it runs the job, in the batch script.
    """
    model = profile.get("gpu_model") or ""
    extra = per_node_request(profile, model)
    if profile.get("slurm_extra"):
        extra.append(profile["slurm_extra"])
    if signal_before_limit_s:
        extra.append(f"--signal={STOP_SIGNAL}@{signal_before_limit_s}")
    return {
        "nodes": profile["nodes"],
        "runtime": profile["runtime_min"],
        "slurm_partition": profile.get("partition") or "",
        "slurm_account": profile.get("account") or "",
        "constraint": profile.get("constraint") or "",
        "tasks": ranks(profile),
        "gpu": None,
        "gpu_model": None,
        "slurm_extra": " ".join(extra),
        "mpi": "srun" if ranks(profile) > 1 else "",
        "cpus_per_task": cpus_per_rank(profile),
    }


def per_node_request(profile: dict, gpu_model: str = "") -> list[str]:
    """The ranks and GPUs of each node of a cell on several nodes: the job's request and its ranks' step alike."""
    gpus = profile.get("gpus_per_node", 0)
    model = f"{gpu_model}:" if gpu_model else ""
    return [f"--ntasks-per-node={ranks_per_node(profile)}", *([f"--gpus-per-node={model}{gpus}"] if gpus else [])]


def cpus_per_rank(profile: dict) -> int:
    """A rank's CPUs: its node's ``cpus_per_task`` shared among the node's ranks."""
    return max(1, profile.get("cpus_per_task", 1) // ranks_per_node(profile))


HOROVOD_MISSING = (
    "backend horovod needs Horovod built against this torch: run `make horovod` (docs/training.md, 'Horovod')"
)


def check_allocation(profile: dict, env=os.environ) -> None:
    """A cell on several nodes runs inside its SLURM job's allocation: ``srun`` elsewhere is missing, or would
    ask SLURM for a new allocation of its own."""
    if profile["nodes"] > 1 and not env.get("SLURM_JOB_ID"):
        raise UserError(
            f"a cell on {profile['nodes']} nodes runs inside a SLURM job (srun starts its ranks), and this process "
            "is in none: run it with `snakemake --profile slurm` (docs/multi-node.md)"
        )


def requeue(env=os.environ) -> str | None:
    """Put this SLURM job back in the queue (``scontrol requeue``): it starts again, the same job with the same
    resources, and the cell resumes from its checkpoint. None when SLURM took it; else why not (outside a SLURM job,
    no ``scontrol``, or a job SLURM will not requeue)."""
    job = env.get("SLURM_JOB_ID")
    if not job:
        return "this process is in no SLURM job"
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"scontrol requeue {job}: {exc}"
    if done.returncode:
        return f"scontrol requeue {job}: {(done.stderr or done.stdout).strip()}"
    return None


def job_restarts(env=os.environ) -> int | None:
    """How often SLURM requeued this job (``SLURM_RESTART_COUNT``; asked of ``scontrol`` where the SLURM executor's
    job step dropped it), None outside a SLURM job or where SLURM does not say."""
    if env.get("SLURM_RESTART_COUNT", "").isdigit():
        return int(env["SLURM_RESTART_COUNT"])
    if not env.get("SLURM_JOB_ID"):
        return None
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", "-o", env["SLURM_JOB_ID"]], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\bRestarts=(\d+)", shown)
    return int(found.group(1)) if found else None


def launch_command(profile: dict, cell_file: Path | str, out_dir: Path | str, env=os.environ) -> list[str]:
    """The command that starts one cell's ranks, each writing everything to its own log (``--rank-log``).

    - a SLURM job step of one task per rank (:func:`by_srun`: the SLURM executor's jobs, and every
      cell on several nodes): ``srun``, each rank on its node's GPUs and CPUs, ranks from SLURM's
      environment, rendezvous at the server the job's own process holds
      (:mod:`mammoscale.train.rendezvous`). No ``ssh`` to other nodes, which clusters often forbid;
    - otherwise, on one node: one process (``none``), ``torchrun --standalone`` (DDP) or
      ``horovodrun -np ranks -H localhost:ranks`` (Horovod; Gloo on CPU-only profiles).
    """
    target = ["-m", TRAIN_MODULE, "--cell", str(cell_file), "--out", str(out_dir), "--rank-log"]
    launcher, nodes = profile["launcher"], profile["nodes"]
    per_node = ranks_per_node(profile)
    check_profile("of this cell", profile)
    if by_srun(profile, env):
        return [
            "srun",
            f"--nodes={nodes}",
            f"--ntasks={ranks(profile)}",
            *per_node_request(profile),
            f"--cpus-per-task={cpus_per_rank(profile)}",
            # ranks 0..G-1 on the first node, and so on (Horovod's rendezvous plans the same). No --gpu-bind: every
            # rank sees its node's GPUs and takes its local rank's (SLURM 22.05's --gpu-bind=none sets no
            # CUDA_VISIBLE_DEVICES at all, which would show a rank the GPUs of other jobs on the node)
            "--distribution=block",
            # a rank on a GPU binds itself to its share of the CPUs near that GPU (the node's allocation, the job's
            # CPUs on that node, is what it chooses from; SLURM's own binding would not know which GPU it takes)
            *(["--cpu-bind=none"] if profile.get("gpus_per_node") else []),
            # torch's threads: the rank's CPUs (torchrun sets 1; srun sets nothing, and every rank would take
            # every CPU it can see)
            f"--export=ALL,OMP_NUM_THREADS={cpus_per_rank(profile)}",
            # one rank that ends the cell (exits non-zero) takes the others down, instead of leaving them in a
            # collective that never returns
            "--kill-on-bad-exit=1",
            sys.executable,
            *target,
        ]
    if launcher == "none":
        return [sys.executable, *target]
    if launcher == "torchrun":
        return [_tool("torchrun"), "--standalone", f"--nproc-per-node={per_node}", *target]
    command = [_tool("horovodrun"), "-np", str(per_node), "-H", f"localhost:{per_node}"]
    if not profile.get("gpus_per_node"):
        command.append("--gloo")
    return [*command, sys.executable, *target]


ALLOCATOR = "expandable_segments:True"
"""PyTorch's CUDA allocator setting for every rank: memory grows by extending segments instead of adding blocks
of fixed sizes, so a long run fragments less and the probe's fit holds for the whole run."""


def rank_env(profile: dict, env=os.environ) -> dict[str, str]:
    """What every rank of a cell starts with, where the environment does not say otherwise: NCCL's warnings (the
    profile's ``nccl_debug``; a first failure on a new cluster explains itself in the rank's log) and the allocator
    with expandable segments (:data:`ALLOCATOR`)."""
    wanted = {"PYTORCH_CUDA_ALLOC_CONF": ALLOCATOR}
    if profile.get("nccl_debug"):
        wanted["NCCL_DEBUG"] = profile["nccl_debug"]
    return {name: value for name, value in wanted.items() if name not in env}


def _tool(name: str) -> str:
    """A console script beside this interpreter (the venv's torchrun), else whatever PATH finds."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def ranks_from_env(env=os.environ) -> tuple[int, int, int]:
    """(rank, world, local rank) from torchrun's, horovodrun's or SLURM's variables; (0, 1, 0) when none is set."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "HOROVOD_RANK" in env and "HOROVOD_SIZE" in env:
        return int(env["HOROVOD_RANK"]), int(env["HOROVOD_SIZE"]), int(env.get("HOROVOD_LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def node_cpus(affinity: int, local_ranks: int, env=os.environ) -> int:
    """The CPUs this node's ranks share. Ranks srun started one task each (a step of several tasks) hold
    ``SLURM_CPUS_PER_TASK`` CPUs each, and a cluster that binds tasks to their CPUs shows each rank only its
    own: the node's are all its tasks'. Otherwise (torchrun's or horovodrun's ranks inside the job's one
    task, or no SLURM) the ranks share what this process may run on (``affinity``)."""
    tasks, per_task = env.get("SLURM_NTASKS", ""), env.get("SLURM_CPUS_PER_TASK", "")
    if tasks.isdigit() and int(tasks) > 1 and per_task.isdigit():
        return int(per_task) * local_ranks
    return affinity


def local_world_from_env(world: int, env=os.environ) -> int:
    """The ranks on this node: torchrun's ``LOCAL_WORLD_SIZE``, else SLURM's tasks per node (``8(x2)`` -> 8),
    else the whole world (one node)."""
    if env.get("LOCAL_WORLD_SIZE", "").isdigit():
        return int(env["LOCAL_WORLD_SIZE"])
    per_node = re.match(r"\d+", env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or "")
    return int(per_node.group()) if per_node else world


HOROVOD_FROM_SLURM = {
    "HOROVOD_RANK": "SLURM_PROCID",
    "HOROVOD_SIZE": "SLURM_NTASKS",
    "HOROVOD_LOCAL_RANK": "SLURM_LOCALID",
    "HOROVOD_CROSS_RANK": "SLURM_NODEID",
    "HOROVOD_CROSS_SIZE": "SLURM_NNODES",
}
"""What ``horovodrun`` would tell each rank, and the SLURM variable ``srun`` tells it in (the local size
is the node's tasks, :func:`local_world_from_env`). Horovod's cross communicators join the ranks of one
local rank across nodes: the cross rank is the node's index."""


def horovod_env_from_slurm(env=os.environ) -> dict[str, str]:
    """A Horovod rank's variables from SLURM's, for ranks started by ``srun`` instead of ``horovodrun``;
    {} where ``horovodrun`` set them, or outside ``srun``."""
    if "HOROVOD_RANK" in env or not all(slurm in env for slurm in HOROVOD_FROM_SLURM.values()):
        return {}
    out = {horovod: env[slurm] for horovod, slurm in HOROVOD_FROM_SLURM.items()}
    out["HOROVOD_LOCAL_SIZE"] = str(local_world_from_env(int(env["SLURM_NTASKS"]), env))
    out["HOROVOD_HOSTNAME"] = horovod_host(int(env["SLURM_NODEID"]))
    return out


def horovod_host(node: int) -> str:
    """The name Horovod's rendezvous knows a node by (it groups a node's ranks by it): the node's index in
    the allocation, which both the rendezvous server and the node's ranks know without asking SLURM."""
    return f"node{node}"


def interface_of_host() -> str | None:
    """The network interface holding the address this host's name resolves to (None when no interface
    does, or psutil is missing): where Horovod's Gloo should listen when the profile names none."""
    try:
        import psutil

        address = socket.gethostbyname(socket.gethostname())
        for name, addresses in psutil.net_if_addrs().items():
            if any(entry.address == address for entry in addresses):
                return name
    except (ImportError, OSError):
        pass
    return None


def hostnames(nodelist: str) -> list[str]:
    """The hosts of a SLURM node list: ``gpu[03-05,07],cpu1`` -> gpu03 gpu04 gpu05 gpu07 cpu1.

    ``scontrol show hostnames`` where SLURM is installed; otherwise the list is expanded here
    (prefix[ranges] groups, zero padding kept).
    """
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True, timeout=30
        ).stdout.split()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    hosts = []
    for prefix, ranges in re.findall(r"([^,\[]+)(?:\[([^\]]*)\])?,?", nodelist):
        if not ranges:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            width = len(low)
            hosts += [f"{prefix}{n:0{width}d}" for n in range(int(low), int(high or low) + 1)]
    if not hosts:
        raise UserError(f"cannot read the hosts of SLURM node list {nodelist!r}")
    return hosts


def first_host(nodelist: str) -> str:
    return hostnames(nodelist)[0]
