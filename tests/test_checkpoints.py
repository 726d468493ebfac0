"""Checkpoints a cell can vouch for: checksummed, the previous one kept, a bad one set aside with one warning.

Every file here is a real ``torch.save`` file, damaged on disk as a failing disk or a stray copy would.
What the checksum costs is measured by ``bench/checkpoint.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mammoscale import files, train
from mammoscale.train import checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FINGERPRINT = "0123456789abcdef"


def state(epoch: int, fingerprint: str = FINGERPRINT) -> dict:
    """What the training loop saves: a real model's and AdamW's state after one step, and its progress."""
    torch.manual_seed(epoch)
    model = nn.Linear(64, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(3, 64)).sum().backward()
    optimizer.step()
    return {
        "fingerprint": fingerprint,
        "epoch": epoch,
        "step": 9 * epoch,
        "epoch_step": 0,
        "epoch_elapsed": 0.0,
        "loss_curve": [0.5] * 9 * epoch,
        "epoch_times": [1.0] * epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    }


def seal(path: Path) -> None:
    """Vouch for ``path`` as a user would: its sha256 in ``sha256sum``'s format beside it."""
    path.with_name(path.name + ".sha256").write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def warnings_in(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def same(loaded: dict, saved: dict) -> bool:
    """Every tensor and every number of ``saved`` in ``loaded``, to the bit."""
    if loaded.keys() != saved.keys():
        return False
    for key, value in saved.items():
        if isinstance(value, torch.Tensor):
            if not torch.equal(loaded[key], value):
                return False
        elif isinstance(value, dict):
            if not same(loaded[key], value):
                return False
        elif loaded[key] != value:
            return False
    return True


def test_a_good_checkpoint_round_trips_with_a_sha256sum_sidecar(tmp_path, caplog):
    saved = state(1)
    path = checkpoint.save(tmp_path, saved)
    assert path == tmp_path / files.CHECKPOINT
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (tmp_path / "checkpoint.pt.sha256").read_text() == f"{digest}  checkpoint.pt\n"
    assert same(checkpoint.load(tmp_path, FINGERPRINT), saved)
    assert same(torch.load(path, weights_only=True), saved)  # still a plain torch.save file for anyone to open
    assert warnings_in(caplog) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.sha256"]


def test_saving_keeps_the_previous_checkpoint_each_with_its_own_checksum(tmp_path):
    for epoch in (1, 2, 3):
        checkpoint.save(tmp_path, state(epoch))
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 3
    assert torch.load(tmp_path / checkpoint.PREVIOUS, weights_only=True)["epoch"] == 2
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        digest = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        assert (tmp_path / f"{name}.sha256").read_text() == f"{digest}  {name}\n"
    assert len(list(tmp_path.iterdir())) == 4, "no temporary file, nor an older checkpoint, is left behind"


def test_a_flipped_byte_is_set_aside_and_the_previous_checkpoint_resumed(tmp_path, caplog):
    checkpoint.save(tmp_path, state(1))
    checkpoint.save(tmp_path, state(2))
    flip_a_byte(tmp_path / "checkpoint.pt")
    damaged = (tmp_path / "checkpoint.pt").read_bytes()

    assert same(checkpoint.load(tmp_path, FINGERPRINT), state(1))
    [warning] = warnings_in(caplog)
    assert warning == (
        f"{tmp_path / 'checkpoint.pt'} set aside as checkpoint.pt.damaged-1: its bytes do not match "
        "checkpoint.pt.sha256 (changed since written); resuming from checkpoint.prev.pt"
    )
    assert (tmp_path / "checkpoint.pt.damaged-1").read_bytes() == damaged  # kept as it was, for a look
    assert (tmp_path / "checkpoint.pt.damaged-1.sha256").is_file() and not (tmp_path / "checkpoint.pt").exists()

    checkpoint.save(tmp_path, state(2))  # the resumed run's next checkpoint keeps the good previous one
    assert torch.load(tmp_path / checkpoint.PREVIOUS, weights_only=True)["epoch"] == 1
    caplog.clear()
    assert checkpoint.load(tmp_path, FINGERPRINT)["epoch"] == 2 and warnings_in(caplog) == []


def test_a_flipped_byte_with_no_previous_checkpoint_starts_over(tmp_path, caplog):
    checkpoint.save(tmp_path, state(1))
    flip_a_byte(tmp_path / "checkpoint.pt")
    assert checkpoint.load(tmp_path, FINGERPRINT) is None
    [warning] = warnings_in(caplog)
    assert "checkpoint.pt set aside as checkpoint.pt.damaged-1" in warning and warning.endswith("; starting over")


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def not_checkpoints(tmp_path: Path) -> dict:
    """Ways to write a file that is no checkpoint, and what the warning says of it. The test seals each with its
    sha256, so that a check after the checksum's is what refuses it."""
    return {
        "a list": (lambda path: torch.save([1, 2], path), "it holds a list, not a checkpoint's dict"),
        "not a torch file": (lambda path: path.write_bytes(b"not a checkpoint"), "it cannot be read ("),
        "missing keys": (
            lambda path: torch.save({"fingerprint": FINGERPRINT, "epoch": 1}, path),
            "it lacks step, loss_curve, epoch_times, model, optimizer",
        ),
        "code": (
            lambda path: path.write_bytes(pickle.dumps({"model": Payload(tmp_path / "owned")}, protocol=2)),
            "it cannot be read (",
        ),
    }


@pytest.mark.parametrize("kind", ["a list", "not a torch file", "missing keys", "code"])
def test_a_file_that_is_not_a_checkpoint_is_set_aside_not_a_traceback(tmp_path, caplog, kind):
    write, why = not_checkpoints(tmp_path)[kind]
    write(tmp_path / "checkpoint.pt")
    seal(tmp_path / "checkpoint.pt")
    assert checkpoint.load(tmp_path, FINGERPRINT) is None
    [warning] = warnings_in(caplog)
    assert f"set aside as checkpoint.pt.damaged-1: {why}" in warning and warning.endswith("; starting over")
    assert (tmp_path / "checkpoint.pt.damaged-1").is_file() and not (tmp_path / "checkpoint.pt").exists()
    assert not (tmp_path / "owned").exists(), "loading a checkpoint ran code"


def test_a_checkpoint_without_its_checksum_is_not_resumed(tmp_path, caplog):
    """A ``torch.save([1, 2])`` (or a checkpoint of the version before checksums) under the checkpoint's name: no
    AttributeError, no resume; sealed by hand (``sha256sum``), a genuine one resumes again."""
    torch.save([1, 2], tmp_path / "checkpoint.pt")
    assert checkpoint.load(tmp_path, FINGERPRINT) is None
    [warning] = warnings_in(caplog)
    assert "set aside as checkpoint.pt.damaged-1: it has no checksum (checkpoint.pt.sha256 is missing" in warning

    torch.save(state(1), tmp_path / "checkpoint.pt")
    seal(tmp_path / "checkpoint.pt")
    assert checkpoint.load(tmp_path, FINGERPRINT)["epoch"] == 1


def test_a_checkpoint_of_other_settings_is_set_aside_and_the_cell_starts_over(tmp_path, caplog):
    for n in (1, 2):
        checkpoint.save(tmp_path, state(1, fingerprint="ffffffffffffffff"))
        checkpoint.save(tmp_path, state(2, fingerprint="ffffffffffffffff"))
        caplog.clear()
        assert checkpoint.load(tmp_path, FINGERPRINT) is None
        [warning] = warnings_in(caplog)
        other = f"it was written for other settings (fingerprint ffffffffffffffff, this cell {FINGERPRINT})"
        assert warning == (
            f"{tmp_path / 'checkpoint.pt'} set aside as checkpoint.pt.foreign-{n}: {other}; "
            f"{tmp_path / 'checkpoint.prev.pt'} set aside as checkpoint.prev.pt.foreign-{n}: {other}; starting over"
        )
    assert torch.load(tmp_path / "checkpoint.pt.foreign-1", weights_only=True)["epoch"] == 2  # none overwritten
    assert torch.load(tmp_path / "checkpoint.prev.pt.foreign-2", weights_only=True)["epoch"] == 1


def test_a_rank_other_than_0_skips_a_bad_checkpoint_and_leaves_it_to_rank_0(tmp_path, caplog):
    checkpoint.save(tmp_path, state(1))
    checkpoint.save(tmp_path, state(2))
    flip_a_byte(tmp_path / "checkpoint.pt")
    assert checkpoint.load(tmp_path, FINGERPRINT, set_aside=False)["epoch"] == 1
    assert warnings_in(caplog) == [] and (tmp_path / "checkpoint.pt").is_file()
    assert checkpoint.load(tmp_path, FINGERPRINT)["epoch"] == 1 and len(warnings_in(caplog)) == 1


class Killed(BaseException):
    """A SIGKILL between two steps of a save."""


def cut_short(out: Path, monkeypatch, at: int) -> bool:
    """Save epoch 3 into ``out``, killed at its ``at``-th rename or removal; whether it finished first."""
    os_replace, unlink, calls = os.replace, Path.unlink, []

    def step(real, *args, **kwargs):
        calls.append(args)
        if len(calls) == at:
            raise Killed
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", lambda *args: step(os_replace, *args))
        patch.setattr(Path, "unlink", lambda *args, **kwargs: step(unlink, *args, **kwargs))
        try:
            checkpoint.save(out, state(3))
        except Killed:
            return False
    return True


@pytest.mark.parametrize("previous", [True, False])
def test_a_save_killed_at_any_step_leaves_a_checkpoint_that_resumes_without_a_warning(tmp_path, monkeypatch, previous):
    """Every rename and removal a save makes is a place it can be killed: at each, the next load resumes the old
    newest or the new one, quietly, and never throws a good checkpoint away."""
    at, finished = 0, False
    while not finished:
        at += 1
        out = tmp_path / str(at)
        if previous:
            checkpoint.save(out, state(1))
        checkpoint.save(out, state(2))
        finished = cut_short(out, monkeypatch, at)
        resumed = checkpoint.load(out, FINGERPRINT)
        assert resumed is not None and resumed["epoch"] in ((3,) if finished else (2, 3)), at
        assert not list(out.glob("*.damaged-*")), at
    assert at > 4, "a save renames or removes at least four files"


def test_discard_removes_every_checkpoint_and_keeps_those_set_aside(tmp_path):
    checkpoint.save(tmp_path, state(1, fingerprint="ffffffffffffffff"))
    checkpoint.load(tmp_path, FINGERPRINT)
    checkpoint.save(tmp_path, state(1))
    checkpoint.save(tmp_path, state(2))
    assert len(checkpoint.discard(tmp_path)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt.foreign-1", "checkpoint.pt.foreign-1.sha256"]


def tiny_cell(cache_root: Path, **overrides) -> dict:
    base = {"image_size": 64, "patch_size": 16, "global_batch": 8, "micro_batch": 8, "loader_workers": 0}
    return {"cache_root": str(cache_root), **base, "mode": "full", "epochs": 2, "precision": "fp32", **overrides}


def test_a_cell_of_other_settings_sets_the_checkpoints_aside_and_starts_over(train_cache, tmp_path):
    train.run_cell(tiny_cell(train_cache, epochs=1), tmp_path)
    changed = train.run_cell(tiny_cell(train_cache, epochs=1, lr=5e-4), tmp_path)
    assert changed["status"] == "ok" and changed["resumed_from_epoch"] is None
    assert (tmp_path / "checkpoint.pt.foreign-1").is_file()
    [warning] = [line for line in (tmp_path / files.TRAIN_LOG).read_text().splitlines() if " WARNING " in line]
    assert "set aside as checkpoint.pt.foreign-1: it was written for other settings" in warning


def test_the_command_line_resumes_from_the_previous_checkpoint_when_the_newest_is_damaged(train_cache, tmp_path):
    """A 2-epoch cell, its last checkpoint damaged, run again: one warning, resumed from epoch 1 to the same result."""
    settings = tiny_cell(train_cache)

    def run() -> tuple[dict, str]:
        args = [f"{key}={value}" for key, value in settings.items()]
        proc = subprocess.run(
            [sys.executable, "-m", "mammoscale.train", "--out", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        return json.loads((tmp_path / files.METRICS).read_text()), proc.stderr

    first, _ = run()
    flip_a_byte(tmp_path / "checkpoint.pt")
    (tmp_path / files.TRAIN_LOG).unlink()
    again, said = run()
    log = (tmp_path / files.TRAIN_LOG).read_text()
    [warning] = [line for line in log.splitlines() if " WARNING " in line]
    assert "checkpoint.pt set aside as checkpoint.pt.damaged-1: its bytes do not match" in warning
    assert warning.endswith("resuming from checkpoint.prev.pt") and "Traceback" not in log + said
    assert again["status"] == "ok" and again["resumed_from_epoch"] == 1 and again["epochs"] == 2
    assert again["loss_curve"] == pytest.approx(first["loss_curve"], rel=1e-6)
