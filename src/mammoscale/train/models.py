"""The study's vision transformers, built from settings, and a record of the attention kernel that ran.

The catalogue (families, sizes, attentions) is :mod:`mammoscale.plan.vit`; this module builds it.
Each family has a switch that changes only the attention kernel:

- ``xtransformers``: x-transformers ``ViTransformerWrapper`` + ``Encoder`` (the study's flash model).
  ``attention="flash"`` sets ``attn_flash=True`` (PyTorch scaled-dot-product attention, its flash
  kernel forced); ``"cudnn"`` and ``"mem_efficient"`` force PyTorch's cuDNN and memory-efficient
  kernels the same way; ``"materialised"`` the same architecture and weights with the (N x N)
  score matrix built explicitly. Comparing them isolates the kernel.
- ``hf``: Hugging Face ``ViTForImageClassification`` from a ``ViTConfig`` (no download).
  ``"eager"`` is the study's baseline (materialised attention); ``"sdpa"`` PyTorch's kernel;
  ``"flash_attention_2"`` the flash-attn package's kernel (CUDA only, where installed).

Which kernel actually ran is observed, not assumed: :func:`attention_kernels` records the operators
dispatched during a real training step (a ``TorchDispatchMode``, the mechanism of torch's own
``FlopCounterMode``). Each forced kernel is enforced with ``torch.nn.attention.sdpa_kernel``, so a
shape, dtype or device it cannot take fails loudly instead of silently falling back to another kernel;
the plan refuses beforehand what it can know (:func:`mammoscale.plan.vit.cannot_run`).
"""

from __future__ import annotations

import contextlib
import importlib.util

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mammoscale.errors import UserError
from mammoscale.plan.vit import (
    BACKEND_JOIN,
    BACKEND_OF_OP,
    NO_BACKEND,
    NUM_CLASSES,
    SIZES,
    UNFUSED_BACKEND,
    Size,
    check,
)

REFUSALS = ("No available kernel", "No viable backend for scaled_dot_product_attention")
"""How torch says that none of the SDPA kernels a context allows can take the input (CUDA; CPU)."""
SOFTMAX_OPS = ("aten::_softmax", "aten::softmax", "aten::_safe_softmax")
SDPA_SWITCHES = {"flash": "enable_flash", "cudnn": "enable_cudnn", "mem_efficient": "enable_mem_efficient"}
"""The x-transformers attentions that force one of PyTorch's scaled-dot-product kernels, and its switch."""


def sdpa_only(attention: str) -> dict:
    """The SDPA kernels an x-transformers attention may run: its own alone (``flash`` on a CPU: its CPU flash kernel).

    x-transformers enters its own ``sdpa_kernel`` context around every attention call, which replaces any context
    around the model; so the choice is the model's own (``attn_attend_sdp_kwargs``), and a shape, dtype or device the
    kernel cannot take stops the cell instead of running another kernel."""
    switches = ("enable_flash", "enable_math", "enable_mem_efficient", "enable_cudnn")
    return {switch: switch == SDPA_SWITCHES[attention] for switch in switches}


class KernelUnavailable(UserError, RuntimeError):
    """The requested attention kernel cannot run here (no GPU, package missing): the cell is skipped."""


def build(family: str, attention: str, size: str, *, image_size: int, patch_size: int, channels: int) -> nn.Module:
    """A freshly initialised classifier taking (B, channels, S, S) floats and returning (B, 2) logits."""
    check(family, attention, size, image_size, patch_size, channels)
    shape = SIZES[size]
    if family == "xtransformers":
        from x_transformers import Encoder, ViTransformerWrapper

        forced = attention in SDPA_SWITCHES
        flash = {"attn_flash": True, "attn_attend_sdp_kwargs": sdpa_only(attention)} if forced else {}
        encoder = Encoder(dim=shape.dim, depth=shape.depth, heads=shape.heads, **flash)
        return ViTransformerWrapper(
            image_size=image_size,
            patch_size=patch_size,
            channels=channels,
            num_classes=NUM_CLASSES,
            attn_layers=encoder,
        )
    return _HuggingFaceViT(attention, shape, image_size=image_size, patch_size=patch_size, channels=channels)


class _HuggingFaceViT(nn.Module):
    """``ViTForImageClassification`` returning logits, so both families share one call signature."""

    def __init__(self, attention: str, shape: Size, *, image_size: int, patch_size: int, channels: int):
        super().__init__()
        if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise KernelUnavailable(
                "attention flash_attention_2 needs the flash-attn package: on a CUDA machine, make flash-attn "
                "(tools/install-flash-attn; docs/gpu-cluster.md)"
            )
        from transformers import ViTConfig, ViTForImageClassification
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        config = ViTConfig(
            hidden_size=shape.dim,
            num_hidden_layers=shape.depth,
            num_attention_heads=shape.heads,
            intermediate_size=shape.mlp_dim,
            image_size=image_size,
            patch_size=patch_size,
            num_channels=channels,
            num_labels=NUM_CLASSES,
        )
        self.vit = ViTForImageClassification._from_config(config, attn_implementation=attention)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=images).logits


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def kernel_context(attention: str, device: torch.device):
    """The context of every forward and backward: refuses ``flash_attention_2`` off CUDA before any work.

    The x-transformers kernels are forced by the model itself (:func:`sdpa_only`), not by a context
    here, which x-transformers would replace.
    """
    if attention == "flash_attention_2" and device.type != "cuda":
        raise KernelUnavailable("attention flash_attention_2 runs on CUDA only")
    return contextlib.nullcontext()


def kernel_refused(error: BaseException) -> bool:
    """SDPA's refusal to run under the kernels it was limited to (the forced flash kernel cannot take the input)."""
    text = str(error)
    return isinstance(error, RuntimeError) and any(sign in text for sign in REFUSALS)


def kernels_in(op_names) -> str:
    """Name the attention kernel(s) among dispatched operator names (the names: :mod:`mammoscale.plan.vit`): the
    fused ones, else ``matmul-softmax`` when a softmax ran, else ``none observed``."""
    seen = sorted({BACKEND_OF_OP[name] for name in op_names if name in BACKEND_OF_OP})
    if seen:
        return BACKEND_JOIN.join(seen)
    return UNFUSED_BACKEND if any(name in SOFTMAX_OPS for name in op_names) else NO_BACKEND


@contextlib.contextmanager
def attention_kernels(record: dict):
    """Watch the operators the enclosed code dispatches; store the attention kernel(s) in ``record["kernel"]``."""
    watcher = _OperatorNames()
    with watcher:
        yield
    record["kernel"] = kernels_in(watcher.names)


class _OperatorNames(TorchDispatchMode):
    """Collects the name of every ATen (or custom) operator dispatched while active."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func._schema.name)
        return func(*args, **(kwargs or {}))
