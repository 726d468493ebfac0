"""A real SLURM cluster of two nodes on this one machine, for the tests: munge, slurmctld, two slurmd, fake GPUs.

Debian's slurm-wlm (22.05) and munge, installed with apt when missing (root only).

**Topology.** Each node is a Linux network namespace with a UTS namespace of its own: its own
hostname (``msnode1``, ``msnode2``), its own address on a bridge (10.77.0.11, .12) and its own
``slurmd``; the controller runs in the host's namespace at the bridge's address (10.77.0.1). The
filesystem is shared, as a cluster's is. So a rank on node 2 reaches node 1 over a network
interface, by name (``/etc/netns/<node>/hosts``), and a port bound on one node is free on the
other: rendezvous addresses and ports, the interface gloo picks and two cells sharing nodes go
wrong here as they would on a real cluster. The alternative, several ``slurmd -N`` on one
host, would give every rank the same hostname and address, and hide exactly those bugs.

**Nodes.** Each is declared as large as a GPU server of the study (64 CPUs, 1 TB, 8 GPUs;
``SlurmdParameters=config_overrides`` makes slurmd trust the declaration), so a job that asks
for a server's shape is scheduled and one asking for more is refused, as on a real cluster. The
GPUs are GRES on ``/dev/nvidia[0-7]`` character devices made with ``mknod``: SLURM allocates
them and sets ``CUDA_VISIBLE_DEVICES``/``SLURM_JOB_GPUS``, which is what the workflow must get
right; nothing computes on them. No cgroups (``proctrack/linuxproc``, ``task/none``) and no
accounting (``sacct`` does not answer without slurmdbd: the executor checks status with
``squeue``). A node that stops answering is DOWN after ``SLURMD_TIMEOUT_S`` and returns to
service when its slurmd registers again (``ReturnToService=2``): :meth:`Cluster.kill_node` and
:meth:`Cluster.start_node` are a node failing and coming back. A job requeued off a failed node
may start again after 10 s (``AuthInfo=cred_expire``; 120 s by default).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

GPUS = 8
CPUS = 64
MEMORY_MB = 1_000_000
NODES = ("msnode1", "msnode2")
BRIDGE, SUBNET = "msbr0", "10.77.0"
CONTROLLER_ADDRESS = f"{SUBNET}.1"
SLURMD_TIMEOUT_S = 10
PACKAGES = ("slurm-wlm", "munge")
# Jobs' own srun calls read the default path (the executor's job step drops SLURM_* variables,
# SLURM_CONF among them), so the config goes there, marked as ours, and is removed afterwards.
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
NETNS_ETC = Path("/etc/netns")
MARKER = "# written by mammoscale's tests (tests/local_slurm.py)"


def unavailable_reason() -> str | None:
    """Why this machine cannot run the cluster, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (daemons, network namespaces, mknod, apt)"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "slurm-wlm is not installed and apt-get is missing"
    if not shutil.which("ip") or not shutil.which("unshare"):
        return "needs iproute2's ip and util-linux's unshare (network and UTS namespaces)"
    if SYSTEM_CONF.exists() and MARKER not in SYSTEM_CONF.read_text():
        return f"{SYSTEM_CONF} exists: this machine has a SLURM of its own, which the tests leave alone"
    return None


def address(node: str) -> str:
    return f"{SUBNET}.{11 + NODES.index(node)}"


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


def _ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    subprocess.run(command, check=True, capture_output=True, text=True)


def make_network(controller: str) -> None:
    """The bridge, and each node's namespace on it with its address and its hosts file."""
    remove_network()
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "add", f"{CONTROLLER_ADDRESS}/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    hosts = "".join(f"{address(node)} {node}\n" for node in NODES)
    for node in NODES:
        outside, inside = f"{node}h", f"{node}n"
        _ip("netns", "add", node)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", outside, "master", BRIDGE)
        _ip("link", "set", outside, "up")
        _ip("link", "set", inside, "netns", node)
        _ip("addr", "add", f"{address(node)}/24", "dev", inside, netns=node)
        _ip("link", "set", inside, "up", netns=node)
        _ip("link", "set", "lo", "up", netns=node)
        etc = NETNS_ETC / node
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(f"{MARKER}\n127.0.0.1 localhost\n{CONTROLLER_ADDRESS} {controller}\n{hosts}")


def remove_network() -> None:
    for node in NODES:
        _kill_namespace(node)
        subprocess.run(["ip", "netns", "del", node], capture_output=True)
        subprocess.run(["ip", "link", "del", f"{node}h"], capture_output=True)
        shutil.rmtree(NETNS_ETC / node, ignore_errors=True)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    with contextlib.suppress(OSError):
        NETNS_ETC.rmdir()


def _kill_namespace(node: str) -> None:
    """SIGKILL every process in a node's namespace: its slurmd, its job steps, the ranks."""
    pids = subprocess.run(["ip", "netns", "pids", node], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def write_config(state: Path, controller: str) -> Path:
    for sub in ("ctld", "d"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    conf = SYSTEM_CONF
    conf.parent.mkdir(parents=True, exist_ok=True)
    nodes = "\n".join(
        f"NodeName={node} NodeAddr={address(node)} NodeHostname={node} CPUs={CPUS} RealMemory={MEMORY_MB} "
        f"Gres=gpu:{GPUS} State=UNKNOWN"
        for node in NODES
    )
    conf.write_text(f"""\
{MARKER}
ClusterName=mammoscale-test
SlurmctldHost={controller}({CONTROLLER_ADDRESS})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
SlurmdTimeout={SLURMD_TIMEOUT_S}
MpiDefault=none
SlurmdParameters=config_overrides
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d/%n
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd-%n.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd-%n.log
SlurmctldPort=16817
SlurmdPort=16818
{nodes}
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")
    (conf.parent / "gres.conf").write_text(
        f"{MARKER}\nNodeName={','.join(NODES)} Name=gpu File=/dev/nvidia[0-{GPUS - 1}]\n"
    )
    return conf


def _wait(ready, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.5)


class Cluster:
    """The running cluster: the environment its clients need, and its nodes to fail and restart."""

    def __init__(self, state: Path, conf: Path):
        self.state, self.conf = state, conf
        self.env = {**os.environ, "SLURM_CONF": str(conf)}
        self.slurmd: dict[str, subprocess.Popen] = {}

    def start_node(self, node: str) -> None:
        """The node's slurmd in the node's network namespace, under the node's hostname and with its hosts file
        (``ip netns exec`` would remount /sys, and slurmd needs the cgroup filesystem there)."""
        (self.state / "d" / node).mkdir(parents=True, exist_ok=True)
        self.slurmd[node] = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{node}",
                "unshare",
                "--uts",
                "--mount",
                "sh",
                "-c",
                f"hostname {node} && mount --bind {NETNS_ETC / node / 'hosts'} /etc/hosts && "
                f'exec /usr/sbin/slurmd -D -N {node} -f "$0"',
                str(self.conf),
            ],  # fmt: skip
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill_node(self, node: str) -> None:
        """The node fails: every process on it is killed at once (slurmd, job steps, ranks)."""
        _kill_namespace(node)
        if node in self.slurmd:
            self.slurmd.pop(node).wait(timeout=30)

    def states(self) -> dict[str, str]:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %T").stdout.split("\n")
        return dict(line.split() for line in out if line.strip())

    def wait_idle(self, timeout: float = 90) -> None:
        _wait(lambda: all(self.states().get(node, "").startswith("idle") for node in NODES), "the SLURM nodes", timeout)

    def allocations(self) -> dict[int, tuple[str, str, str]]:
        """Each finished job's nodes and when it started and ended, from the controller's log."""
        log = (self.state / "slurmctld.log").read_text()
        started = {  # the main scheduler's words, or the backfill scheduler's
            int(m[1] or m[2]): (m[3], m[0])
            for m in re.findall(
                r"\[(\S+)\] sched(?:: Allocate JobId=(\d+) NodeList="
                r"|/backfill: _start_job: Started JobId=(\d+) in \S+ on )(\S+)",
                log,
            )
        }
        ended = {int(m[1]): m[0] for m in re.findall(r"\[(\S+)\] _job_complete: JobId=(\d+) done", log)}
        return {job: (nodes, start, ended[job]) for job, (nodes, start) in started.items() if job in ended}

    def run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True)


@contextlib.contextmanager
def cluster(state: Path):
    """Start the two-node cluster under ``state``; yield it (``.env`` holds SLURM_CONF); stop it."""
    install()
    fake_gpus()
    munge = start_munge()
    controller = socket.gethostname().split(".")[0]
    make_network(controller)
    conf = write_config(state, controller)
    running = Cluster(state, conf)
    ctld = subprocess.Popen(
        ["/usr/sbin/slurmctld", "-D", "-f", str(conf)],
        env=running.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for node in NODES:
            running.start_node(node)
        running.wait_idle()
        yield running
    finally:
        for node in NODES:
            running.kill_node(node)
        for proc in [ctld, *([munge] if munge else [])]:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        remove_network()
        for path in (SYSTEM_CONF, SYSTEM_CONF.parent / "gres.conf"):
            path.unlink(missing_ok=True)
