"""DenseNet-121 as data: its parameters, forward FLOPs and the feature maps a training step makes, per image.

Torch-free: the plan sizes a CNN cell with it when the Snakefile is parsed; :mod:`mammoscale.train.models` builds
the same network with torchvision's ``densenet121`` (Huang et al. 2017, arXiv 1608.06993), the network CheXNet
trained (Rajpurkar et al. 2017). Its layers, in torchvision's order, for ``C`` input channels and ``S x S`` pixels:

- stem: a 7x7 convolution of stride 2 to ``init_features`` maps, batch norm, ReLU, a 3x3 max pool of stride 2;
- four dense blocks of ``blocks`` layers; a layer concatenates every map before it (``c`` channels), then batch
  norm, ReLU, a 1x1 convolution to ``bn_size x growth`` channels, batch norm, ReLU, a 3x3 convolution to ``growth``
  new channels; a block ends by concatenating its input and every new map;
- between blocks a transition: batch norm, ReLU, a 1x1 convolution to ``compression x c`` channels, a 2x2 average
  pool of stride 2;
- batch norm, ReLU, global average pooling and the classifier, ``Linear(1024, outputs)``.

Convolutions have no bias; ReLUs work in place. FLOPs count a multiply-add as 2, convolutions and the classifier
only (batch norm, pooling and ReLU are about 1 % and left out, as :mod:`mammoscale.plan.flops` leaves out layer
norms): what ``torch.utils.flop_counter.FlopCounterMode`` counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mammoscale.plan.vit import ModelError


@dataclass(frozen=True)
class Architecture:
    growth: int
    """New channels each dense layer adds."""
    blocks: tuple[int, ...]
    """Dense layers per block."""
    init_features: int
    """Channels of the stem's convolution."""
    bn_size: int
    """The bottleneck's width, in multiples of ``growth``."""
    compression: float
    """A transition keeps this share of its input channels."""


SIZES = {"densenet-121": Architecture(growth=32, blocks=(6, 12, 24, 16), init_features=64, bn_size=4, compression=0.5)}


@dataclass(frozen=True)
class Op:
    """One operator of the forward pass that makes a new map: what its parameters, FLOPs and memory depend on."""

    kind: str
    """``conv``, ``norm``, ``pool``, ``cat`` (a dense layer's concatenation) or ``linear`` (the classifier)."""
    in_channels: int
    out_channels: int
    kernel: int
    """A convolution's kernel side (0 for other operators)."""
    side: int
    """The side of the map it makes (1 for the classifier)."""

    @property
    def elements(self) -> int:
        return self.out_channels * self.side * self.side


def architecture(size: str) -> Architecture:
    try:
        return SIZES[size]
    except KeyError:
        raise ModelError(f"unknown DenseNet size {size!r}; choose one of {', '.join(SIZES)}") from None


def sides(image_size: int) -> tuple[int, ...]:
    """The side of the stem's convolution, then of each dense block's maps (the stem's pool, then each transition's)."""
    conv0 = (image_size - 1) // 2 + 1  # 7x7, stride 2, padding 3
    pooled = (conv0 - 1) // 2 + 1  # 3x3, stride 2, padding 1
    return conv0, pooled, pooled // 2, pooled // 4, pooled // 8


MIN_LAST_SIDE = 2
"""The last dense block's least side: a batch norm in training needs more than one value a channel, at micro-batch 1
too."""


def min_image_size() -> int:
    """The smallest image whose last dense block is :data:`MIN_LAST_SIDE` pixels a side."""
    return next(s for s in range(1, 1024) if sides(s)[-1] >= MIN_LAST_SIDE)


def check(size: str, image_size: int) -> None:
    """Refuse a size this catalogue lacks, or an image too small for the network, with a sentence."""
    architecture(size)
    last = sides(image_size)[-1]
    if last < MIN_LAST_SIDE:
        raise ModelError(
            f"image size {image_size} is too small for {size}: its last dense block would be {last}x{last} pixels, "
            f"and its batch norms need more than one value a channel; use at least {min_image_size()}"
        )


def ops(size: str, *, image_size: int, channels: int, outputs: int) -> Iterator[Op]:
    """The forward pass's operators that make new maps, in order (ReLUs work in place and make none)."""
    check(size, image_size)
    arch = architecture(size)
    conv0, *block_sides = sides(image_size)
    c = arch.init_features
    yield Op("conv", channels, c, 7, conv0)
    yield Op("norm", c, c, 0, conv0)
    yield Op("pool", c, c, 0, block_sides[0])
    bottleneck = arch.bn_size * arch.growth
    for index, (layers, side) in enumerate(zip(arch.blocks, block_sides)):
        for _ in range(layers):
            yield Op("cat", c, c, 0, side)
            yield Op("norm", c, c, 0, side)
            yield Op("conv", c, bottleneck, 1, side)
            yield Op("norm", bottleneck, bottleneck, 0, side)
            yield Op("conv", bottleneck, arch.growth, 3, side)
            c += arch.growth
        yield Op("cat", c, c, 0, side)
        if index < len(arch.blocks) - 1:
            kept = int(c * arch.compression)
            yield Op("norm", c, c, 0, side)
            yield Op("conv", c, kept, 1, side)
            yield Op("pool", kept, kept, 0, side // 2)
            c = kept
    yield Op("norm", c, c, 0, block_sides[-1])
    yield Op("linear", c, outputs, 0, 1)


def parameters(size: str, *, channels: int, outputs: int) -> tuple[int, int]:
    """(all parameters, those of convolutions and the classifier: what bf16 autocast copies) of the model
    :mod:`mammoscale.train.models` builds. The image size changes none; any valid one will do."""
    total = matmul = 0
    for op in ops(size, image_size=min_image_size(), channels=channels, outputs=outputs):
        if op.kind == "conv":
            weights = op.in_channels * op.out_channels * op.kernel * op.kernel
            total, matmul = total + weights, matmul + weights
        elif op.kind == "linear":
            weights = op.in_channels * op.out_channels + op.out_channels
            total, matmul = total + weights, matmul + weights
        elif op.kind == "norm":
            total += 2 * op.out_channels  # gain and bias (the running statistics are buffers)
    return total, matmul


def forward_flops_per_image(size: str, *, image_size: int, channels: int, outputs: int) -> int:
    """Convolutions (2 x k² x in x out a pixel of the map made) and the classifier (2 x in x out)."""
    flops = 0
    for op in ops(size, image_size=image_size, channels=channels, outputs=outputs):
        if op.kind in ("conv", "linear"):
            flops += 2 * op.in_channels * max(op.kernel, 1) ** 2 * op.elements
    return flops


def feature_elements(size: str, *, image_size: int, channels: int, outputs: int) -> int:
    """Elements of every map the forward pass makes, per image (:func:`ops`): what the memory model's activation
    term counts for a CNN (:mod:`mammoscale.plan.memory`)."""
    return sum(op.elements for op in ops(size, image_size=image_size, channels=channels, outputs=outputs))
