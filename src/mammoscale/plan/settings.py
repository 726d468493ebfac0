"""A grid cell's resolved settings: every knob of one training run, checked before anything runs.

A cell arrives as a plain dict (from the Snakefile, a YAML file or ``key=value`` arguments).
Unknown keys are errors, so a typo cannot fall back to a default; a global batch that the
micro-batches and ranks cannot make up exactly is an error, so every hardware profile trains
the same experiment. Torch-free: the Snakefile checks every cell's settings when it is parsed,
long before a job starts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

from mammoscale import tasks
from mammoscale.config import defaults
from mammoscale.errors import UserError
from mammoscale.plan import families
from mammoscale.plan.launch import BACKENDS

MODES = ("full", "throughput")
PRECISIONS = ("bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")
LR_SCALINGS = {"none": lambda ratio: 1.0, "linear": lambda ratio: ratio, "sqrt": math.sqrt}
"""``train.lr_scaling``: the factor on the peak learning rate, from the global batch's ratio to the batch ``lr`` is
for (:func:`lr_scale`)."""


class SettingsError(UserError, ValueError):
    """A cell setting that is unknown, of the wrong type or out of range."""


_TRAIN = defaults()["train"]
TIMING = {"cuda": {"timed_steps": 50, "timing_windows": 10}, "cpu": {"timed_steps": 3, "timing_windows": 3}}
"""What ``train.timed_steps`` and ``train.timing_windows`` are when left null, by the device a cell trains on: a
GPU step takes well under a second (ten windows of five steps: an interval, :data:`mammoscale.stats.MIN_WINDOWS`);
a CPU step of the embedded study up to nine seconds, so three windows of one (a spread, the CV, but no interval:
the two steps more that five windows take would cost ``make run`` 40 s; set both keys to 5 for one)."""


def timing_defaults(settings: dict, *, gpu: bool | None = None) -> dict:
    """``settings`` with a null ``timed_steps`` or ``timing_windows`` filled in for its device (:data:`TIMING`; a null
    window count no more than the timed steps):
    ``gpu`` where the caller knows (a profile with GPUs whose ``device`` is ``auto``), else its ``device`` (``auto``
    taken as a CPU's, the safe side of a time limit)."""
    chosen = TIMING["cuda" if (settings.get("device") == "cuda" if gpu is None else gpu) else "cpu"]
    filled = {**settings, **{key: value for key, value in chosen.items() if settings.get(key) is None}}
    if settings.get("timing_windows") is None:  # fits the steps given: a window is one step at least
        filled["timing_windows"] = min(filled["timing_windows"], filled["timed_steps"])
    return filled


@dataclass(frozen=True)
class Settings:
    """One cell's settings. ``train.*`` keys default to the configuration's defaults; the rest are the
    cell's place in the grid and what its hardware profile decides."""

    image_size: int
    patch_size: int | None
    """None for a family without patches (a CNN: :mod:`mammoscale.plan.families`)."""
    cache_root: str
    hardware: str = "cpu"
    variant: str = "flash"
    family: str = "xtransformers"
    attention: str = "flash"
    model_size: str = _TRAIN["model_size"]
    weights: dict | None = None
    """A CNN variant's pretrained file, ``{path, sha256}`` (checked before it is loaded)."""
    task: str = tasks.BREAST_CANCER.name
    """What the cell predicts, its data source's (:mod:`mammoscale.tasks`)."""
    channels: int = _TRAIN["channels"]
    mode: str = _TRAIN["mode"]
    epochs: int = _TRAIN["epochs"]
    timing_warmup_steps: int = _TRAIN["timing_warmup_steps"]
    timed_steps: int | None = _TRAIN["timed_steps"]
    """Timed optimiser steps of a throughput-mode cell (after the warm-up); null: :data:`TIMING`'s."""
    timing_windows: int | None = _TRAIN["timing_windows"]
    """Windows the timed steps are cut into, one images/s each (:mod:`mammoscale.stats`); null: :data:`TIMING`'s."""
    global_batch: int = _TRAIN["global_batch"]
    micro_batch: int = _TRAIN["global_batch"]
    lr: float = _TRAIN["lr"]
    weight_decay: float = _TRAIN["weight_decay"]
    warmup_fraction: float = _TRAIN["warmup_fraction"]
    min_lr_fraction: float = _TRAIN["min_lr_fraction"]
    lr_scaling: str = _TRAIN["lr_scaling"]
    lr_reference_batch: int | None = _TRAIN["lr_reference_batch"]
    lr_scale_with_world_size: bool = False
    """What a cell whose learning rate is not scaled holds (:func:`unscaled_as_before`): false,
    the only value it takes now (``lr_scaling`` replaced it)."""
    """The global batch ``lr`` is for; None: ``global_batch`` (no scaling). :func:`grid.cell_settings` resolves it."""
    precision: str = _TRAIN["precision"]
    seed: int = _TRAIN["seed"]
    backend: str = "none"
    device: str = "auto"
    local_scratch: str | None = None
    loader_workers: int = _TRAIN["loader_workers"]
    pin_memory: bool = True
    data_on_device: str = "auto"
    peak_tflops: float | None = None
    checkpoint: bool = _TRAIN["checkpoint"]
    checkpoint_every_min: float = _TRAIN["checkpoint_every_min"]
    collective_timeout_s: int = 600
    """How long a rank waits in a collective for the others (the process group's timeout)."""

    @classmethod
    def from_dict(cls, cell: dict) -> Settings:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(cell) - set(known))
        if unknown:
            raise SettingsError(f"unknown cell setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        missing = [name for name, f in known.items() if f.default is dataclasses.MISSING and name not in cell]
        if missing:
            raise SettingsError(f"cell setting(s) {', '.join(missing)} are required")
        values = {name: _coerce(name, known[name].type, value) for name, value in cell.items()}
        settings = cls(**timing_defaults({"device": known["device"].default, **values}))
        settings.check()
        return settings

    def check(self) -> None:
        families.check(self.family, self.attention, self.model_size, self.image_size, self.patch_size, self.channels)
        tasks.task(self.task)
        _choice("mode", self.mode, MODES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("backend", self.backend, BACKENDS)
        _choice("device", self.device, DEVICES)
        _choice("lr_scaling", self.lr_scaling, LR_SCALINGS)
        if self.lr_scale_with_world_size:
            raise SettingsError(
                "lr_scale_with_world_size was replaced by lr_scaling: linear (with batch_per_rank, the global batch "
                "grows with the ranks); set lr_scale_with_world_size false or leave it out"
            )
        _choice("data_on_device", self.data_on_device, ("auto", "yes", "no"))
        for name in ("epochs", "global_batch", "micro_batch", "timed_steps", "timing_windows", "collective_timeout_s"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.lr_reference_batch is not None and self.lr_reference_batch < 1:
            raise SettingsError(f"lr_reference_batch must be at least 1, not {self.lr_reference_batch}")
        for name in ("timing_warmup_steps", "loader_workers"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative, not {getattr(self, name)}")
        if self.mode == "throughput" and self.timing_windows > self.timed_steps:
            raise SettingsError(
                f"timing_windows {self.timing_windows} is more than timed_steps {self.timed_steps}: a window is at "
                "least one step; set train.timed_steps to a multiple of train.timing_windows"
            )
        for name in ("lr", "checkpoint_every_min"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name} must be positive, not {getattr(self, name)}")
        for name in ("warmup_fraction", "min_lr_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise SettingsError(f"{name} must be within [0, 1], not {getattr(self, name)}")

    def grad_accum(self, world: int) -> int:
        """Micro-batches per rank per optimiser step that keep the global batch constant."""
        per_step = self.micro_batch * world
        if self.global_batch % per_step:
            raise SettingsError(
                f"global batch {self.global_batch} is not a multiple of micro-batch "
                f"{self.micro_batch} x {world} rank(s) = {per_step}; change micro_batch or "
                "global_batch so that it divides"
            )
        return self.global_batch // per_step

    @property
    def lr_scale(self) -> float:
        """What the schedule's peak is ``lr`` times: :func:`lr_scale` of this cell's global batch."""
        return lr_scale(self.lr_scaling, self.global_batch, self.lr_reference_batch or self.global_batch)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def training_identity(self) -> dict:
        """The settings that decide what is trained; a checkpoint resumes only under the same ones."""
        keys = (
            "family",
            "attention",
            "model_size",
            "image_size",
            "patch_size",
            "channels",
            "mode",
            "epochs",
            "global_batch",
            "lr",
            "weight_decay",
            "warmup_fraction",
            "min_lr_fraction",
            "lr_scaling",
            "lr_reference_batch",
            "precision",
            "seed",
        )
        identity = {key: getattr(self, key) for key in keys}
        return unscaled_as_before(identity)  # unscaled: the fingerprint of a checkpoint written before lr_scaling


LEGACY_LR = {"lr_scale_with_world_size": False}
"""What a cell whose learning rate is not scaled holds, in the place of ``lr_scaling`` and ``lr_reference_batch``."""


def unscaled_as_before(settings: dict) -> dict:
    """``settings`` as a cell held them before ``train.lr_scaling`` where the learning rate is not scaled (``none``):
    ``lr_scale_with_world_size: false`` where the two keys were, so its params and its checkpoints' fingerprint are
    unchanged and an upgrade retrains no cell."""
    if settings.get("lr_scaling", "none") != "none":
        return settings
    result = {}
    for key, value in settings.items():
        if key == "lr_scaling":
            result.update(LEGACY_LR)
        elif key != "lr_reference_batch":
            result[key] = value
    return result


def lr_scale(rule: str, global_batch: int, reference_batch: int) -> float:
    """The factor on the peak learning rate for a global batch ``global_batch`` times ``reference_batch``, by ``rule``:
    ``none`` 1; ``linear`` the ratio (Goyal et al. 2017: the averaged gradient of a k times larger batch takes k times
    the step, reached over the warm-up); ``sqrt`` its square root (the gradient's noise falls as the square root of the
    batch: Krizhevsky 2014, Hoffer et al. 2017; the usual rule for Adam-type optimisers)."""
    _choice("lr_scaling", rule, LR_SCALINGS)
    return float(LR_SCALINGS[rule](global_batch / reference_batch))


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


def _coerce(name: str, annotation: str, value):
    """Accept the natural spellings of ``key=value`` arguments and YAML; refuse anything else."""
    kind = annotation.replace(" | None", "")
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none") and "None" in annotation):
        if "None" in annotation:
            return None
        raise SettingsError(f"{name} must not be null")
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in _TRUE | _FALSE:
                return str(value).lower() in _TRUE
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "dict":
            if not isinstance(value, dict):
                raise ValueError
            return value
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be {'an' if kind == 'int' else 'a'} {kind}, not {value!r}") from None
