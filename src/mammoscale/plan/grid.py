"""The study's grid as data: which cells exist, and each cell's own settings.

A cell is (hardware, variant, image size, patch size); a variant whose family has no patch axis (a CNN,
:mod:`mammoscale.plan.families`) has one cell per image size, its patch size None. Its settings are resolved here
from the config's parts that concern it alone: its hardware profile, its variant, ``train.*`` and the
cache's location. The Snakefile passes them to the training rule as params, so changing one
hardware profile, say, reruns that hardware's cells and no others.

A patch size that does not divide an image size makes no cell (:func:`cells` leaves it out and
:func:`missing_cells` says which), rather than a cell that can only fail.
"""

from __future__ import annotations

from typing import NamedTuple

from mammoscale import files
from mammoscale.errors import UserError
from mammoscale.plan import families
from mammoscale.plan.families import role
from mammoscale.plan.launch import BACKEND_OF_LAUNCHER, ranks
from mammoscale.plan.settings import timing_defaults, unscaled_as_before
from mammoscale.tasks import BREAST_CANCER

STUDY_BASELINE = {"family": "hf", "attention": "eager"}
"""The published study's baseline: Hugging Face's ViT with eager (materialised) attention."""


class Cell(NamedTuple):
    hardware: str
    variant: str
    image_size: int
    patch_size: int | None
    """None for a family without patches (:mod:`mammoscale.plan.families`)."""

    @property
    def name(self) -> str:
        """``hardware/variant/img<S>_p<P>``: its run directory under ``results/runs``, its log's name."""
        return files.cell_name(*self)

    @property
    def label(self) -> str:
        """``img<S>_p<P>`` (``img<S>`` without a patch size): its image and patch size."""
        return files.cell_label(self.image_size, self.patch_size)

    def run_dir(self, runs_root=files.RUNS):
        return files.run_dir(*self, runs_root=runs_root)


def patch_axis(variant: dict, patch_sizes) -> list[int | None]:
    """The patch sizes a variant's cells take: the grid's for a ViT, none (one None) for a family without patches."""
    return sorted(patch_sizes) if families.has_patches(variant["family"]) else [None]


def cells(image_sizes, patch_sizes, variants: dict, hardware) -> list[Cell]:
    """Every (hardware, variant, image size, patch size) to run, patches that divide the size only; ``variants``:
    name -> spec (its family says whether it has a patch axis)."""
    return [
        Cell(hw, name, size, patch)
        for hw in hardware
        for name, spec in variants.items()
        for size in sorted(image_sizes)
        for patch in patch_axis(spec, patch_sizes)
        if patch is None or size % patch == 0
    ]


def with_extra_cells(product: list[Cell], extra: list[dict], *, image_sizes, variants, profiles: dict) -> list[Cell]:
    """``product`` and then ``grid.extra_cells`` (cells outside the product, e.g. Figure 2's reference
    cell on every server), each checked, none twice."""
    result = list(product)
    for spec in extra:
        cell = Cell(spec["hardware"], spec["variant"], spec["image_size"], spec.get("patch_size"))
        where = f"grid.extra_cells: {cell.name}"
        if cell.hardware not in profiles:
            raise UserError(f"{where}: no hardware profile {cell.hardware!r} ({', '.join(profiles)})")
        if cell.variant not in variants:
            raise UserError(f"{where}: no variant {cell.variant!r} in grid.variants ({', '.join(variants)})")
        if cell.image_size not in image_sizes:
            raise UserError(f"{where}: image size {cell.image_size} is not in grid.image_sizes, so it has no cache")
        check_patch(cell, variants[cell.variant], where)
        if cell not in result:
            result.append(cell)
    return result


def check_patch(cell: Cell, variant: dict, where: str) -> None:
    """A cell has a patch size exactly when its variant's family has a patch axis, and that size divides its image."""
    check_axis(cell, variant, where)
    if cell.patch_size is not None and cell.image_size % cell.patch_size:
        raise UserError(f"{where}: patch size {cell.patch_size} does not divide {cell.image_size}")


def check_axis(cell: Cell, variant: dict, where: str, *, unset: str = "leave patch_size out") -> None:
    """A cell has a patch size exactly when its variant's family has a patch axis; ``unset``: how the user takes a
    patch size away where ``where`` names it."""
    family = variant["family"]
    if families.has_patches(family) and cell.patch_size is None:
        raise UserError(f"{where}: variant {cell.variant} ({family}) is a vision transformer: give its patch_size")
    if not families.has_patches(family) and cell.patch_size is not None:
        raise UserError(
            f"{where}: variant {cell.variant} ({family}) has no patch size: {unset} (not {cell.patch_size})"
        )


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
RESOLVED_KEYS = ("batch_per_rank",)
"""``train.*`` keys a cell's settings hold resolved, in other keys (:func:`batch_of`)."""


def batch_of(train: dict, profile: dict) -> dict:
    """A cell's ``global_batch``: ``train.global_batch`` on every profile (strong scaling), or ``train.batch_per_rank``
    x the profile's ranks (the global batch grows with the workers, CheXNet's recipe); and the ``lr_reference_batch``
    its learning rate is scaled against (``train.lr_scaling``): ``train.lr_reference_batch``, else ``batch_per_rank``,
    else ``global_batch``; None when nothing is scaled, so that it reruns no cell."""
    per_rank = train.get("batch_per_rank")
    reference = train.get("lr_reference_batch") or per_rank or train["global_batch"]
    return {
        "global_batch": train["global_batch"] if per_rank is None else per_rank * ranks(profile),
        "lr_reference_batch": None if train.get("lr_scaling", "none") == "none" else reference,
    }


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
    task: str = BREAST_CANCER.name,
) -> dict:
    """One cell's resolved settings (:class:`mammoscale.plan.settings.Settings` keys), from the parts that
    concern it: ``train.*`` (its mode from ``train.full_mode_at``, its global batch :func:`batch_of`'s), its variant,
    its hardware profile, its data source's ``task`` (:mod:`mammoscale.tasks`) and its planned ``micro_batch``
    (:mod:`mammoscale.plan.sizing`)."""
    shared = {key: value for key, value in train.items() if key not in GRID_KEYS + RESOLVED_KEYS}
    settings = {
        **shared,
        **batch_of(train, profile),
        "mode": "full" if full_mode(cell, train.get("full_mode_at", [])) else train["mode"],
        **cell._asdict(),
        "family": variant["family"],
        "attention": families.variant_attention(variant),
        "model_size": families.model_size(variant, train["model_size"]),
        **({} if task == BREAST_CANCER.name else {"task": task}),  # the default: a mammography cell's params as before
        "micro_batch": micro_batch,
        "backend": BACKEND_OF_LAUNCHER[profile["launcher"]],
        "device": "cuda" if profile.get("gpus_per_node") else "cpu",
        "peak_tflops": profile.get("peak_tflops"),
        "cache_root": cache_root,
        "local_scratch": local_scratch,
    }
    settings = unscaled_as_before(settings)
    if variant.get("weights"):
        settings["weights"] = variant["weights"]
    for key in ("precision", "data_on_device", "device"):
        if key in profile:
            settings[key] = profile[key]
    if settings["mode"] == "full":  # a quality cell times each epoch: a timing knob must not retrain it
        return {key: value for key, value in settings.items() if key not in TIMED}
    return timing_defaults(settings, gpu=bool(profile.get("gpus_per_node")) and settings["device"] != "cpu")


def full_mode(cell: Cell, full_mode_at: list[dict]) -> bool:
    """Whether ``train.full_mode_at`` names the cell's place: an entry names a cell when they agree on every axis
    both have (a CNN's cell has no patch size, so ``{image_size: 384, patch_size: 32}`` names the CNN's 384 cell too;
    an entry without ``patch_size`` names every cell of its image size)."""
    return any(
        at["image_size"] == cell.image_size
        and None in (at.get("patch_size"), cell.patch_size)
        or at == {"image_size": cell.image_size, "patch_size": cell.patch_size}
        for at in full_mode_at
    )


def choose_baseline(variants: dict, requested: str | None) -> str | None:
    """The claims' baseline: ``requested``, else the study's (HF ViT, eager attention) if in the grid,
    else the first variant with a materialised attention; None without one. A variant without attention (a CNN)
    is never one: a speed-up is flash over materialised attention."""
    baselines = [name for name, spec in variants.items() if role(families.variant_attention(spec)) == "baseline"]
    if requested:
        if requested not in variants:
            raise UserError(f"figures.baseline is {requested!r}, not one of grid.variants ({', '.join(variants)})")
        if requested not in baselines:
            spec = variants[requested]
            attention = families.variant_attention(spec)
            what = (
                f"without attention (family {spec['family']})"
                if role(attention) == families.NO_ATTENTION
                else f"with a flash attention ({attention})"
            )
            raise UserError(
                f"figures.baseline is {requested!r}, a variant {what}: the baseline of a speed-up has a materialised "
                f"attention; choose one of {', '.join(baselines) or 'none in grid.variants'}, or null"
            )
        return requested
    study = [name for name in baselines if variants[name] == STUDY_BASELINE]
    return (study or baselines or [None])[0]
