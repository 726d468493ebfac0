"""What a step optimises with: AdamW, its learning-rate schedule, and the precision of the forward pass."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn


def learning_rate(step: int, *, total: int, warmup: int, base: float, min_fraction: float, scale: float) -> float:
    """Linear warm-up from ~0 to ``base * scale`` over ``warmup`` steps, then cosine down to ``min_fraction`` of it.

    ``scale`` is the cell's :attr:`~mammoscale.plan.settings.Settings.lr_scale` (``train.lr_scaling``): 1 with a
    constant global batch, whose averaged gradient is the same on any number of ranks; the global batch's ratio to
    the batch ``lr`` is for (or its square root) where the batch grows with the ranks (``train.batch_per_rank``), the
    larger rate reached over the warm-up as Goyal et al. 2017 do.
    """
    peak = base * scale
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def optimizer_for(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms, biases or embeddings' 1-D vectors).

    The multi-tensor (``foreach``) implementation on every device: CUDA's default, chosen on the CPU too, so
    that a step's memory (its temporaries span every parameter) is the same wherever it is measured.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.999),
        foreach=True,
    )


def autocast_for(precision: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """The forward pass's precision, chosen once: a factory of fresh contexts (as timm's ``amp_autocast``).

    ``bf16``: ``torch.autocast`` to bfloat16 on ``device``; ``fp32``: nothing.
    """
    if precision == "bf16":
        return functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext
