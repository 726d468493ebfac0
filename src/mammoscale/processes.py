"""A function over many files in worker processes, where one file's crash is that file's alone.

Codecs are native code: a damaged codestream can take its process down (a segmentation fault,
an abort) rather than raise. :func:`map_isolated` maps a function over jobs in a pool of worker
processes and yields the results in order; when a worker dies, the pool is broken for every job
in flight, so the unfinished jobs run again one at a time, each alone in a fresh worker, until
the one that takes its worker down is found: it yields ``crashed(job, message)`` instead of a
result, and the rest go on in a full pool again. Nothing is lost and nothing is run twice to
completion.

Workers end with the process that started them: a parent killed outright (the OOM killer, SIGKILL
from a scheduler) runs no cleanup, and its workers, adopted by init, would go on decoding and
holding the files they had open, a deleted temporary file's blocks among them. On Linux each worker
asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

log = logging.getLogger(__name__)

Job = TypeVar("Job")
Result = TypeVar("Result")


def map_isolated(
    function: Callable[[Job], Result],
    jobs: Sequence[Job],
    *,
    workers: int,
    crashed: Callable[[Job, str], Result],
) -> Iterator[Result]:
    """``function`` over ``jobs`` in order, in ``workers`` processes (0: in this process, unfenced)."""
    if workers < 1:
        yield from map(function, jobs)
        return
    done = 0
    while done < len(jobs):
        pending = jobs[done:]
        try:
            with ProcessPoolExecutor(
                max_workers=min(workers, len(pending)), initializer=die_with_parent, initargs=(os.getpid(),)
            ) as pool:
                chunk = max(1, len(pending) // (4 * workers))
                for result in pool.map(function, pending, chunksize=chunk):
                    yield result
                    done += 1
        except BrokenProcessPool:
            log.warning("a worker process died; finding the job that took it down, one job at a time")
            done += yield from _until_crash(function, jobs[done:], crashed)


def _until_crash(function, jobs, crashed) -> Iterator:
    """Each job alone in a fresh worker, until one kills its worker (yielded as crashed); returns how many ran."""
    for n, job in enumerate(jobs, 1):
        try:
            with ProcessPoolExecutor(max_workers=1, initializer=die_with_parent, initargs=(os.getpid(),)) as solo:
                result = solo.submit(function, job).result()
        except BrokenProcessPool:
            log.error("job %d after the crash took its worker down: recorded as crashed, the rest go on", n)
            yield crashed(job, "the worker process decoding it died (a codec crashed)")
            return n
        yield result
    return len(jobs)


PR_SET_PDEATHSIG = 1
"""prctl(2)'s option: the signal this process gets when its parent dies."""


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere nothing), and end now if the
    parent ``parent`` is already gone (it died before the request was made)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): this worker may outlive its parent", ctypes.get_errno())
    if os.getppid() != parent:
        os._exit(1)
