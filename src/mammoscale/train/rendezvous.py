"""Where the ranks of a cell that srun starts meet: a server the job's own process holds for the run.

Outside SLURM, torchrun and horovodrun hold the rendezvous. In a SLURM job ``srun`` starts the
ranks (:func:`mammoscale.plan.launch.launch_command`) and the job's process, which runs in the
batch script on the allocation's first node, holds it instead: for DDP a ``TCPStore`` (what
torchrun's agent holds), for Horovod the Gloo rendezvous server ``horovodrun`` would start. Each
binds a free port as it starts (the kernel's choice for the store, Horovod's own search for its
server), so two cells whose jobs share a node never race for a port, and a rank 0 placed on any
node finds them. :func:`hosted` yields the variables that tell the
ranks where it is; the ranks read them in :mod:`mammoscale.train.backends`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import socket

from mammoscale.errors import UserError
from mammoscale.plan.launch import HOROVOD_MISSING, by_srun, horovod_host, ranks, ranks_per_node

log = logging.getLogger(__name__)

STORE = "MAMMOSCALE_STORE"
"""``host:port`` of the TCPStore the job's process holds for a DDP cell's ranks (they join as clients)."""


def interface_env(profile: dict) -> dict[str, str]:
    """The profile's network interface, as each communication library reads it."""
    name = profile.get("network_interface")
    if not name:
        return {}
    return {"GLOO_SOCKET_IFNAME": name, "NCCL_SOCKET_IFNAME": name, "HOROVOD_GLOO_IFACE": name}


@contextlib.contextmanager
def hosted(profile: dict, timeout_s: int = 600):
    """Hold the rendezvous of a cell whose ranks ``srun`` starts (:func:`mammoscale.plan.launch.by_srun`) while they
    run; yield the variables for them ({} for one rank, or ranks whose launcher holds its own rendezvous)."""
    if not by_srun(profile) or ranks(profile) == 1:
        yield {}
        return
    host = socket.gethostname()
    env = interface_env(profile)
    if profile["launcher"] == "horovod":
        with _horovod_server(profile) as port:
            log.info("horovod rendezvous at %s:%d for %d ranks", host, port, ranks(profile))
            yield {
                **env,
                "HOROVOD_GLOO_RENDEZVOUS_ADDR": host,
                "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
                "HOROVOD_CONTROLLER": "gloo",
                "HOROVOD_CPU_OPERATIONS": "gloo",
            }
        return
    import torch.distributed

    store = torch.distributed.TCPStore(
        host, 0, is_master=True, wait_for_workers=False, timeout=datetime.timedelta(seconds=timeout_s)
    )
    log.info("ddp rendezvous (TCPStore) at %s:%d for %d ranks", host, store.port, ranks(profile))
    try:
        yield {**env, STORE: f"{host}:{store.port}"}
    finally:
        del store


@contextlib.contextmanager
def _horovod_server(profile: dict):
    """Horovod's Gloo rendezvous server, told the slots of every node (``ranks_per_node`` on each)."""
    try:
        from horovod.runner.common.util.hosts import SlotInfo
        from horovod.runner.http.http_server import RendezvousServer
    except ImportError:
        raise UserError(HOROVOD_MISSING) from None

    nodes, per_node = profile["nodes"], ranks_per_node(profile)
    slots = [
        SlotInfo(
            hostname=horovod_host(node),
            rank=node * per_node + local,
            local_rank=local,
            cross_rank=node,
            size=nodes * per_node,
            local_size=per_node,
            cross_size=nodes,
        )
        for node in range(nodes)
        for local in range(per_node)
    ]
    server = RendezvousServer()
    port = server.start()
    server.init(slots)
    try:
        yield port
    finally:
        server.stop()
