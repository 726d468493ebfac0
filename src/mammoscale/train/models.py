"""The study's models, built from settings, and a record of the attention kernel that ran.

The catalogue is :mod:`mammoscale.plan.families` (the ViTs' sizes and attentions: :mod:`mammoscale.plan.vit`;
DenseNet-121's architecture: :mod:`mammoscale.plan.densenet`); this module builds it. Every model returns logits,
one per output of the cell's task (:attr:`mammoscale.tasks.Task.outputs`); the loss applies softmax or sigmoid.

- ``densenet``: torchvision's DenseNet (CheXNet's network) from the plan's architecture, never downloaded; one input
  channel makes the stem's convolution take one. ``weights`` (``{path, sha256}``) start its features from a
  pretrained file, torchvision's ImageNet ``densenet121-a639ec97.pth``, checked by its hash first
  (:func:`pretrained_features`); its classifier is always fresh.

The ViT families each have a switch that changes only the attention kernel:

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
import hashlib
import importlib.util
import pickle
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mammoscale.errors import UserError
from mammoscale.plan import densenet, families
from mammoscale.plan.vit import BACKEND_JOIN, BACKEND_OF_OP, NO_BACKEND, SIZES, UNFUSED_BACKEND, ModelError, Size
from mammoscale.tasks import BREAST_CANCER
from mammoscale.train import vision

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


def build(
    family: str,
    attention: str,
    size: str,
    *,
    image_size: int,
    patch_size: int | None,
    channels: int,
    outputs: int = BREAST_CANCER.outputs,
    weights: dict | None = None,
) -> nn.Module:
    """A classifier taking (B, channels, S, S) floats and returning (B, outputs) logits, freshly initialised (a CNN's
    features from ``weights``, a pretrained file, where given)."""
    families.check(family, attention, size, image_size, patch_size, channels)
    if families.family(family).kind == "cnn":
        densenet.check(size, image_size)
        return _densenet(size, channels=channels, outputs=outputs, weights=weights)
    if weights:
        raise ModelError(f"weights (a pretrained file) are for the CNN family only, not {family}")
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
            num_classes=outputs,
            attn_layers=encoder,
        )
    return _HuggingFaceViT(
        attention, shape, image_size=image_size, patch_size=patch_size, channels=channels, outputs=outputs
    )


def _densenet(size: str, *, channels: int, outputs: int, weights: dict | None) -> nn.Module:
    """torchvision's DenseNet of the plan's architecture; torchvision's own initialisation throughout."""
    tv = vision.torchvision()
    arch = densenet.architecture(size)
    model = tv.models.DenseNet(
        growth_rate=arch.growth,
        block_config=arch.blocks,
        num_init_features=arch.init_features,
        bn_size=arch.bn_size,
        num_classes=outputs,
    )
    features = pretrained_features(weights) if weights else None
    stem = model.features.conv0
    if channels != stem.in_channels:
        model.features.conv0 = nn.Conv2d(
            channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False
        )
        nn.init.kaiming_normal_(model.features.conv0.weight)
    if features is not None:
        if channels == 1:  # grey: the RGB filters' response to equal R, G and B
            features["conv0.weight"] = features["conv0.weight"].sum(dim=1, keepdim=True)
        try:
            model.features.load_state_dict(features)
        except RuntimeError as error:
            said = " ".join(str(error).split())
            said = said if len(said) <= 300 else said[:300] + " ..."
            raise UserError(f"pretrained weights {weights['path']}: not a {size} state dict: {said}") from None
    return model


def pretrained_features(weights: dict) -> dict[str, torch.Tensor]:
    """The ``features`` state of a pretrained DenseNet file (``weights``: ``{path, sha256}``), its hash checked before
    it is read, its old-style keys renamed as torchvision renames them, its classifier dropped."""
    path, expected = Path(weights["path"]), weights["sha256"]
    where = (
        f"download torchvision's ImageNet DenseNet-121, {_pretrained_url()}, to {path}, or point the variant's "
        "weights.path at your copy; weights.sha256 is its sha256sum"
    )
    if not path.is_file():
        raise UserError(f"pretrained weights {path}: no such file (expected sha256 {expected}); {where}")
    actual = _sha256(path)
    if not actual.startswith(expected):  # a full digest, or its first hex digits (torch.hub's check of a file name's)
        raise UserError(f"pretrained weights {path}: sha256 {actual}, not the expected {expected}; {where}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        kind = type(error).__name__
        raise UserError(f"pretrained weights {path}: not a torch state dict ({kind}); {where}") from None
    state = _torchvision_renamed(state)
    prefix = "features."
    features = {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}
    if not features or "conv0.weight" not in features:
        raise UserError(f"pretrained weights {path}: not a DenseNet state dict (no features.conv0.weight); {where}")
    return features


def _pretrained_url() -> str:
    """Where torchvision downloads ``densenet121-a639ec97.pth`` from (``DenseNet121_Weights.IMAGENET1K_V1``)."""
    return vision.torchvision().models.DenseNet121_Weights.IMAGENET1K_V1.url


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _StateDict:
    """What torchvision's ``_load_state_dict`` asks of a weights enum (the state dict) and of a model (to take the
    renamed one): its renaming of old checkpoints' ``denselayer1.norm.1`` to ``denselayer1.norm1``, applied alone."""

    def __init__(self, state: dict):
        self.state = state

    def get_state_dict(self, progress: bool, check_hash: bool) -> dict:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        self.state = state


def _torchvision_renamed(state: dict) -> dict:
    held = _StateDict(dict(state))
    vision.torchvision().models.densenet._load_state_dict(model=held, weights=held, progress=False)
    return held.state


class _HuggingFaceViT(nn.Module):
    """``ViTForImageClassification`` returning logits, so both families share one call signature."""

    def __init__(self, attention: str, shape: Size, *, image_size: int, patch_size: int, channels: int, outputs: int):
        super().__init__()
        if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise KernelUnavailable(
                "attention flash_attention_2 needs the flash-attn package: on a CUDA machine, make flash-attn "
                "(tools/install-flash-attn; docs/gpu-cluster.md)"
            )
        vision.torchvision()  # transformers imports it wherever it is installed
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
            num_labels=outputs,
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
