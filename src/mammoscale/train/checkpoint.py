"""Per-epoch checkpoints that survive preemption and damage: atomic, checksummed, the previous one kept.

A SLURM job can be preempted or requeued at any moment, and a file on a shared disk can be
damaged, truncated or replaced. A restarted cell resumes only from a checkpoint it can vouch for:

- **Atomic.** Rank 0 writes the state to a temporary name and renames it into place, so the file
  under the real name is always complete.
- **Checksummed.** Beside ``checkpoint.pt`` lies ``checkpoint.pt.sha256``, the sha256 of its bytes
  in ``sha256sum``'s format (``sha256sum -c checkpoint.pt.sha256`` checks it by hand; a user who
  vouches for a file can seal it the same way). One flipped byte would otherwise resume from altered
  weights, or end in a NaN blamed on the learning rate. A sidecar, not a digest inside the file:
  ``checkpoint.pt`` stays a plain ``torch.save`` of the state that ``torch.load`` opens, and the
  state is never held twice in memory as bytes. The digest is taken as the bytes are written, and
  checked before ``torch.load`` reads them. Its cost on a vit-base state (1 GB): about 0.6 s more
  to a save's serialising and to a load, sha256 running at 1.6 GB/s (``bench/checkpoint.py``, bench/README.md);
  keeping the previous checkpoint doubles the disk a cell's checkpoints take (2 GB for vit-base).
- **The previous one kept.** Before the new file is renamed into place, ``checkpoint.pt`` (and its
  sidecar) become ``checkpoint.prev.pt``. Every step of that swap leaves at least one complete
  checkpoint whose own sidecar matches it (:func:`save` says how), so a damaged newest falls back
  to the one before it.
- **Read without unpickling code.** ``torch.load(weights_only=True)``: tensors and plain containers
  only, so a checkpoint cannot run code.

A checkpoint that fails any check (no checksum, a checksum mismatch, unreadable, not a dict,
missing keys, or written for other settings) is never resumed and never deleted: it is set aside
under ``<name>.damaged-<n>`` (``.foreign-<n>`` for other settings), its sidecar beside it, with one
warning line naming each file and why, and the cell resumes from the previous good one or starts over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from mammoscale import files

log = logging.getLogger("mammoscale.train")

NAME = files.CHECKPOINT
"""The newest checkpoint."""
PREVIOUS = files.CHECKPOINT_PREVIOUS
"""The checkpoint before the newest: the one a damaged newest falls back to."""
SUM = ".sha256"
"""The suffix of a checkpoint's checksum file (``checkpoint.pt.sha256``)."""
KEYS = ("fingerprint", "epoch", "step", "loss_curve", "epoch_times", "model", "optimizer")
"""What a resume reads from a checkpoint; one without any of them is set aside, not half-resumed."""


def fingerprint(settings: dict) -> str:
    """A short digest of the settings that decide what is trained (not where or how fast)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def sum_path(path: Path) -> Path:
    """The checksum file of checkpoint ``path``."""
    return path.with_name(path.name + SUM)


class _Hashing:
    """A file that hashes what is written to it, so that the digest costs no second read."""

    def __init__(self, handle):
        self.handle, self.digest = handle, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def save(out_dir: Path, state: dict) -> Path:
    """Write ``state`` as the newest checkpoint, keeping the one it replaces as the previous.

    The order makes every moment safe (a kill between any two steps leaves at least one complete
    checkpoint that its own sidecar vouches for): the new state goes to a temporary file; the old
    previous pair is removed; the newest's digest is written as the previous one's sidecar, then the
    newest is renamed to the previous; the new digest becomes ``checkpoint.pt.sha256``; last, the
    new file is renamed to ``checkpoint.pt``.
    """
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise ValueError(f"a checkpoint needs {', '.join(missing)}")  # the writer's bug, not the user's
    newest, previous = Path(out_dir) / NAME, Path(out_dir) / PREVIOUS
    with files.atomic_path(newest) as tmp:
        with open(tmp, "wb") as handle:
            hashing = _Hashing(handle)
            torch.save(state, hashing)
        _rotate(newest, previous)
        _write_sum(newest, hashing.digest.hexdigest())
    return newest


def _rotate(newest: Path, previous: Path) -> None:
    if not newest.is_file():
        return  # the first checkpoint, or the newest was set aside: the previous stays as it is
    previous.unlink(missing_ok=True)
    sum_path(previous).unlink(missing_ok=True)
    digest = _recorded(newest)
    if digest is not None:
        _write_sum(previous, digest)
    os.replace(newest, previous)


def _write_sum(path: Path, digest: str) -> None:
    files.write_text(f"{digest}  {path.name}\n", sum_path(path))


def _recorded(path: Path) -> str | None:
    """The digest ``path``'s sidecar records; None when there is none, or it is not a sha256."""
    try:
        digest = sum_path(path).read_text().split(maxsplit=1)[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        return None
    return digest if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest) else None


def discard(out_dir: Path) -> list[Path]:
    """Remove the checkpoints of ``out_dir`` (a finished run's, when the cell is asked for anew); those removed."""
    removed = []
    for name in (NAME, PREVIOUS):
        for path in (Path(out_dir) / name, sum_path(Path(out_dir) / name)):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed


class _Unusable(Exception):
    """Why a checkpoint cannot be resumed; ``kind`` names what it is set aside as."""

    def __init__(self, kind: str, why: str):
        super().__init__(why)
        self.kind = kind


def load(out_dir: Path, expected_fingerprint: str, *, set_aside: bool = True) -> dict | None:
    """The newest checkpoint in ``out_dir`` that passes every check (the newest, else the previous), or None.

    Each one that fails is set aside (``set_aside``; the other ranks of a cell leave that to rank 0,
    and reach the same verdict on the same files) and named in one warning line, with why and what
    the cell does instead.
    """
    out_dir = Path(out_dir)
    refused = []
    for name in (NAME, PREVIOUS):
        path = out_dir / name
        if not path.is_file():
            continue
        try:
            state = _verified(path, expected_fingerprint)
        except _Unusable as exc:
            refused.append(_set_aside(path, exc) if set_aside else f"{path} not resumed: {exc}")
            continue
        if refused:
            _tell(refused, f"resuming from {path.name}", set_aside)
        elif name == PREVIOUS:  # the newest was set aside before (the workflow's job) or never renamed into place
            log.info("no %s: resuming from %s", out_dir / NAME, path)
        return state
    if refused:
        _tell(refused, "starting over", set_aside)
    return None


def _verified(path: Path, expected_fingerprint: str) -> dict:
    digest = _recorded(path)
    if digest is None:
        raise _Unusable("damaged", f"it has no checksum ({sum_path(path).name} is missing or not a sha256)")
    try:
        found = files.sha256_file(path)
    except OSError as exc:
        raise _Unusable("damaged", f"it cannot be read ({exc.strerror})") from None
    if found != digest:
        raise _Unusable("damaged", f"its bytes do not match {sum_path(path).name} (changed since written)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # whatever a file's contents make torch.load raise, the file is not a checkpoint
        said = str(exc).strip().splitlines()
        raise _Unusable("damaged", f"it cannot be read ({said[0][:200] if said else type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise _Unusable("damaged", f"it holds a {type(state).__name__}, not a checkpoint's dict")
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise _Unusable("damaged", f"it lacks {', '.join(missing)}")
    if state["fingerprint"] != expected_fingerprint:
        raise _Unusable(
            "foreign",
            f"it was written for other settings (fingerprint {state['fingerprint']}, this cell {expected_fingerprint})",
        )
    return state


def _set_aside(path: Path, why: _Unusable) -> str:
    """Rename ``path`` (and its sidecar) to the first free ``<name>.<kind>-<n>``; what was done, in words."""
    n = 1
    while (aside := path.with_name(f"{path.name}.{why.kind}-{n}")).exists() or sum_path(aside).exists():
        n += 1
    try:
        os.replace(path, aside)
        if sum_path(path).is_file():
            os.replace(sum_path(path), sum_path(aside))
    except OSError as exc:
        return f"{path} not resumed ({why}) and not set aside ({exc.strerror})"
    return f"{path} set aside as {aside.name}: {why}"


def _tell(refused: list[str], then: str, primary: bool) -> None:
    """One line for every checkpoint refused by one load: a warning from the rank that set them aside."""
    (log.warning if primary else log.info)("%s; %s", "; ".join(refused), then)
