"""Per-epoch checkpoints that survive preemption: written atomically, read without unpickling code.

A SLURM job can be preempted or requeued at any moment. Rank 0 writes ``checkpoint.pt`` to a
temporary name and renames it into place, so the file under the real name is always a complete
epoch. A restarted cell loads it with ``torch.load(weights_only=True)`` (tensors and plain
containers only: a checkpoint cannot run code) and refuses one written for different settings,
since resuming it would mix two experiments.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import torch

from mammoscale import files
from mammoscale.errors import UserError

NAME = files.CHECKPOINT


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be resumed: unreadable, or written for other settings."""


def fingerprint(settings: dict) -> str:
    """A short digest of the settings that decide what is trained (not where or how fast)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def save(out_dir: Path, state: dict) -> Path:
    path = Path(out_dir) / NAME
    with files.atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load(out_dir: Path, expected_fingerprint: str) -> dict | None:
    """The checkpoint in ``out_dir``, or None when there is none."""
    path = Path(out_dir) / NAME
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"{path} cannot be read ({str(exc).splitlines()[0]}); delete it to start the cell afresh"
        ) from None
    if state.get("fingerprint") != expected_fingerprint:
        raise CheckpointError(
            f"{path} was written for other settings (fingerprint {state.get('fingerprint')}, "
            f"this cell {expected_fingerprint}); delete it or use another output directory"
        )
    return state
