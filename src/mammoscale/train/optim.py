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
    """Linear warm-up from ~0 to ``base * scale`` over ``warmup`` steps, then cosine down to ``min_fraction``.

    ``scale`` is the world size when ``lr_scale_with_world_size`` is set (Goyal et al. 2017: the
    rate grows with the number of workers, reached gradually); 1 otherwise. With a constant global
    batch, as this study keeps, the averaged gradient does not change with the world size, so the
    default is not to scale.
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
