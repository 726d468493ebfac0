"""The variant catalogue's model families, and the grid axes each has.

Torch-free: the plan checks and sizes every cell with it when the Snakefile is parsed;
:mod:`mammoscale.train.models` builds what it names.

- ``xtransformers`` and ``hf``: vision transformers (:mod:`mammoscale.plan.vit`): a cell is an image size
  *and* a patch size, and an attention kernel is part of the variant.
- ``densenet``: torchvision's DenseNet-121 (:mod:`mammoscale.plan.densenet`), the network CheXNet trained: a
  cell is an image size alone (a CNN has no patch size and no attention kernel).

A family declares its axes (:attr:`Family.axes`); the grid, the plan, the memory model, the FLOPs, the
figures and the report ask it rather than the family's name. A cell of a family without a patch axis has
``patch_size`` None, and its name no ``_p<P>`` (:func:`mammoscale.files.cell_label`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mammoscale.plan import densenet, vit
from mammoscale.plan.vit import ModelError

NO_ATTENTION = "none"
"""A family without attention (a CNN): its variants' ``attention``."""
IMAGE_AXES = ("image_size",)
VIT_AXES = ("image_size", "patch_size")


@dataclass(frozen=True)
class Family:
    name: str
    kind: str
    """``vit`` or ``cnn``."""
    attentions: tuple[str, ...]
    sizes: tuple[str, ...]
    axes: tuple[str, ...]
    """The grid axes a cell of this family has: ``image_size`` always, ``patch_size`` for a ViT."""

    @property
    def has_patches(self) -> bool:
        return "patch_size" in self.axes

    @property
    def has_attention(self) -> bool:
        return self.attentions != (NO_ATTENTION,)


FAMILIES = {
    "xtransformers": Family("xtransformers", "vit", vit.ATTENTIONS["xtransformers"], tuple(vit.SIZES), VIT_AXES),
    "hf": Family("hf", "vit", vit.ATTENTIONS["hf"], tuple(vit.SIZES), VIT_AXES),
    "densenet": Family("densenet", "cnn", (NO_ATTENTION,), tuple(densenet.SIZES), IMAGE_AXES),
}
ATTENTIONS = tuple(dict.fromkeys(a for f in FAMILIES.values() for a in f.attentions))
"""Every attention a variant can name, in catalogue order (the config schema's enum)."""


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelError(f"unknown model family {name!r}; choose one of {', '.join(FAMILIES)}") from None


def has_patches(name: str) -> bool:
    return family(name).has_patches


def variant_attention(variant: dict) -> str:
    """A variant's attention: its own, or ``none`` for a family without attention."""
    return variant.get("attention") or (NO_ATTENTION if not family(variant["family"]).has_attention else "")


def model_size(variant: dict, train_model_size: str) -> str:
    """The size a variant trains: its own ``model_size``, else ``train.model_size`` where the family has that
    size (the ViTs), else the family's only size (DenseNet-121)."""
    known = family(variant["family"]).sizes
    if variant.get("model_size"):
        return variant["model_size"]
    return train_model_size if train_model_size in known else known[0]


def check_variant(name: str, variant: dict) -> None:
    """A ``grid.variants`` entry names a family, an attention it has and a size it has (one line otherwise)."""
    where = f"grid.variants.{name}"
    fam = family(variant["family"])
    attention = variant.get("attention")
    if not fam.has_attention and attention not in (None, NO_ATTENTION):
        raise ModelError(f"{where}: family {fam.name} has no attention: leave attention out (not {attention!r})")
    if fam.has_attention and attention not in fam.attentions:
        raise ModelError(
            f"{where}: family {fam.name} needs an attention, one of {', '.join(fam.attentions)}"
            + (f" (not {attention!r})" if attention else "")
        )
    size = variant.get("model_size")
    if size is not None and size not in fam.sizes:
        raise ModelError(f"{where}: model_size {size!r} is not a {fam.name} size ({', '.join(fam.sizes)})")
    if variant.get("weights") and fam.kind != "cnn":
        raise ModelError(f"{where}: weights (a pretrained file) are for the CNN family only, not {fam.name}")


CHECKED = ("family", "attention", "model_size", "image_size", "patch_size")
"""The settings :func:`check` takes first, in its order (then ``channels``)."""


def check(family_name: str, attention: str, size: str, image_size: int, patch_size: int | None, channels: int) -> None:
    """Refuse settings that cannot make a model, with a sentence naming the bad value."""
    fam = family(family_name)
    if fam.kind == "vit":
        if patch_size is None:
            raise ModelError(f"family {fam.name} is a vision transformer: it needs a patch size")
        vit.check(family_name, attention, size, image_size, patch_size, channels)
        return
    if patch_size is not None:
        raise ModelError(f"family {fam.name} has no patch size (not {patch_size})")
    if attention != NO_ATTENTION:
        raise ModelError(f"family {fam.name} has no attention (not {attention!r})")
    if size not in fam.sizes:
        raise ModelError(f"unknown {fam.name} size {size!r}; choose one of {', '.join(fam.sizes)}")
    densenet.check(size, image_size)
    if channels not in vit.CHANNELS:
        raise ModelError(f"channels must be 1 or 3, not {channels}")


def seq_len(family_name: str, image_size: int, patch_size: int | None) -> int | None:
    """Tokens a ViT's encoder attends over; None for a family without tokens."""
    if not has_patches(family_name):
        return None
    return vit.seq_len(family_name, image_size, patch_size)


def role(attention: str) -> str:
    """``flash`` for a flash kernel, ``baseline`` for a materialised one (the two sides of every speed-up), ``none``
    for a family without attention (in no speed-up)."""
    if attention == NO_ATTENTION:
        return NO_ATTENTION
    return vit.role(attention)
