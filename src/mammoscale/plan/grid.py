"""The study's grid as data: which cells exist, and each cell's own settings.

A cell is (hardware, variant, image size, patch size). Its settings are resolved here from the
config's parts that concern it alone: its hardware profile, its variant, ``train.*`` and the
cache's location. The Snakefile passes them to the training rule as params, so changing one
hardware profile, say, reruns that hardware's cells and no others.

A patch size that does not divide an image size makes no cell (:func:`cells` leaves it out and
:func:`missing_cells` says which), rather than a cell that can only fail.
"""

from __future__ import annotations

from typing import NamedTuple

from mammoscale import files
from mammoscale.errors import UserError
from mammoscale.plan.launch import BACKEND_OF_LAUNCHER
from mammoscale.plan.settings import timing_defaults
from mammoscale.plan.vit import role

STUDY_BASELINE = {"family": "hf", "attention": "eager"}
"""The published study's baseline: Hugging Face's ViT with eager (materialised) attention."""


class Cell(NamedTuple):
    hardware: str
    variant: str
    image_size: int
    patch_size: int

    @property
    def name(self) -> str:
        """``hardware/variant/img<S>_p<P>``: its run directory under ``results/runs``, its log's name."""
        return files.cell_name(*self)

    @property
    def label(self) -> str:
        """``img<S>_p<P>``: its image and patch size."""
        return files.cell_label(self.image_size, self.patch_size)

    def run_dir(self, runs_root=files.RUNS):
        return files.run_dir(*self, runs_root=runs_root)


def cells(image_sizes, patch_sizes, variants, hardware) -> list[Cell]:
    """Every (hardware, variant, image size, patch size) to run, patches that divide the size only."""
    return [
        Cell(hw, variant, size, patch)
        for hw in hardware
        for variant in variants
        for size in sorted(image_sizes)
        for patch in sorted(patch_sizes)
        if size % patch == 0
    ]


def with_extra_cells(product: list[Cell], extra: list[dict], *, image_sizes, variants, profiles: dict) -> list[Cell]:
    """``product`` and then ``grid.extra_cells`` (cells outside the product, e.g. Figure 2's reference
    cell on every server), each checked, none twice."""
    result = list(product)
    for spec in extra:
        cell = Cell(spec["hardware"], spec["variant"], spec["image_size"], spec["patch_size"])
        where = f"grid.extra_cells: {cell.name}"
        if cell.hardware not in profiles:
            raise UserError(f"{where}: no hardware profile {cell.hardware!r} ({', '.join(profiles)})")
        if cell.variant not in variants:
            raise UserError(f"{where}: no variant {cell.variant!r} in grid.variants ({', '.join(variants)})")
        if cell.image_size not in image_sizes:
            raise UserError(f"{where}: image size {cell.image_size} is not in grid.image_sizes, so it has no cache")
        if cell.image_size % cell.patch_size:
            raise UserError(f"{where}: patch size {cell.patch_size} does not divide {cell.image_size}")
        if cell not in result:
            result.append(cell)
    return result


def missing_cells(image_sizes, patch_sizes) -> list[str]:
    return [
        files.cell_label(size, patch) for size in sorted(image_sizes) for patch in sorted(patch_sizes) if size % patch
    ]


def check_hardware(chosen, profiles: dict) -> None:
    unknown = [name for name in chosen if name not in profiles]
    if unknown:
        raise UserError(
            f"grid.hardware names {', '.join(unknown)}, not among the hardware profiles ({', '.join(profiles)})"
        )


TIMED = ("timed_steps", "timing_windows")
"""A throughput cell's timing settings; a full-mode cell's windows are its epochs."""
GRID_KEYS = ("full_mode_at", "seeds")
"""``train.*`` keys that say which cells (and seeds) run, not how one trains."""


PROFILE_UNUSED = ("epochs", "checkpoint", "checkpoint_every_min")
"""A cell's settings that a few profiled throughput steps never read: changing them does not reprofile."""


def profile_settings(settings: dict, *, steps: int, warmup_steps: int) -> dict:
    """A cell's settings as its profile runs them (``profile.*``): throughput mode, ``warmup_steps`` then ``steps``
    timed steps, one window each; the settings it never reads left out."""
    kept = {key: value for key, value in settings.items() if key not in PROFILE_UNUSED}
    return {
        **kept,
        "mode": "throughput",
        "timing_warmup_steps": warmup_steps,
        "timed_steps": steps,
        "timing_windows": steps,
    }


def cell_settings(
    cell: Cell,
    *,
    profile: dict,
    variant: dict,
    train: dict,
    cache_root: str,
    local_scratch: str | None,
    micro_batch: int,
) -> dict:
    """One cell's resolved settings (:class:`mammoscale.plan.settings.Settings` keys), from the parts that
    concern it: ``train.*`` (its mode from ``train.full_mode_at``), its variant, its hardware profile and
    its planned ``micro_batch`` (:mod:`mammoscale.plan.sizing`)."""
    shared = {key: value for key, value in train.items() if key not in GRID_KEYS}
    at = {"image_size": cell.image_size, "patch_size": cell.patch_size}
    settings = {
        **shared,
        "mode": "full" if at in train.get("full_mode_at", []) else train["mode"],
        **cell._asdict(),
        "family": variant["family"],
        "attention": variant["attention"],
        "micro_batch": micro_batch,
        "backend": BACKEND_OF_LAUNCHER[profile["launcher"]],
        "device": "cuda" if profile.get("gpus_per_node") else "cpu",
        "peak_tflops": profile.get("peak_tflops"),
        "cache_root": cache_root,
        "local_scratch": local_scratch,
    }
    for key in ("precision", "data_on_device", "device"):
        if key in profile:
            settings[key] = profile[key]
    if settings["mode"] == "full":  # a quality cell times each epoch: a timing knob must not retrain it
        return {key: value for key, value in settings.items() if key not in TIMED}
    return timing_defaults(settings, gpu=bool(profile.get("gpus_per_node")) and settings["device"] != "cpu")


def choose_baseline(variants: dict, requested: str | None) -> str | None:
    """The claims' baseline: ``requested``, else the study's (HF ViT, eager attention) if in the grid,
    else the first non-flash variant; None without one."""
    if requested:
        if requested not in variants:
            raise UserError(f"figures.baseline is {requested!r}, not one of grid.variants ({', '.join(variants)})")
        return requested
    baselines = [name for name, spec in variants.items() if role(spec["attention"]) == "baseline"]
    study = [name for name in baselines if variants[name] == STUDY_BASELINE]
    return (study or baselines or [None])[0]
