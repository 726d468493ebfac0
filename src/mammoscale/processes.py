"""A function over many files in worker processes, where one file's crash is that file's alone.

Codecs are native code: a damaged codestream can take its process down (a segmentation fault,
an abort) rather than raise. :func:`map_isolated` maps a function over jobs in a pool of worker
processes and yields the results in order; when a worker dies, the pool is broken for every job
in flight, so the unfinished jobs run again one at a time, each alone in a fresh worker, until
the one that takes its worker down is found: it yields ``crashed(job, message)`` instead of a
result, and the rest go on in a full pool again. Nothing is lost and nothing is run twice to
completion.
"""

from __future__ import annotations

import logging
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
            with ProcessPoolExecutor(max_workers=min(workers, len(pending))) as pool:
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
            with ProcessPoolExecutor(max_workers=1) as solo:
                result = solo.submit(function, job).result()
        except BrokenProcessPool:
            log.error("job %d after the crash took its worker down: recorded as crashed, the rest go on", n)
            yield crashed(job, "the worker process decoding it died (a codec crashed)")
            return n
        yield result
    return len(jobs)
