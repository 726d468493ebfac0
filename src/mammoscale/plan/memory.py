"""The predicted peak device memory of a cell's training step, before any GPU is touched.

Torch-free: the Snakefile plans every cell's micro-batch with it when it is parsed.
:mod:`mammoscale.train.memory` measures the same quantity exactly (peak bytes of live tensors, or
CUDA's ``max_memory_allocated``); ``bench/memory.py`` compares the two over model sizes, tokens,
attentions, precisions and micro-batches (results in ``bench/README.md``).

Derivation
----------
One optimiser step of AdamW over a model of ``P`` parameters (fp32), ``micro_batch = B`` images
of ``C`` channels and ``S x S`` pixels, as :mod:`mammoscale.train.loop` runs it; for a ViT ``N`` tokens
(patches, plus the class token in Hugging Face's ViT), width ``D``, depth ``L``, ``H`` heads. A family's kind
decides its parameter count and activation terms (:data:`PARAMETERS`, :data:`TERMS`):

- **state**, alive between steps: the weights ``4P`` and AdamW's two moments ``8P``;
- **gradients** ``4P``: from the first backward pass of a step until ``zero_grad`` (with gradient
  accumulation, during every later forward pass too; counted throughout);
- **weight copies** ``2 P_mm`` in bf16: autocast casts each matrix multiplication's weight and bias
  once per forward pass and keeps the copy for the backward pass (``P_mm``: the parameters of the
  linear, patch-projection and convolution layers; layer and batch norms use their fp32 weights). None in fp32.
- **activations** ``B x A``, what the autograd graph keeps for the backward pass at its peak,
  per image::

      A = L (a N D + b H N^2) + c N D + t H N^2 + e C S^2

  ``a N D`` per layer: the residual stream (fp32), the layer norms' inputs, the q/k/v, attention
  output and MLP activations (bf16 or fp32); ``b H N^2`` per layer: the materialised attention
  scores and probabilities kept for the backward pass (bf16 scores + fp32 softmax = 6 bytes an
  element in bf16, 4 in fp32; 0 for fused kernels, which keep only q, k, v, the output and a
  logsumexp); ``t H N^2``: the score-sized temporaries of one layer's backward pass; ``c N D`` and
  ``e C S^2``: the patch embedding, the input image and the head. A CNN (DenseNet-121) has one term::

      A = a F

  ``F``: the elements of every map its forward pass makes (each convolution's, batch norm's, pool's and
  dense layer's concatenation, :func:`mammoscale.plan.densenet.feature_elements`), which the autograd graph
  keeps nearly all of; the input image is under 1 % of ``F`` at every size, so the one coefficient holds it too.
  The coefficients are bytes per element, per family, attention and precision (:data:`COEFFICIENTS`), fitted by
  least squares to exact measurements (``python bench/memory.py --fit``) and interpreted above;
- **optimiser step**: the multi-tensor AdamW (``foreach``, chosen on every device,
  :func:`mammoscale.train.optim.optimizer_for`) makes one fp32 temporary per parameter, ``4P``,
  while the gradients are alive;
- **workspace** (GPU only): an allowance of :data:`WORKSPACE_BYTES` for cuBLAS/cuBLASLt and cuDNN
  workspaces and fused kernels' scratch, plus Horovod's fusion buffer (:data:`BACKEND_BYTES`; DDP's
  gradients are views of its buckets, zeroed in place between steps, so it adds none: freed instead,
  the ``no_sync`` micro-batches of gradient accumulation would make a second ``4P`` beside the buckets,
  measured by ``tests/test_memory.py``).

The step's peak is ``state + gradients + max(weight copies + activations, optimiser step) +
workspace``: small cells peak in the optimiser step, large ones in the backward pass.

What the device holds beyond that (the CUDA context, about 0.5 GiB, outside the allocator; the
caching allocator's fragmentation) is left to the headroom: a cell fits when its predicted peak is
at most ``plan.memory_headroom`` of the device's memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mammoscale.plan import densenet, families
from mammoscale.plan.vit import SIZES, patches
from mammoscale.tasks import BREAST_CANCER

MiB = 1 << 20
GiB = 1 << 30
"""The unit of device memory: GPUs are sold by binary capacity (an "80GB" A100 or H100 holds 80 GiB, 85.9e9
bytes; ``nvidia-smi`` shows 81,920 MiB), so ``device_memory_gib`` and every memory figure and table are in GiB."""
WORKSPACE_BYTES = 256 * MiB
"""GPU allowance for library workspaces and kernel scratch (not measured on a CPU)."""
BACKEND_BYTES = {"none": 0, "ddp": 0, "horovod": 128 * MiB}
"""Device memory a data-parallel backend adds: Horovod's fusion buffer (HOROVOD_FUSION_THRESHOLD's default)."""
STATE_BYTES_PER_PARAMETER = 4 + 8
"""fp32 weights and AdamW's two fp32 moments."""
GRADIENT_BYTES_PER_PARAMETER = 4
OPTIMIZER_STEP_BYTES_PER_PARAMETER = 4
"""The foreach AdamW's temporary (the square root of the second moment, every parameter at once)."""
WEIGHT_COPY_BYTES = {"bf16": 2, "fp32": 0}
LABEL_BYTES = 8
"""A label held on the device beside its tile (int64)."""


def split_bytes(images: int, image_size: int) -> int:
    """Bytes of a training split of ``images`` tiles held on the device: the uint8 tiles and their labels
    (:class:`mammoscale.train.batches.Batches`); every rank holds the whole split."""
    return images * (image_size**2 + LABEL_BYTES)


@dataclass(frozen=True)
class Coefficients:
    """Bytes per element of each activation term (see the module's docstring); a CNN has ``a`` alone."""

    a: float
    """per layer, per token x width (a CNN: per element of the maps its forward pass makes)"""
    b: float
    """per layer, per head x token^2 (materialised attention only)"""
    c: float
    """once, per token x width"""
    t: float
    """once, per head x token^2 (one layer's backward temporaries)"""
    e: float
    """once, per channel x pixel"""


COEFFICIENTS: dict[tuple[str, str, str], Coefficients] = {
    # `python bench/memory.py --fit`: least squares on the vit-tiny and vit-small rows (torch 2.13, x-transformers
    # 2.31, transformers 5.23); the vit-base rows are the held-out check (bench/README.md)
    ("xtransformers", "flash", "bf16"): Coefficients(a=48.29, b=0.0, c=23.3, t=0.0, e=7.4),
    ("xtransformers", "flash", "fp32"): Coefficients(a=73.67, b=0.0, c=21.83, t=0.0, e=10.19),
    ("xtransformers", "materialised", "bf16"): Coefficients(a=50.21, b=5.95, c=-19.15, t=13.97, e=9.74),
    ("xtransformers", "materialised", "fp32"): Coefficients(a=74.18, b=3.98, c=-16.1, t=23.84, e=11.72),
    ("hf", "eager", "bf16"): Coefficients(a=44.86, b=5.88, c=-37.88, t=6.16, e=6.53),
    ("hf", "eager", "fp32"): Coefficients(a=72.62, b=3.88, c=-67.7, t=7.86, e=7.84),
    ("hf", "sdpa", "bf16"): Coefficients(a=40.88, b=0.0, c=12.26, t=0.0, e=3.74),
    ("hf", "sdpa", "fp32"): Coefficients(a=66.1, b=0.0, c=13.17, t=0.0, e=2.23),
    # `python bench/memory.py --fit --families densenet --real-below 0.5`: on the 128 and 224 px rows (torchvision
    # 0.28); the 64 and 512 px rows are the held-out check (bench/README.md)
    ("densenet", "none", "bf16"): Coefficients(a=2.03, b=0.0, c=0.0, t=0.0, e=0.0),
    ("densenet", "none", "fp32"): Coefficients(a=3.91, b=0.0, c=0.0, t=0.0, e=0.0),
}
BORROWED = {"flash_attention_2": "sdpa", "cudnn": "flash", "mem_efficient": "flash"}
"""Attentions that cannot run on a CPU, predicted with a fused kernel's coefficients of the same family (flash-attn's,
cuDNN's and the memory-efficient kernel keep q, k, v, the output and a logsumexp for the backward pass, as the flash
kernel does; their own scratch is in the GPU's workspace allowance until ``bench/memory.py --device cuda`` says)."""


def coefficients(family: str, attention: str, precision: str) -> Coefficients:
    return COEFFICIENTS[(family, BORROWED.get(attention, attention), precision)]


def _vit_parameters(
    family: str, model_size: str, *, image_size: int, patch_size: int, channels: int, outputs: int
) -> tuple[int, int]:
    shape = SIZES[model_size]
    d, depth, n = shape.dim, shape.depth, patches(image_size, patch_size)
    patch_dim = patch_size * patch_size * channels
    head = d * outputs + outputs
    if family == "xtransformers":
        # layer norms with a gain only; q, k, v, out without bias; MLP with biases
        layer_matmul = 4 * d * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
        matmul = (patch_dim * d + d) + depth * layer_matmul + head
        norms = patch_dim + d + depth * 2 * d + d
        return matmul + norms + n * d, matmul
    # Hugging Face: biases everywhere, layer norms with gain and bias, a class token
    layer_matmul = 4 * (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    matmul = (patch_dim * d + d) + depth * layer_matmul + head
    norms = depth * 4 * d + 2 * d
    return matmul + norms + d + (n + 1) * d, matmul


def _cnn_parameters(
    family: str, model_size: str, *, image_size: int, patch_size: None, channels: int, outputs: int
) -> tuple[int, int]:
    return densenet.parameters(model_size, channels=channels, outputs=outputs)


def _vit_terms(
    family: str, model_size: str, *, image_size: int, patch_size: int, channels: int, outputs: int
) -> dict[str, int]:
    shape = SIZES[model_size]
    n, d, h, depth = families.seq_len(family, image_size, patch_size), shape.dim, shape.heads, shape.depth
    return {"a": depth * n * d, "b": depth * h * n * n, "c": n * d, "t": h * n * n, "e": channels * image_size**2}


def _cnn_terms(
    family: str, model_size: str, *, image_size: int, patch_size: None, channels: int, outputs: int
) -> dict[str, int]:
    return {"a": densenet.feature_elements(model_size, image_size=image_size, channels=channels, outputs=outputs)}


PARAMETERS = {"vit": _vit_parameters, "cnn": _cnn_parameters}
TERMS = {"vit": _vit_terms, "cnn": _cnn_terms}
"""A family's kind: its parameter count and its activation terms."""


def parameters(
    family: str,
    model_size: str,
    *,
    image_size: int,
    patch_size: int | None,
    channels: int,
    outputs: int = BREAST_CANCER.outputs,
) -> tuple[int, int]:
    """(all parameters, those of matrix multiplications and convolutions) of the model
    :mod:`mammoscale.train.models` builds."""
    count = PARAMETERS[families.family(family).kind]
    return count(family, model_size, image_size=image_size, patch_size=patch_size, channels=channels, outputs=outputs)


@dataclass(frozen=True)
class Peak:
    """The predicted peak bytes of one training step, by part."""

    state: int
    gradients: int
    weight_copies: int
    activations: int
    optimizer_step: int
    workspace: int

    @property
    def forward_backward(self) -> int:
        """The peak of the forward and backward passes (no workspace)."""
        return self.state + self.gradients + self.weight_copies + self.activations

    @property
    def total(self) -> int:
        return (
            self.state
            + self.gradients
            + max(self.weight_copies + self.activations, self.optimizer_step)
            + (self.workspace)
        )


def activation_terms(
    family: str,
    model_size: str,
    *,
    image_size: int,
    patch_size: int | None,
    channels: int,
    outputs: int = BREAST_CANCER.outputs,
) -> dict[str, int]:
    """The elements each activation coefficient multiplies, per image (see the module's docstring)."""
    terms = TERMS[families.family(family).kind]
    return terms(family, model_size, image_size=image_size, patch_size=patch_size, channels=channels, outputs=outputs)


def step_peak(
    family: str,
    attention: str,
    model_size: str,
    *,
    image_size: int,
    patch_size: int | None,
    channels: int,
    precision: str,
    micro_batch: int,
    device: str = "cuda",
    backend: str = "none",
    outputs: int = BREAST_CANCER.outputs,
) -> Peak:
    """The predicted peak of one training step of ``micro_batch`` images per rank on ``device`` (``cuda``
    adds the workspace allowance and the backend's buffers; ``cpu`` is what a CPU measures)."""
    shape = {"image_size": image_size, "patch_size": patch_size, "channels": channels, "outputs": outputs}
    total, matmul = parameters(family, model_size, **shape)
    k = coefficients(family, attention, precision)
    terms = activation_terms(family, model_size, **shape)
    per_image = sum(getattr(k, name) * elements for name, elements in terms.items())
    on_gpu = device == "cuda"
    return Peak(
        state=STATE_BYTES_PER_PARAMETER * total,
        gradients=GRADIENT_BYTES_PER_PARAMETER * total,
        weight_copies=WEIGHT_COPY_BYTES[precision] * matmul,
        activations=round(micro_batch * per_image),
        optimizer_step=OPTIMIZER_STEP_BYTES_PER_PARAMETER * total,
        workspace=(WORKSPACE_BYTES + BACKEND_BYTES[backend]) if on_gpu else 0,
    )


@dataclass(frozen=True)
class MicroBatch:
    """The micro-batch a cell is planned with, and the peak predicted for it."""

    micro_batch: int
    peak: int
    fits: bool
    """False: even micro-batch 1 is predicted beyond the limit (the cell is predicted out of memory)."""


def divisors(per_rank: int, bound: int) -> list[int]:
    """The micro-batches that make up ``per_rank`` images exactly and are at most ``bound``, largest first."""
    return [m for m in range(min(per_rank, bound), 0, -1) if per_rank % m == 0]


def choose_micro_batch(per_rank: int, bound: int, limit: float | None, peak_of: Callable[[int], int]) -> MicroBatch:
    """The largest micro-batch that divides ``per_rank``, is at most ``bound`` and whose predicted peak
    (``peak_of``) is at most ``limit`` bytes; without a limit (a CPU profile), the largest divisor."""
    candidates = divisors(per_rank, bound)
    for micro in candidates:
        peak = peak_of(micro)
        if limit is None or peak <= limit:
            return MicroBatch(micro, peak, True)
    return MicroBatch(1, peak_of(1), False)
