"""What each stage-1 shard reads, as a fingerprint: a DICOM file replaced after the cache was built
reruns its shard and what depends on it, and nothing else.

A breast's shard is its patient's id modulo the number of shards (:func:`shard_of`), so the files a
shard reads are known from ``train.csv`` alone, before the manifest has run. :func:`fingerprints`
stats every file ``train.csv`` lists (``os.stat``: size and modification time in nanoseconds, never
the bytes) and digests them per shard; the workflow hands each shard's digest to its stage-1 job as
a parameter, so Snakemake reruns exactly the shards whose files changed in any way: replaced,
touched, cut, or a re-download that kept an older modification time. The same pass digests which
listed files are absent (or not regular files): that decides the manifest's exclusions, so a file
that appears or disappears reruns the manifest.

A stat per file is the whole cost: 0.26 s for the RSNA set's 54,706 files on a local disk, about
0.4 s of ``snakemake -n`` (``bench/dag.py``, bench/README.md). Rows whose ids are not integers are
skipped: the manifest excludes them.
"""

from __future__ import annotations

import csv
import hashlib
import os
import stat
from pathlib import Path
from typing import NamedTuple

from mammoscale import files


class Sources(NamedTuple):
    shards: dict[str, str]
    """Shard name (``0007``) -> the digest of its files' paths, sizes and modification times."""
    absent: str
    """The digest of the listed files that are not regular files (the manifest's ``missing_file``)."""
    files: int
    """How many files were looked at."""


def shard_of(patient_id, n_shards: int):
    """The shard of a patient's breasts (of an int, or of each id of an integer array): the id modulo the count."""
    return patient_id % n_shards


def listed(root: Path | str) -> list[tuple[str, str]]:
    """(patient_id, image_id) of every row of ``root/train.csv`` whose ids are integers, as written."""
    with open(Path(root) / files.TRAIN_CSV, newline="") as handle:
        rows = csv.reader(handle)
        header = next(rows, [])
        if "patient_id" not in header or "image_id" not in header:
            return []  # the manifest says what is wrong with it
        p, i = header.index("patient_id"), header.index("image_id")
        pairs = ((row[p].strip(), row[i].strip()) for row in rows if len(row) > max(p, i))
        return [(a, b) for a, b in pairs if a.isascii() and a.isdigit() and b.isascii() and b.isdigit()]


def fingerprints(root: Path | str, n_shards: int) -> Sources:
    """Each shard's fingerprint and the absent files' over ``root``'s ``train.csv`` (see the module docstring)."""
    prefix = os.path.join(root, "")  # paths as strings: a pathlib join costs more than the stat
    digests = [hashlib.sha256() for _ in range(n_shards)]
    absent = hashlib.sha256()
    pairs = listed(root)
    for patient, image in pairs:
        relative = files.IMAGE.format(patient_id=patient, image_id=image)
        try:
            info = os.stat(prefix + relative)
            regular = stat.S_ISREG(info.st_mode)
        except OSError:
            regular = False
        if regular:
            line = f"{relative} {info.st_size} {info.st_mtime_ns}\n"
        else:
            line = f"{relative} -\n"
            absent.update(line.encode())
        digests[shard_of(int(patient), n_shards)].update(line.encode())
    return Sources(
        {files.shard_name(k): d.hexdigest()[:16] for k, d in enumerate(digests)}, absent.hexdigest()[:16], len(pairs)
    )
