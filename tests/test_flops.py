"""The analytic FLOP count against torch's own counter, and MFU."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mammoscale.plan import flops, vit
from mammoscale.train import models


@pytest.mark.parametrize(
    "family, attention, size, image, patch, channels",
    [
        ("xtransformers", "materialised", "vit-tiny", 64, 8, 1),
        ("xtransformers", "materialised", "vit-small", 128, 16, 3),
        ("hf", "eager", "vit-tiny", 64, 8, 1),
    ],
)
def test_forward_flops_match_torchs_counter(family, attention, size, image, patch, channels):
    model = models.build(family, attention, size, image_size=image, patch_size=patch, channels=channels)
    batch = 2
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(batch, channels, image, image))
    measured = counter.get_total_flops() / batch
    tokens = vit.seq_len(family, image, patch)
    analytic = flops.forward_flops_per_image(size, seq_len=tokens, patch_size=patch, channels=channels)
    assert measured == pytest.approx(analytic, rel=1e-3)


def test_training_is_three_forward_passes_and_attention_grows_quadratically():
    forward = flops.forward_flops_per_image("vit-base", seq_len=4096, patch_size=16, channels=3)
    assert flops.train_flops_per_image("vit-base", seq_len=4096, patch_size=16, channels=3) == 3 * forward
    short = flops.forward_flops_per_image("vit-base", seq_len=1024, patch_size=16, channels=3)
    assert 4 < forward / short < 16


def test_mfu():
    assert flops.achieved_tflops(10**12, 3.0) == 3.0
    assert flops.mfu(156.0, 312.0, 1) == 0.5
    assert flops.mfu(156.0, 312.0, 2) == 0.25
    assert flops.mfu(1.0, None, 1) is None
