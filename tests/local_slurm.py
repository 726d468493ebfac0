"""A real one-node SLURM cluster for the tests: munge, slurmctld and slurmd on localhost, eight fake GPUs.

Debian's slurm-wlm (22.05) and munge, installed with apt when missing (root only). The GPUs are
GRES on ``/dev/nvidia[0-7]`` character devices made with ``mknod``: SLURM allocates them to jobs
and sets ``CUDA_VISIBLE_DEVICES``/``SLURM_JOB_GPUS``, which is what the workflow must get right;
nothing computes on them. The node is declared as large as a GPU server of the study (64 CPUs,
1 TB, 8 GPUs: ``SlurmdParameters=config_overrides`` makes slurmd trust the declaration), so a
job that asks for a server's shape is scheduled, and one asking for more than a server has is
refused, as on a real cluster. No cgroups (``proctrack/linuxproc``, ``task/none``) and no accounting
(``sacct`` does not answer without slurmdbd: the executor checks status with ``squeue``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

GPUS = 8
CPUS = 64
MEMORY_MB = 1_000_000
PACKAGES = ("slurm-wlm", "munge")
# Jobs' own srun calls read the default path (the executor's job step drops SLURM_* variables,
# SLURM_CONF among them), so the config goes there, marked as ours, and is removed afterwards.
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# written by mammoscale's tests (tests/local_slurm.py)"


def unavailable_reason() -> str | None:
    """Why this machine cannot run the cluster, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (daemons, mknod, apt)"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "slurm-wlm is not installed and apt-get is missing"
    if SYSTEM_CONF.exists() and MARKER not in SYSTEM_CONF.read_text():
        return f"{SYSTEM_CONF} exists: this machine has a SLURM of its own, which the tests leave alone"
    return None


def install() -> None:
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "munged", "sbatch", "squeue")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], check=True, env=env, capture_output=True)


def fake_gpus() -> None:
    for i in range(GPUS):
        device = Path(f"/dev/nvidia{i}")
        if not device.exists():
            subprocess.run(["mknod", "-m", "666", str(device), "c", "195", str(i)], check=True)


def start_munge() -> subprocess.Popen | None:
    """munged, unless one already answers; returns the process this call started."""
    if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "--create"], check=True)
    subprocess.run(["chown", "-R", "munge:munge", "/etc/munge"], check=True)
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    subprocess.run(["chown", "munge:munge", "/run/munge"], check=True)
    proc = subprocess.Popen(
        ["runuser", "-u", "munge", "--", "munged", "--foreground"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait(lambda: subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0, "munged")
    return proc


def write_config(state: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    for sub in ("ctld", "d"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    conf = SYSTEM_CONF
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"""\
{MARKER}
ClusterName=mammoscale-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MpiDefault=none
SlurmdParameters=config_overrides
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
NodeName={host} CPUs={CPUS} RealMemory={MEMORY_MB} Gres=gpu:{GPUS} State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")
    (conf.parent / "gres.conf").write_text(f"{MARKER}\nNodeName={host} Name=gpu File=/dev/nvidia[0-{GPUS - 1}]\n")
    return conf


def _wait(ready, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.5)


@contextlib.contextmanager
def cluster(state: Path):
    """Start the cluster under ``state``; yield the environment clients need (SLURM_CONF); stop it."""
    install()
    fake_gpus()
    munge = start_munge()
    conf = write_config(state)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = [
        subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for daemon in ("/usr/sbin/slurmctld", "/usr/sbin/slurmd")
    ]
    try:
        _wait(
            lambda: (
                "idle" in subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
            ),
            "the SLURM node",
        )
        yield env
    finally:
        for proc in [*daemons, *([munge] if munge else [])]:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for path in (SYSTEM_CONF, SYSTEM_CONF.parent / "gres.conf"):
            path.unlink(missing_ok=True)
