"""What a study predicts, and from which data: a task is a property of the data source.

Torch-free, so that the plan, the cache and the report ask the same owner as training does.

- ``breast-cancer`` (the RSNA layout, real or synthetic): one binary label per breast, ``cancer``; the
  classifier has two logits and is trained with cross-entropy.
- ``chest-findings`` (the NIH ChestX-ray14 layout, real or synthetic): fourteen findings per image, any
  number of them at once (none for more than half the images); fourteen sigmoid outputs trained with
  binary cross-entropy, scored by each finding's AUROC and their mean, as CheXNet (Rajpurkar et al. 2017,
  arXiv 1711.05225) scored them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mammoscale.errors import UserError

FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
"""ChestX-ray14's findings, spelled as ``Data_Entry_2017.csv``'s Finding Labels spell them, in CheXNet's order."""
NO_FINDING = "No Finding"
"""What Finding Labels holds for an image without any of the fourteen."""


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]
    """The label columns of the tile index: ``label`` (binary) or one 0/1 column per finding (multi-label)."""
    unit: str
    """What one example is: a ``breast`` (CC and MLO tiled together) or an ``image``."""

    @property
    def multilabel(self) -> bool:
        return len(self.labels) > 1

    @property
    def outputs(self) -> int:
        """The classifier's outputs: two logits (cross-entropy) for a binary task, one sigmoid per label otherwise."""
        return len(self.labels) if self.multilabel else 2


BREAST_CANCER = Task("breast-cancer", ("label",), unit="breast")
CHEST_FINDINGS = Task("chest-findings", FINDINGS, unit="image")
TASKS = {task.name: task for task in (BREAST_CANCER, CHEST_FINDINGS)}


@dataclass(frozen=True)
class Source:
    """A value of ``data.source``: the layout its files follow, whether the workflow generates them, its task."""

    name: str
    layout: str
    """``rsna`` (``train.csv`` + ``train_images/<patient>/<image>.dcm``) or ``chestxray14`` (NIH's)."""
    synthetic: bool
    task: Task


SOURCES = {
    source.name: source
    for source in (
        Source("synthetic", "rsna", True, BREAST_CANCER),
        Source("rsna", "rsna", False, BREAST_CANCER),
        Source("synthetic-chestxray14", "chestxray14", True, CHEST_FINDINGS),
        Source("chestxray14", "chestxray14", False, CHEST_FINDINGS),
    )
}


def source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise UserError(f"data.source {name!r} is not one of {', '.join(SOURCES)}") from None


def task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"task {name!r} is not one of {', '.join(TASKS)}") from None
