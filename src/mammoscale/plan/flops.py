"""Analytic floating-point operations of a training step, for achieved TFLOP/s and MFU.

Counted per image, a multiply-add as 2 FLOPs. A family's kind decides the count (:data:`FORWARD`): a CNN's is
its convolutions and classifier (:func:`mammoscale.plan.densenet.forward_flops_per_image`); a ViT's, below, its
matrix multiplications and attention only (layer norms, softmax, GELU and the optimiser are a few percent and left
out, as in the usual MFU accounting of Chowdhery et al. 2022, appendix B). With N tokens, width D, depth L, MLP
width 4D, patch P, C channels:

    patch embedding      2 * N * (P*P*C) * D
    per encoder layer    2 * N * D * 3D       q, k, v projections
                       + 2 * N * N * D        scores  Q K^T
                       + 2 * N * N * D        weighted values  A V
                       + 2 * N * D * D        output projection
                       + 2 * N * D * 4D * 2   MLP (two matrices)
                       = 24 * N * D^2 + 4 * N^2 * D
    head                 2 * D * outputs

Training costs 3x the forward pass (the backward pass computes gradients with respect to both
activations and weights, two matmuls or convolutions per forward one). Recomputation inside a fused attention
kernel's backward is not counted: MFU measures useful work, whatever the kernel.
"""

from __future__ import annotations

from mammoscale.plan import densenet, families
from mammoscale.plan.vit import SIZES
from mammoscale.tasks import BREAST_CANCER

TRAIN_FACTOR = 3


def _vit(family: str, size: str, *, image_size: int, patch_size: int, channels: int, outputs: int) -> int:
    shape = SIZES[size]
    n, d = families.seq_len(family, image_size, patch_size), shape.dim
    embedding = 2 * n * patch_size * patch_size * channels * d
    layer = 24 * n * d * d + 4 * n * n * d
    head = 2 * d * outputs
    return embedding + shape.depth * layer + head


def _cnn(family: str, size: str, *, image_size: int, patch_size: None, channels: int, outputs: int) -> int:
    return densenet.forward_flops_per_image(size, image_size=image_size, channels=channels, outputs=outputs)


FORWARD = {"vit": _vit, "cnn": _cnn}
"""The forward FLOPs per image of a family's kind."""


def forward_flops_per_image(
    family: str,
    size: str,
    *,
    image_size: int,
    patch_size: int | None,
    channels: int,
    outputs: int = BREAST_CANCER.outputs,
) -> int:
    count = FORWARD[families.family(family).kind]
    return count(family, size, image_size=image_size, patch_size=patch_size, channels=channels, outputs=outputs)


def train_flops_per_image(
    family: str,
    size: str,
    *,
    image_size: int,
    patch_size: int | None,
    channels: int,
    outputs: int = BREAST_CANCER.outputs,
) -> int:
    shape = {"image_size": image_size, "patch_size": patch_size, "channels": channels, "outputs": outputs}
    return TRAIN_FACTOR * forward_flops_per_image(family, size, **shape)


def achieved_tflops(flops_per_image: int, images_per_s: float) -> float:
    return flops_per_image * images_per_s / 1e12


def mfu(achieved: float, peak_tflops_per_device: float | None, devices: int) -> float | None:
    """Model FLOPs utilisation: achieved over the devices' combined peak; None without a peak."""
    if not peak_tflops_per_device:
        return None
    return achieved / (peak_tflops_per_device * devices)
