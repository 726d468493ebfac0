"""The analytic FLOP count against torch's own counter, and MFU."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mammoscale.plan import densenet, flops
from mammoscale.train import models


@pytest.mark.parametrize(
    "family, attention, size, image, patch, channels, outputs",
    [
        ("xtransformers", "materialised", "vit-tiny", 64, 8, 1, 2),
        ("xtransformers", "materialised", "vit-small", 128, 16, 3, 14),
        ("hf", "eager", "vit-tiny", 64, 8, 1, 14),
        ("densenet", "none", "densenet-121", 64, None, 1, 14),
    ],
)
def test_forward_flops_match_torchs_counter(family, attention, size, image, patch, channels, outputs):
    model = models.build(
        family, attention, size, image_size=image, patch_size=patch, channels=channels, outputs=outputs
    ).eval()
    batch = 2
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(batch, channels, image, image))
    measured = counter.get_total_flops() / batch
    shape = {"image_size": image, "patch_size": patch, "channels": channels, "outputs": outputs}
    analytic = flops.forward_flops_per_image(family, size, **shape)
    assert measured == pytest.approx(analytic, rel=1e-3)


def test_training_is_three_forward_passes_and_attention_grows_quadratically():
    shape = {"patch_size": 16, "channels": 3}
    forward = flops.forward_flops_per_image("xtransformers", "vit-base", image_size=1024, **shape)
    assert flops.train_flops_per_image("xtransformers", "vit-base", image_size=1024, **shape) == 3 * forward
    short = flops.forward_flops_per_image("xtransformers", "vit-base", image_size=512, **shape)
    assert 4 < forward / short < 16
    fourteen = flops.forward_flops_per_image("xtransformers", "vit-base", image_size=1024, **shape, outputs=14)
    assert fourteen - forward == 2 * 768 * 12  # the head's twelve more outputs


def test_a_cnn_is_counted_by_its_own_kind():
    """DenseNet's count is its convolutions' (plan.densenet), with no patch; it grows with the pixels."""
    cnn = {"patch_size": None, "channels": 1, "outputs": 14}
    at_224 = flops.forward_flops_per_image("densenet", "densenet-121", image_size=224, **cnn)
    assert at_224 == densenet.forward_flops_per_image("densenet-121", image_size=224, channels=1, outputs=14)
    at_448 = flops.forward_flops_per_image("densenet", "densenet-121", image_size=448, **cnn)
    assert at_448 / at_224 == pytest.approx(4, rel=0.01)
    assert flops.train_flops_per_image("densenet", "densenet-121", image_size=224, **cnn) == 3 * at_224


def test_mfu():
    assert flops.achieved_tflops(10**12, 3.0) == 3.0
    assert flops.mfu(156.0, 312.0, 1) == 0.5
    assert flops.mfu(156.0, 312.0, 2) == 0.25
    assert flops.mfu(1.0, None, 1) is None
