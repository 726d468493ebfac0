"""A cell's settings: unknown, missing or malformed values are refused with a sentence; the batch arithmetic."""

from __future__ import annotations

import pytest
import yaml

from mammoscale.config import defaults
from mammoscale.errors import UserError
from mammoscale.plan import grid
from mammoscale.plan.settings import TIMING, Settings, SettingsError
from mammoscale.plan.study import Study

from conftest import REPO

BASE = {"image_size": 64, "patch_size": 16, "cache_root": "results/cache"}


def test_defaults_and_required():
    settings = Settings.from_dict(BASE)
    assert settings.family == "xtransformers" and settings.attention == "flash" and settings.precision == "bf16"
    with pytest.raises(SettingsError, match="cache_root are required"):
        Settings.from_dict({"image_size": 64, "patch_size": 16})


def test_a_typo_is_an_error_not_a_default():
    with pytest.raises(SettingsError, match="unknown cell setting.*global_bacth"):
        Settings.from_dict({**BASE, "global_bacth": 64})


def test_command_line_strings_are_read_as_their_types():
    settings = Settings.from_dict(
        {
            **BASE,
            "epochs": "3",
            "lr": "1e-3",
            "checkpoint": "false",
            "local_scratch": "null",
            "peak_tflops": "312",
            "data_on_device": True,
        }
    )
    assert settings.epochs == 3 and settings.lr == 1e-3 and settings.checkpoint is False
    assert settings.local_scratch is None and settings.peak_tflops == 312.0 and settings.data_on_device == "yes"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("epochs", "many", "epochs must be an int"),
        ("epochs", 2.5, "epochs must be an int"),
        ("epochs", True, "epochs must be an int"),
        ("checkpoint", "maybe", "checkpoint must be a bool"),
        ("lr", "fast", "lr must be a float"),
        ("image_size", None, "image_size must not be null"),
        ("epochs", 0, "epochs must be at least 1"),
        ("timing_warmup_steps", -1, "must not be negative"),
        ("lr", 0, "lr must be positive"),
        ("warmup_fraction", 1.5, "within"),
        ("mode", "fast", "mode must be one of full, throughput"),
        ("precision", "fp16", "precision must be one of"),
        ("backend", "mpi", "backend must be one of none, ddp, horovod"),
        ("device", "tpu", "device must be one of"),
        ("attention", "eager", "not available for xtransformers"),
        ("patch_size", 24, "does not divide"),
    ],
)
def test_bad_values_are_refused(key, value, message):
    with pytest.raises(UserError, match=message):
        Settings.from_dict({**BASE, key: value})


@pytest.mark.parametrize(
    "global_batch, micro, world, accum",
    [(128, 32, 1, 4), (128, 32, 4, 1), (128, 16, 2, 4), (96, 24, 4, 1), (192, 24, 4, 2)],
)
def test_accumulation_keeps_the_global_batch(global_batch, micro, world, accum):
    settings = Settings.from_dict({**BASE, "global_batch": global_batch, "micro_batch": micro})
    assert settings.grad_accum(world) == accum
    assert accum * micro * world == global_batch


def test_a_global_batch_that_does_not_divide_is_refused():
    settings = Settings.from_dict({**BASE, "global_batch": 100, "micro_batch": 24})
    with pytest.raises(SettingsError, match="global batch 100 is not a multiple of micro-batch 24 x 4"):
        settings.grad_accum(4)


def test_the_train_defaults_are_the_configurations():
    """One owner: a cell's ``train.*`` defaults are the config schema's, not a copy."""
    settings = Settings.from_dict(BASE).as_dict()
    shared = {key: value for key, value in defaults()["train"].items() if key in settings}
    # null: filled in per device (a null lr_reference_batch is the global batch: grid.batch_of resolves it per cell)
    device_made = {key: value for key, value in shared.items() if value is None and key != "lr_reference_batch"}
    assert set(device_made) == set(TIMING["cpu"])
    assert shared and {key: settings[key] for key in shared if key not in device_made} == {
        key: value for key, value in shared.items() if key not in device_made
    }
    # which cells run, not how one trains; and the keys a cell holds resolved (batch_per_rank: its global batch)
    assert set(defaults()["train"]) - set(shared) == {*grid.GRID_KEYS, *grid.RESOLVED_KEYS}


@pytest.mark.parametrize("device", ["cpu", "cuda", "auto"])
def test_timing_left_null_is_the_devices(device):
    settings = Settings.from_dict({**BASE, "device": device})
    chosen = TIMING["cuda" if device == "cuda" else "cpu"]
    assert (settings.timed_steps, settings.timing_windows) == (chosen["timed_steps"], chosen["timing_windows"])
    given = Settings.from_dict({**BASE, "device": device, "timed_steps": 7, "timing_windows": "2"})
    assert (given.timed_steps, given.timing_windows) == (7, 2)
    with pytest.raises(SettingsError, match="timing_windows must be at least 1"):
        Settings.from_dict({**BASE, "timing_windows": 0})
    with pytest.raises(SettingsError, match="timing_windows 5 is more than timed_steps 3: a window is at least one"):
        Settings.from_dict({**BASE, "mode": "throughput", "timing_windows": 5, "timed_steps": 3})
    assert Settings.from_dict({**BASE, "mode": "full", "timing_windows": 5, "timed_steps": 3}).mode == "full"
    assert Settings.from_dict({**BASE, "timed_steps": 2}).timing_windows == 2  # left null: as many as the steps


def test_a_cell_whose_learning_rate_is_not_scaled_keeps_the_settings_it_had_before_lr_scaling():
    """An upgrade retrains no cell: its params and its checkpoints' fingerprint hold ``lr_scale_with_world_size:
    false`` where ``lr_scaling`` and ``lr_reference_batch`` would be, in the same place."""
    base = {"image_size": 64, "patch_size": 16, "cache_root": "x"}
    identity = Settings.from_dict(base).training_identity()
    keys = list(identity)
    assert identity["lr_scale_with_world_size"] is False and "lr_scaling" not in identity
    assert keys[keys.index("min_lr_fraction") + 1] == "lr_scale_with_world_size"
    assert Settings.from_dict(identity | base).training_identity() == identity  # an old cell.yaml reads back
    scaled = Settings.from_dict({**base, "lr_scaling": "linear", "lr_reference_batch": 1}).training_identity()
    assert scaled["lr_scaling"] == "linear" and "lr_scale_with_world_size" not in scaled
    with pytest.raises(SettingsError, match="replaced by lr_scaling: linear"):
        Settings.from_dict({**base, "lr_scale_with_world_size": True})
    study = Study.from_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    settings = study.cell_settings(study.cells[0])
    assert settings["lr_scale_with_world_size"] is False and not {"lr_scaling", "lr_reference_batch"} & set(settings)
