"""The study's vision transformers as data: families, sizes, attention kernels, sequence length.

Torch-free, so that a cell can be checked when the Snakefile is parsed; :mod:`mammoscale.train.models`
builds the networks these names describe.

- ``xtransformers``: x-transformers ``ViTransformerWrapper`` + ``Encoder`` (the study's flash model).
  ``flash`` is PyTorch's flash kernel of scaled-dot-product attention, forced; ``cudnn`` and
  ``mem_efficient`` PyTorch's cuDNN and memory-efficient kernels, each forced (CUDA only);
  ``materialised`` the same architecture with the (N x N) score matrix built explicitly.
- ``hf``: Hugging Face ``ViTForImageClassification``: ``eager`` (the study's baseline, materialised),
  ``sdpa`` (PyTorch's kernel) or ``flash_attention_2`` (the flash-attn package, CUDA only).

The kernel that ran is observed, not assumed (:func:`mammoscale.train.models.attention_kernels`); its names,
a record's ``attention_backend``, are here (:data:`BACKEND_OF_OP` ... :func:`backend_pattern`), so that the
metrics schema and the report agree with what training writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mammoscale.errors import UserError


@dataclass(frozen=True)
class Size:
    dim: int
    depth: int
    heads: int

    @property
    def mlp_dim(self) -> int:
        return 4 * self.dim


SIZES = {
    "vit-tiny": Size(dim=192, depth=4, heads=3),
    "vit-small": Size(dim=384, depth=6, heads=6),
    "vit-base": Size(dim=768, depth=12, heads=12),
}
ATTENTIONS = {
    "xtransformers": ("flash", "materialised", "cudnn", "mem_efficient"),
    "hf": ("eager", "sdpa", "flash_attention_2"),
}
FLASH_ATTENTIONS = ("flash", "flash_attention_2", "cudnn", "mem_efficient")
"""The fused kernels a study's flash side is made of: x-transformers' switch (PyTorch's flash kernel), HF's
flash_attention_2 (the flash-attn package), and PyTorch's cuDNN and memory-efficient kernels, each forced."""


@dataclass(frozen=True)
class Kernel:
    """What a forced attention kernel needs, known before any GPU is touched."""

    cuda_only: bool = False
    half_on_cuda: bool = False
    """On a GPU it takes bf16 or fp16 only (bf16 autocast gives it that; ``precision: fp32`` does not)."""


KERNELS = {
    "flash": Kernel(half_on_cuda=True),  # on a CPU, PyTorch's CPU flash kernel, fp32 included
    "cudnn": Kernel(cuda_only=True, half_on_cuda=True),
    "mem_efficient": Kernel(cuda_only=True),
    "flash_attention_2": Kernel(cuda_only=True, half_on_cuda=True),
}
"""The forced kernels' needs; the other attentions run anywhere."""


def cannot_run(attention: str, *, device: str, precision: str) -> str | None:
    """Why ``attention`` cannot run on ``device`` (``cuda`` or ``cpu``) at ``precision``, or None."""
    kernel = KERNELS.get(attention, Kernel())
    if kernel.cuda_only and device != "cuda":
        return f"attention {attention} runs on CUDA GPUs only"
    if kernel.half_on_cuda and device == "cuda" and precision == "fp32":
        return f"attention {attention} takes bf16 or fp16 on a GPU, not fp32"
    return None


# the kernel observed (a record's ``attention_backend``)

BACKEND_OF_OP = {
    "aten::_scaled_dot_product_flash_attention_for_cpu": "sdpa-flash-cpu",
    "aten::_scaled_dot_product_flash_attention": "sdpa-flash",
    "aten::_scaled_dot_product_efficient_attention": "sdpa-mem-efficient",
    "aten::_scaled_dot_product_cudnn_attention": "sdpa-cudnn",
    "aten::_scaled_dot_product_attention_math": "sdpa-math",
    "aten::_scaled_dot_product_fused_attention_overrideable": "sdpa-overrideable",
    "flash_attn::_flash_attn_forward": "flash-attn-2",
}
"""A dispatched operator (its schema name) -> the fused attention kernel it stands for."""
FUSED_BACKENDS = tuple(dict.fromkeys(BACKEND_OF_OP.values()))
UNFUSED_BACKEND = "matmul-softmax"
"""What is seen when no fused attention kernel ran: the scores built by matrix products and a softmax (the
materialised variants, HF eager, and SDPA's math fallback, which decomposes into them)."""
NO_BACKEND = "none observed"
"""Neither a fused kernel nor a softmax ran."""
BACKEND_JOIN = "+"
"""Fused kernels seen in one step are named together, sorted, joined by this: ``sdpa-math+sdpa-mem-efficient``."""


def backend_pattern() -> str:
    """The regular expression of every ``attention_backend`` a record can hold (the metrics schema's ``pattern``)."""
    fused = "|".join(FUSED_BACKENDS)
    return f"^({UNFUSED_BACKEND}|{NO_BACKEND}|({fused})({re.escape(BACKEND_JOIN)}({fused}))*)$"


NUM_CLASSES = 2
CHANNELS = (1, 3)


class ModelError(UserError, ValueError):
    """A model setting that cannot be built: an unknown name, a patch that does not divide the image."""


def check(family: str, attention: str, size: str, image_size: int, patch_size: int, channels: int) -> None:
    """Refuse settings that cannot make a model, with a sentence naming the bad value."""
    if family not in ATTENTIONS:
        raise ModelError(f"unknown model family {family!r}; choose one of {', '.join(ATTENTIONS)}")
    if attention not in ATTENTIONS[family]:
        raise ModelError(
            f"attention {attention!r} is not available for {family}; choose one of {', '.join(ATTENTIONS[family])}"
        )
    if size not in SIZES:
        raise ModelError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    if patch_size <= 0 or image_size % patch_size:
        raise ModelError(f"patch size {patch_size} does not divide image size {image_size}")
    if channels not in CHANNELS:
        raise ModelError(f"channels must be 1 or 3, not {channels}")


def patches(image_size: int, patch_size: int) -> int:
    """Patches of an S x S image: (S / P)^2."""
    return (image_size // patch_size) ** 2


def seq_len(family: str, image_size: int, patch_size: int) -> int:
    """Tokens the encoder attends over: the patches, plus the class token in Hugging Face's ViT."""
    return patches(image_size, patch_size) + (1 if family == "hf" else 0)


def role(attention: str) -> str:
    """``flash`` for a flash kernel, else ``baseline``: the two sides of every speed-up."""
    return "flash" if attention in FLASH_ATTENTIONS else "baseline"
