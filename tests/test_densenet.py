"""DenseNet-121 as data against torchvision's network, and the model built from it, pretrained weights included."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from mammoscale.errors import UserError
from mammoscale.plan import densenet
from mammoscale.plan.vit import ModelError
from mammoscale.train import models, vision

SIZE = "densenet-121"


def torchvision_densenet121(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return vision.torchvision().models.densenet121(weights=None, **kwargs)


def test_the_parameters_are_torchvisions_exactly():
    reference = torchvision_densenet121()
    assert densenet.parameters(SIZE, channels=3, outputs=1000)[0] == models.params(reference) == 7_978_856
    built = models.build("densenet", "none", SIZE, image_size=224, patch_size=None, channels=1, outputs=14)
    total, matmul = densenet.parameters(SIZE, channels=1, outputs=14)
    assert total == models.params(built)
    projections = [m for m in built.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert matmul == sum(models.params(m) for m in projections)  # what autocast copies to bf16
    assert built.classifier.out_features == 14 and built.features.conv0.in_channels == 1


@pytest.mark.parametrize("image_size, channels, outputs", [(64, 1, 14), (97, 3, 2), (224, 3, 1000)])
def test_forward_flops_are_what_torchs_counter_counts(image_size, channels, outputs):
    """Exactly: the sides' rounding (97 px: odd at every stride) and the classifier included."""
    model = models.build(
        "densenet", "none", SIZE, image_size=image_size, patch_size=None, channels=channels, outputs=outputs
    )
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(2, channels, image_size, image_size))
    analytic = densenet.forward_flops_per_image(SIZE, image_size=image_size, channels=channels, outputs=outputs)
    assert counter.get_total_flops() == 2 * analytic


def test_torchvisions_own_operation_count_agrees():
    """torchvision's weights metadata gives DenseNet-121's GFLOPs (multiply-adds) at 224 px: 2.834."""
    meta = vision.torchvision().models.DenseNet121_Weights.IMAGENET1K_V1.meta
    analytic = densenet.forward_flops_per_image(SIZE, image_size=224, channels=3, outputs=1000)
    assert analytic / 2 / 1e9 == pytest.approx(meta["_ops"], abs=0.0005)
    assert densenet.parameters(SIZE, channels=3, outputs=1000)[0] == meta["num_params"]


class _MapElements(TorchDispatchMode):
    """Elements of every map made by a convolution, batch norm, pool, concatenation or the classifier."""

    MAKERS = ("convolution", "batch_norm", "max_pool2d", "avg_pool2d", "aten::cat", "addmm")

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(maker in func._schema.name for maker in self.MAKERS):
            self.elements += (out[0] if isinstance(out, tuple) else out).numel()
        return out


@pytest.mark.parametrize("image_size", [64, 130])
def test_the_feature_maps_are_those_the_forward_pass_makes(image_size):
    model = models.build("densenet", "none", SIZE, image_size=image_size, patch_size=None, channels=1, outputs=14)
    with _MapElements() as seen:
        model(torch.randn(1, 1, image_size, image_size))
    assert seen.elements == densenet.feature_elements(SIZE, image_size=image_size, channels=1, outputs=14)


def test_an_image_too_small_for_the_batch_norms_is_refused():
    smallest = densenet.min_image_size()
    assert smallest == 61 and densenet.sides(smallest)[-1] == densenet.MIN_LAST_SIDE
    with pytest.raises(ModelError, match=r"image size 60 is too small for densenet-121: .* 1x1 pixels.* at least 61"):
        models.build("densenet", "none", SIZE, image_size=60, patch_size=None, channels=1)
    with pytest.raises(ModelError, match="image size 32 is too small"):
        densenet.forward_flops_per_image(SIZE, image_size=32, channels=1, outputs=14)
    # why: torch refuses to train a batch norm on one value a channel, which micro-batch 1 at 60 px would ask
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torchvision_densenet121()(torch.randn(1, 3, 60, 60))
    model = models.build("densenet", "none", SIZE, image_size=smallest, patch_size=None, channels=1)
    model(torch.randn(1, 1, smallest, smallest)).sum().backward()


def test_a_cnn_has_no_patch_and_no_attention():
    with pytest.raises(ModelError, match="has no patch size"):
        models.build("densenet", "none", SIZE, image_size=224, patch_size=16, channels=1)
    with pytest.raises(ModelError, match="has no attention"):
        models.build("densenet", "flash", SIZE, image_size=224, patch_size=None, channels=1)
    with pytest.raises(ModelError, match="for the CNN family only"):
        models.build(
            "xtransformers", "flash", "vit-tiny", image_size=32, patch_size=8, channels=1, weights={"path": "x"}
        )


def test_torchvision_imports_beside_a_torch_its_extension_cannot_load():
    """A fresh process: the schemas are declared exactly where the extension does not load, and DenseNet builds."""
    script = (
        "from mammoscale.train import vision; loads = vision.extension_loads(); tv = vision.torchvision(); "
        "tv.models.densenet121(weights=None); print(loads, vision.declared())"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loads, declared = done.stdout.split()
    assert declared == str(loads == "False")
    if loads == "False":  # without the declaration, the plain import fails here
        plain = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
        assert plain.returncode != 0 and "operator torchvision::nms does not exist" in plain.stderr
    # transformers imports torchvision wherever it is installed: Hugging Face's ViT, first in its process, builds too
    hf = "from mammoscale.train import models; models.build('hf', 'eager', 'vit-tiny', image_size=32, patch_size=8, "
    hf += "channels=1)"
    subprocess.run([sys.executable, "-c", hf], capture_output=True, text=True, check=True)


@pytest.fixture
def imagenet_file(tmp_path):
    """torchvision's densenet121 (random weights) saved as its ImageNet file is: 1000 classes, three channels, the
    old-style keys (``denselayer1.norm.1``) torchvision renames, no ``num_batches_tracked`` (it predates them); its
    state and sha256."""
    state = torchvision_densenet121().state_dict()
    old_style = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        for part in ("norm1", "norm2", "conv1", "conv2"):
            if "denselayer" in key and f".{part}." in key:
                key = key.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.")
        old_style[key] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in old_style
    path = tmp_path / "densenet121-a639ec97.pth"
    torch.save(old_style, path)
    return state, path, _sha256(path)


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pretrained_weights_start_the_features_and_never_the_classifier(imagenet_file):
    state, path, sha256 = imagenet_file
    weights = {"path": str(path), "sha256": sha256}
    torch.manual_seed(1)
    grey = models.build("densenet", "none", SIZE, image_size=224, patch_size=None, channels=1, weights=weights)
    rgb = models.build("densenet", "none", SIZE, image_size=224, patch_size=None, channels=3, weights=weights)
    loaded = grey.state_dict()
    for key, value in state.items():
        if key.startswith("features.") and key != "features.conv0.weight":
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
    torch.testing.assert_close(rgb.state_dict()["features.conv0.weight"], state["features.conv0.weight"])
    torch.testing.assert_close(
        loaded["features.conv0.weight"], state["features.conv0.weight"].sum(dim=1, keepdim=True), rtol=0, atol=0
    )
    assert grey.classifier.weight.shape == (2, 1024)  # a fresh classifier of the task's outputs
    assert not torch.equal(grey.classifier.weight, state["classifier.weight"][:2])
    grey.eval()
    rgb.eval()
    x = torch.rand(1, 1, 224, 224)  # grey replicated to RGB gives the RGB network's features
    torch.testing.assert_close(grey.features(x), rgb.features(x.expand(1, 3, 224, 224)), rtol=1e-4, atol=1e-4)


def test_weights_missing_or_not_the_ones_named_are_refused(imagenet_file, tmp_path):
    _, path, sha256 = imagenet_file
    shape = {"image_size": 224, "patch_size": None, "channels": 1}
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(UserError, match=rf"{missing}: no such file \(expected sha256 {sha256}\).*densenet121-a639ec97"):
        models.build("densenet", "none", SIZE, **shape, weights={"path": str(missing), "sha256": sha256})
    for wrong in ("0" * 64, "0" * 8):
        with pytest.raises(UserError, match=rf"{path}: sha256 {sha256}, not the expected {wrong}; download .*\.pth"):
            models.build("densenet", "none", SIZE, **shape, weights={"path": str(path), "sha256": wrong})
    # torchvision's file names carry the first 8 hex digits of their sha256, the prefix torch.hub checks
    models.build("densenet", "none", SIZE, **shape, weights={"path": str(path), "sha256": sha256[:8]})
    other = tmp_path / "other.pth"
    other.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a torch state dict"):
        models.pretrained_features({"path": str(other), "sha256": _sha256(other)})
    torch.save({"classifier.weight": torch.zeros(3)}, other)
    with pytest.raises(UserError, match="not a DenseNet state dict"):
        models.pretrained_features({"path": str(other), "sha256": _sha256(other)})
    torch.save({"features.conv0.weight": torch.zeros(64, 3, 7, 7)}, other)
    with pytest.raises(UserError, match=r"not a densenet-121 state dict: .* Missing key\(s\)") as caught:
        models.build("densenet", "none", SIZE, **shape, weights={"path": str(other), "sha256": _sha256(other)})
    assert len(str(caught.value)) < 500 and "\n" not in str(caught.value)  # one line, not 363 keys
