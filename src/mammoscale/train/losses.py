"""Which loss trains which task, and what its targets look like: the one owner, asked by the loop, the probe, the
benchmarks and the memory measurements.

- one label (``breast-cancer``): two logits, cross-entropy against the class index (int64, ``(B,)``); the
  probability of the positive class is the softmax's second column;
- several labels (``chest-findings``): one logit per label, binary cross-entropy with logits, averaged over
  images and labels (CheXNet's loss, unweighted), against 0/1 floats ``(B, labels)``; each label's probability is
  its sigmoid.

The model returns logits either way (:func:`mammoscale.train.models.build` with ``outputs=task.outputs``); the loss
is computed in fp32 whatever the autocast.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from mammoscale.tasks import Task


def loss(task: Task, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean loss of a micro-batch's ``logits`` against its ``targets``."""
    if task.multilabel:
        return functional.binary_cross_entropy_with_logits(logits.float(), targets.float())
    return functional.cross_entropy(logits.float(), targets)


def probabilities(task: Task, logits: torch.Tensor) -> torch.Tensor:
    """What the validation scores: ``(B,)`` the positive class's probability, or ``(B, labels)`` each label's."""
    if task.multilabel:
        return torch.sigmoid(logits.float())
    return torch.softmax(logits.float(), dim=1)[:, 1]


def random_targets(task: Task, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` targets drawn at random (torch's generator), shaped and typed as ``task``'s: for a step timed or measured
    on random input."""
    if task.multilabel:
        return torch.randint(0, 2, (n, len(task.labels)), device=device).float()
    return torch.randint(0, 2, (n,), device=device)
