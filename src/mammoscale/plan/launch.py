"""How a cell's ranks are started and how each rank learns who it is: the launcher's side and the rank's.

A hardware profile names a launcher: ``none`` (one process), ``torchrun`` (torch DDP) or
``horovod`` (``horovodrun``). :func:`launch_command` is the command a job runs inside its
allocation; :func:`ranks_from_env` reads back, in each process, the variables that command's
launcher set: torchrun's (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) or SLURM's under ``srun``
(``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``). Torch-free.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mammoscale.errors import UserError

LAUNCHERS = ("none", "torchrun", "horovod")
BACKEND_OF_LAUNCHER = {"none": "none", "torchrun": "ddp", "horovod": "horovod"}
BACKENDS = tuple(BACKEND_OF_LAUNCHER.values())
"""The data-parallel backends a cell can train with (:mod:`mammoscale.train.backends`)."""
TRAIN_MODULE = "mammoscale.train"


def ranks(profile: dict) -> int:
    """Processes a profile's cell runs: one per GPU, or one per node without GPUs."""
    return profile["nodes"] * max(1, profile.get("gpus_per_node", 0))


def in_process(profile: dict) -> bool:
    """Whether a cell of this profile runs in the job's own process (no launcher)."""
    return profile["launcher"] == "none" and ranks(profile) == 1


def job_request(profile: dict) -> dict:
    """What one cell's job asks SLURM for, in snakemake-executor-plugin-slurm's resource names.

    One task per node holds all of the node's share of the profile (``cpus_per_task`` CPUs, every
    GPU); the launcher then starts the ranks inside it (torchrun or horovodrun one per GPU, or the
    cell's own process). The plugin turns a GPU job's ``tasks`` into ``--ntasks-per-gpu``, which
    would multiply the CPUs by the GPUs (8 x 48 = 384 CPUs for an 8-GPU, 48-CPU profile); so a GPU
    job sets no ``tasks`` and asks for ``--ntasks-per-node=1`` instead. ``gpu`` is the job's total
    (the plugin's ``--gpus``), the profile's ``gpus_per_node`` on each of its nodes. The CPUs
    (``cpus_per_task``) are the rule's threads.
    """
    gpus = profile.get("gpus_per_node", 0)
    return {
        "nodes": profile["nodes"],
        "tasks": 0 if gpus else profile["nodes"],
        "gpu": profile["nodes"] * gpus,
        "gpu_model": profile.get("gpu_model") or "",
        "slurm_extra": "--ntasks-per-node=1" if gpus else "",
        "runtime": profile["runtime_min"],
        "slurm_partition": profile.get("partition") or "",
        "slurm_account": profile.get("account") or "",
        "constraint": profile.get("constraint") or "",
    }


def launch_command(profile: dict, cell_file: Path | str, out_dir: Path | str, env=os.environ) -> list[str]:
    """The command that runs one cell with the profile's launcher, inside the job's allocation.

    - ``none``: one process.
    - ``torchrun``: one node: ``torchrun --standalone``; several: ``srun``, one task per GPU,
      ranks from SLURM's environment (torchrun's rendezvous adds nothing inside an allocation).
    - ``horovod``: ``horovodrun -np ranks``, over the allocation's hosts; Gloo on CPU-only profiles.
    """
    target = ["-m", TRAIN_MODULE, "--cell", str(cell_file), "--out", str(out_dir)]
    launcher, nodes = profile["launcher"], profile["nodes"]
    per_node = max(1, profile.get("gpus_per_node", 0))
    if launcher == "none":
        if ranks(profile) > 1:
            raise UserError(
                f"launcher none runs one process, but the profile asks for {ranks(profile)} ranks; "
                "use torchrun or horovod"
            )
        return [sys.executable, *target]
    if launcher == "torchrun":
        if nodes == 1:
            return [_tool("torchrun"), "--standalone", f"--nproc-per-node={per_node}", *target]
        return ["srun", f"--ntasks={nodes * per_node}", f"--ntasks-per-node={per_node}", sys.executable, *target]
    if nodes == 1:
        hosts = ["localhost"]
    elif "SLURM_JOB_NODELIST" in env:
        hosts = hostnames(env["SLURM_JOB_NODELIST"])
    else:
        raise UserError(f"launcher horovod over {nodes} nodes runs inside a SLURM allocation (SLURM_JOB_NODELIST)")
    command = [_tool("horovodrun"), "-np", str(nodes * per_node), "-H", ",".join(f"{h}:{per_node}" for h in hosts)]
    if not profile.get("gpus_per_node"):
        command.append("--gloo")
    return [*command, sys.executable, *target]


def _tool(name: str) -> str:
    """A console script beside this interpreter (the venv's torchrun), else whatever PATH finds."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def ranks_from_env(env=os.environ) -> tuple[int, int, int]:
    """(rank, world, local rank) from torchrun's or SLURM's variables; (0, 1, 0) when neither is set."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def local_world_from_env(world: int, env=os.environ) -> int:
    """The ranks on this node: torchrun's ``LOCAL_WORLD_SIZE``, else SLURM's tasks per node (``8(x2)`` -> 8),
    else the whole world (one node)."""
    if env.get("LOCAL_WORLD_SIZE", "").isdigit():
        return int(env["LOCAL_WORLD_SIZE"])
    per_node = re.match(r"\d+", env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or "")
    return int(per_node.group()) if per_node else world


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
