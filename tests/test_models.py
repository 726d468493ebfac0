"""The ViT builders: one switch changes only the attention kernel, and the kernel that ran is recorded."""

from __future__ import annotations

import contextlib

import jsonschema
import pytest
import torch

from mammoscale import records, tasks
from mammoscale.plan import families, vit
from mammoscale.train import models


def pair(family: str, first: str, second: str, **shape):
    """Two models of ``family`` differing only in attention, holding the same weights."""
    torch.manual_seed(0)
    a = models.build(family, first, "vit-tiny", **shape)
    b = models.build(family, second, "vit-tiny", **shape)
    b.load_state_dict(a.state_dict())
    return a.eval(), b.eval()


@pytest.mark.parametrize("family, first, second", [("xtransformers", "flash", "materialised"), ("hf", "sdpa", "eager")])
def test_the_attention_switch_keeps_outputs_and_gradients(family, first, second):
    a, b = pair(family, first, second, image_size=64, patch_size=8, channels=1)
    x = torch.randn(3, 1, 64, 64)
    out_a, out_b = a(x), b(x)
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-5)
    out_a.sum().backward()
    out_b.sum().backward()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-5, msg=name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_a, low_b = a(x).float(), b(x).float()
    torch.testing.assert_close(low_a, low_b, rtol=0.05, atol=0.05)
    torch.testing.assert_close(low_a, out_a.detach(), rtol=0.1, atol=0.1)


def test_a_different_kernel_really_changes_the_code_path():
    a, b = pair("xtransformers", "flash", "materialised", image_size=64, patch_size=8, channels=1)
    seen = {}
    for name, model in (("flash", a), ("materialised", b)):
        record = {}
        with models.attention_kernels(record):
            model(torch.randn(2, 1, 64, 64))
        seen[name] = record["kernel"]
    assert seen == {"flash": "sdpa-flash-cpu", "materialised": "matmul-softmax"}


def test_hugging_face_eager_is_materialised_and_sdpa_is_not():
    eager, sdpa = pair("hf", "eager", "sdpa", image_size=32, patch_size=8, channels=3)
    for model, expected in ((eager, "matmul-softmax"), (sdpa, "sdpa-flash-cpu")):
        record = {}
        with models.attention_kernels(record):
            model(torch.randn(1, 3, 32, 32))
        assert record["kernel"] == expected


def test_kernel_names_from_operator_names():
    assert models.kernels_in(["aten::mm", "aten::_softmax"]) == "matmul-softmax"
    assert models.kernels_in(["aten::mm", "aten::add"]) == "none observed"
    assert models.kernels_in(["aten::_scaled_dot_product_flash_attention", "aten::mm"]) == "sdpa-flash"
    assert (
        models.kernels_in(["aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_attention_math"])
        == "sdpa-math+sdpa-mem-efficient"
    )


CPU_ATTENTIONS = [
    (family, attention)
    for family, names in vit.ATTENTIONS.items()
    for attention in names
    if vit.cannot_run(attention, device="cpu", precision="fp32") is None
]


@pytest.mark.parametrize("family, attention", CPU_ATTENTIONS)
def test_the_kernel_a_cpu_step_records_is_a_name_the_schema_holds(family, attention):
    """A training step (forward and backward) of every attention a CPU can run: its kernel's name is one of the
    catalogue's, and a record holding it passes the metrics schema."""
    model = models.build(family, attention, "vit-tiny", image_size=32, patch_size=8, channels=1)
    record = {}
    with models.kernel_context(attention, torch.device("cpu")), models.attention_kernels(record):
        model(torch.randn(2, 1, 32, 32)).sum().backward()
    assert record["kernel"] in (*vit.FUSED_BACKENDS, vit.UNFUSED_BACKEND)
    jsonschema.validate(record["kernel"], records.metrics_schema()["properties"]["attention_backend"])


def test_every_name_the_kernel_watcher_can_give_is_in_the_schema():
    schema = records.metrics_schema()["properties"]["attention_backend"]
    ops = list(vit.BACKEND_OF_OP)
    for seen in ([], ["aten::_softmax"], *([op] for op in ops), ops, ops[::-1] + ["aten::_softmax"]):
        jsonschema.validate(models.kernels_in(seen), schema)
    assert len(CPU_ATTENTIONS) >= 4


def test_the_flash_variant_forces_the_flash_kernel_itself():
    """x-transformers replaces any sdpa_kernel context around the model with its own: the model's own kwargs decide."""
    from torch.nn.attention import SDPBackend

    model = models.build("xtransformers", "flash", "vit-tiny", image_size=32, patch_size=8, channels=1)
    attends = [m for m in model.modules() if type(m).__name__ == "Attend"]
    assert attends and all(a.flash for a in attends)
    assert {tuple(a.sdp_context_manager.args[0]) for a in attends} == {(SDPBackend.FLASH_ATTENTION,)}
    materialised = models.build("xtransformers", "materialised", "vit-tiny", image_size=32, patch_size=8, channels=1)
    assert not any(m.flash for m in materialised.modules() if type(m).__name__ == "Attend")


def test_sdpas_math_fallback_is_named_by_what_runs():
    """Under a math-only context HF's sdpa decomposes into matmuls and a softmax: recorded as such, not as a kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    sdpa = models.build("hf", "sdpa", "vit-tiny", image_size=32, patch_size=8, channels=1)
    record = {}
    with sdpa_kernel([SDPBackend.MATH]), models.attention_kernels(record):
        sdpa(torch.randn(1, 1, 32, 32))
    assert record["kernel"] == "matmul-softmax"


def test_flash_attention_2_runs_on_cuda_only():
    assert isinstance(models.kernel_context("flash", torch.device("cpu")), contextlib.nullcontext)
    with pytest.raises(models.KernelUnavailable, match="CUDA only"):
        models.kernel_context("flash_attention_2", torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_flash_attention_2_without_the_package_is_unavailable():
    pytest.importorskip("transformers")
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed")
    with pytest.raises(models.KernelUnavailable, match="flash-attn package"):
        models.build("hf", "flash_attention_2", "vit-tiny", image_size=32, patch_size=8, channels=1)


@pytest.mark.parametrize(
    "family, attention, size, image, patch, channels, message",
    [
        ("timm", "flash", "vit-tiny", 64, 8, 1, "unknown model family"),
        ("xtransformers", "eager", "vit-tiny", 64, 8, 1, "not available for xtransformers"),
        ("hf", "flash", "vit-tiny", 64, 8, 1, "not available for hf"),
        ("xtransformers", "flash", "vit-huge", 64, 8, 1, "unknown model size"),
        ("xtransformers", "flash", "vit-tiny", 64, 12, 1, "does not divide"),
        ("xtransformers", "flash", "vit-tiny", 64, 0, 1, "does not divide"),
        ("xtransformers", "flash", "vit-tiny", 64, 8, 2, "channels must be 1 or 3"),
    ],
)
def test_impossible_models_are_refused_with_a_sentence(family, attention, size, image, patch, channels, message):
    with pytest.raises(vit.ModelError, match=message):
        models.build(family, attention, size, image_size=image, patch_size=patch, channels=channels)


def test_three_channels_and_sequence_lengths():
    model = models.build("xtransformers", "flash", "vit-tiny", image_size=64, patch_size=16, channels=3)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, tasks.BREAST_CANCER.outputs)
    assert vit.seq_len("xtransformers", 1024, 16) == 4096
    assert vit.seq_len("hf", 1024, 16) == 4097


@pytest.mark.parametrize("family, attention", [("xtransformers", "flash"), ("hf", "sdpa"), ("densenet", "none")])
def test_every_family_has_one_output_per_finding(family, attention):
    """Fourteen logits for the chest findings; a CNN step dispatches no attention kernel, and says so."""
    patch = 16 if families.has_patches(family) else None
    size = families.family(family).sizes[0]
    outputs = tasks.CHEST_FINDINGS.outputs
    model = models.build(family, attention, size, image_size=64, patch_size=patch, channels=1, outputs=outputs)
    record = {}
    with models.attention_kernels(record):
        logits = model(torch.randn(2, 1, 64, 64))
        logits.sum().backward()
    assert logits.shape == (2, 14)
    assert (record["kernel"] == vit.NO_BACKEND) == (family == "densenet")
    jsonschema.validate(record["kernel"], records.metrics_schema()["properties"]["attention_backend"])


def test_both_families_build_the_same_vit_base():
    x = models.params(models.build("xtransformers", "flash", "vit-base", image_size=384, patch_size=16, channels=3))
    hf = models.params(models.build("hf", "eager", "vit-base", image_size=384, patch_size=16, channels=3))
    assert 85e6 < hf < 88e6
    assert abs(x - hf) / hf < 0.01
