"""Stopping a cell early and cleanly: ahead of its SLURM time limit, or when asked.

SLURM signals a cell's ranks ``SIGNAL`` some minutes before the job's time limit (the job asks for
it with ``--signal``, :func:`mammoscale.plan.launch.job_request`); ``scancel --signal=USR1 <job>``
or ``kill -USR1`` asks the same by hand. The signal only sets a flag: the ranks agree on it at the
end of the next optimiser step (one collective they make anyway, :meth:`Backend.step_end`), so they
all stop after the same step, rank 0 writes a checkpoint of that step, and every rank exits with
:data:`EXIT_CODE`. The job then has SLURM requeue it (or, where it cannot, fails so that
Snakemake retries it), and the cell resumes mid-epoch from that step
(:mod:`mammoscale.train.loop`). A rank that has not yet taken a step in this process takes one
first, so that every job makes progress however early the signal comes.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from mammoscale.errors import UserError
from mammoscale.plan.launch import STOP_SIGNAL

SIGNAL = getattr(signal, f"SIG{STOP_SIGNAL}")
"""The signal that asks a cell to stop at its next step boundary (SLURM's ``--signal=USR1@seconds``)."""
EXIT_CODE = 75
"""A rank that stopped with its checkpoint written exits with it (``EX_TEMPFAIL``: try again later)."""


class Interrupted(UserError):
    """The cell stopped at a step boundary when asked (ahead of a time limit), its checkpoint written: running it
    again resumes from that step."""


class Stop:
    """Whether this rank has been asked to stop; set by :data:`SIGNAL` while :func:`on_signal` is active."""

    def __init__(self):
        self.requested = False

    def _handle(self, signum, frame) -> None:
        self.requested = True  # only a flag: the training loop says it, outside the handler


@contextlib.contextmanager
def on_signal(stop: Stop):
    """Let :data:`SIGNAL` request ``stop`` while the block runs (the main thread only: Python handles signals
    there; elsewhere the signal keeps its disposition)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(SIGNAL, stop._handle)
    try:
        yield stop
    finally:
        signal.signal(SIGNAL, previous)
