"""The memory model against exact measurement, and each cell's plan: micro-batch, fit, cost, predicted-OOM record."""

from __future__ import annotations

import pytest
import torch

from mammoscale import files, records
from mammoscale.errors import UserError
from mammoscale.plan import flops, memory, sizing
from mammoscale.plan.grid import Cell
from mammoscale.train import models
from mammoscale.train.memory import measure_step

KINDS = [("xtransformers", "flash"), ("xtransformers", "materialised"), ("hf", "eager"), ("hf", "sdpa")]


@pytest.mark.parametrize(
    "family, attention, size, patch_size",
    [
        ("xtransformers", "flash", "vit-tiny", 16),
        ("xtransformers", "flash", "vit-base", 16),
        ("hf", "sdpa", "vit-tiny", 16),
        ("hf", "sdpa", "vit-base", 16),
        ("densenet", "none", "densenet-121", None),
    ],
)
@pytest.mark.parametrize("channels, outputs", [(1, 2), (3, 14)])
def test_the_parameter_count_is_the_built_models(family, attention, size, patch_size, channels, outputs):
    shape = {"image_size": 96, "patch_size": patch_size, "channels": channels, "outputs": outputs}
    built = models.build(family, attention, size, **shape)
    total, matmul = memory.parameters(family, size, **shape)
    assert total == models.params(built)
    projections = [m for m in built.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert matmul == sum(models.params(m) for m in projections)  # what autocast copies to bf16


@pytest.mark.parametrize("family, attention", KINDS)
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_fake_tensors_measure_exactly_what_real_ones_do(family, attention, precision):
    shape = {"image_size": 128, "patch_size": 8, "micro_batch": 2, "precision": precision}
    real = measure_step(family, attention, "vit-tiny", **shape)
    fake = measure_step(family, attention, "vit-tiny", **shape, fake=True)
    assert real == fake and real.peak > real.state > 0


@pytest.mark.parametrize("precision, within", [("fp32", 0), ("bf16", 0.002)])
def test_fake_tensors_measure_a_cnn_as_real_ones_do(precision, within):
    """Byte for byte in fp32; in bf16 a CPU's real convolutions keep 0.1 % more than their fake kernels declare."""
    shape = {"image_size": 96, "patch_size": None, "micro_batch": 2, "precision": precision}
    real = measure_step("densenet", "none", "densenet-121", **shape)
    fake = measure_step("densenet", "none", "densenet-121", **shape, fake=True)
    assert real.state == fake.state and real.peak > real.state > 0
    assert fake.peak == pytest.approx(real.peak, rel=within, abs=0)


@pytest.mark.parametrize("family, attention", KINDS)
@pytest.mark.parametrize(
    "size, image_size, patch_size, micro_batch, precision",
    [
        ("vit-tiny", 256, 8, 4, "bf16"),  # 1,024 tokens: activations dominate
        ("vit-small", 512, 8, 1, "fp32"),  # 4,096 tokens
        ("vit-base", 1024, 16, 2, "bf16"),  # held out of the fit; 4,096 tokens
        ("vit-base", 128, 16, 1, "bf16"),  # 64 tokens: the optimiser step's peak
    ],
)
def test_the_prediction_is_within_ten_percent_of_the_measurement(
    family, attention, size, image_size, patch_size, micro_batch, precision
):
    shape = {"image_size": image_size, "patch_size": patch_size, "channels": 3, "precision": precision}
    measured = measure_step(family, attention, size, **shape, micro_batch=micro_batch, fake=True)
    predicted = memory.step_peak(family, attention, size, **shape, micro_batch=micro_batch, device="cpu")
    assert predicted.total == pytest.approx(measured.peak, rel=0.10)
    assert predicted.state == pytest.approx(measured.state, rel=0.001)


@pytest.mark.parametrize(
    "image_size, micro_batch, precision",
    [
        (64, 2, "bf16"),  # the optimiser step's peak
        (128, 4, "fp32"),  # in the fit
        (224, 2, "bf16"),  # held out of the fit: CheXNet's size
        (512, 1, "fp32"),  # held out
    ],
)
def test_the_cnn_prediction_is_within_ten_percent_of_the_measurement(image_size, micro_batch, precision):
    shape = {"image_size": image_size, "patch_size": None, "channels": 1, "precision": precision}
    measured = measure_step("densenet", "none", "densenet-121", **shape, micro_batch=micro_batch, fake=True)
    predicted = memory.step_peak("densenet", "none", "densenet-121", **shape, micro_batch=micro_batch, device="cpu")
    assert predicted.total == pytest.approx(measured.peak, rel=0.10)
    assert predicted.state == pytest.approx(measured.state, rel=0.001)
    in_backward = predicted.weight_copies + predicted.activations > predicted.optimizer_step
    assert in_backward == (image_size > 64)


def test_ddp_with_accumulation_keeps_no_second_copy_of_the_gradients():
    """Freed after each step (``set_to_none``), the gradients of DDP's ``no_sync`` micro-batches come back beside
    its all-reduce buckets: 4 bytes a parameter more at every step's peak. Zeroed in place (the DDP backend's
    ``zero_grad``), they stay views of the buckets and the step peaks exactly where one process does, as the
    memory model predicts (DDP adds nothing). Measured under a real gloo process group."""
    shape = {"image_size": 128, "patch_size": 8, "micro_batch": 2, "grad_accum": 2, "precision": "fp32", "channels": 3}
    alone = measure_step("xtransformers", "flash", "vit-small", **shape)
    ddp = measure_step("xtransformers", "flash", "vit-small", **shape, backend="ddp")
    freed = measure_step("xtransformers", "flash", "vit-small", **shape, backend="ddp", set_to_none=True)
    params = memory.parameters("xtransformers", "vit-small", image_size=128, patch_size=8, channels=3)[0]
    assert ddp.state - alone.state == memory.GRADIENT_BYTES_PER_PARAMETER * params  # the buckets, alive throughout
    assert ddp.peak == alone.peak
    assert freed.peak - ddp.peak == pytest.approx(4 * params, rel=1e-3)
    del shape["grad_accum"]
    predicted = memory.step_peak("xtransformers", "flash", "vit-small", **shape, device="cpu", backend="ddp")
    assert predicted.total == pytest.approx(ddp.peak, rel=0.10)
    with pytest.raises(ValueError, match="DDP cannot wrap fake tensors"):
        measure_step("xtransformers", "flash", "vit-tiny", image_size=64, patch_size=32, backend="ddp", fake=True)


def test_materialised_attention_grows_with_tokens_squared_and_flash_linearly():
    def activations(attention, tokens_side):
        return memory.step_peak(
            "xtransformers",
            attention,
            "vit-base",
            image_size=16 * tokens_side,
            patch_size=16,
            channels=3,
            precision="bf16",
            micro_batch=1,
        ).activations

    assert 3.5 < activations("flash", 64) / activations("flash", 32) < 4.5  # 4x the tokens
    assert 12 < activations("materialised", 64) / activations("materialised", 32) < 16.5  # ~16x


def test_the_gpu_adds_its_workspace_and_horovod_its_fusion_buffer():
    shape = {"image_size": 512, "patch_size": 16, "channels": 3, "precision": "bf16", "micro_batch": 4}
    cpu = memory.step_peak("xtransformers", "flash", "vit-base", **shape, device="cpu")
    gpu = memory.step_peak("xtransformers", "flash", "vit-base", **shape, device="cuda", backend="horovod")
    assert gpu.total - cpu.total == memory.WORKSPACE_BYTES + memory.BACKEND_BYTES["horovod"]
    assert memory.coefficients("hf", "flash_attention_2", "bf16") == memory.coefficients("hf", "sdpa", "bf16")
    for fused in ("cudnn", "mem_efficient"):  # keep what the flash kernel keeps for the backward pass
        assert memory.coefficients("xtransformers", fused, "bf16") == memory.coefficients(
            "xtransformers", "flash", "bf16"
        )


def test_the_micro_batch_is_the_largest_divisor_that_fits():
    def peak(micro):
        return 10 + 3 * micro

    assert memory.divisors(192, 64) == [64, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1]
    assert memory.choose_micro_batch(192, 64, None, peak) == memory.MicroBatch(64, 202, True)
    assert memory.choose_micro_batch(192, 64, 150, peak) == memory.MicroBatch(32, 106, True)
    assert memory.choose_micro_batch(192, 64, 12, peak) == memory.MicroBatch(1, 13, False)
    assert memory.choose_micro_batch(7, 4, None, peak).micro_batch == 1  # 7 is prime: one image at a time


GPU = {
    "launcher": "torchrun",
    "nodes": 1,
    "gpus_per_node": 8,
    "micro_batch": 64,
    "device_memory_gib": 80,
    "runtime_min": 2880,
}
PLAN = {"memory_headroom": 0.9, "submit_predicted_oom": False, "mfu": 0.5, "train_breasts": None}


def settings(**overrides) -> dict:
    base = {
        "family": "xtransformers",
        "attention": "flash",
        "model_size": "vit-base",
        "channels": 3,
        "precision": "bf16",
        "device": "cuda",
        "global_batch": 1536,
        "mode": "full",
        "epochs": 20,
        "timing_warmup_steps": 1,
        "timed_steps": 3,
        "backend": "ddp",
    }
    return {**base, **overrides}


def test_a_cell_plan_fits_its_device_and_says_what_it_costs():
    cell = Cell("xe9680", "flash", 1024, 16)
    plan = sizing.plan_cell(cell, settings(), {**GPU, "peak_tflops": 312}, PLAN, train_breasts=16_000)
    assert plan.world_size == 8 and plan.micro_batch * plan.grad_accum == 1536 // 8
    assert plan.memory_limit_bytes == int(0.9 * 80 * 2**30)  # device_memory_gib: 80 GiB
    assert plan.predicted_peak_bytes <= plan.memory_limit_bytes and plan.fits and plan.submitted
    assert plan.steps == 20 * (16_000 // 1536) and plan.images == plan.steps * 1536
    per_image = flops.train_flops_per_image("xtransformers", "vit-base", image_size=1024, patch_size=16, channels=3)
    assert plan.flops_per_img == per_image
    assert plan.gpu_hours == pytest.approx(plan.images * per_image / (0.5 * 312e12) / 3600)
    larger = sizing.plan_cell(
        cell, settings(), {**GPU, "peak_tflops": 312}, {**PLAN, "memory_headroom": 0.5}, train_breasts=1
    )
    assert larger.micro_batch < plan.micro_batch  # less memory allowed, smaller micro-batches
    throughput = sizing.plan_cell(cell, settings(mode="throughput"), GPU, PLAN, train_breasts=1)
    assert throughput.steps == 4 and throughput.gpu_hours is None  # no peak: no estimate
    assert list(plan.row()) == list(files.PLAN_TABLE.columns)


def test_the_plan_holds_the_split_on_the_device_only_beside_the_planned_peak():
    """16,678 training breasts at 1024 px are 16.3 GiB per rank: beside flash 1024/p16's 64 GiB at micro-batch 32
    they would pass the 72 GiB allowed, so the split stays on the host and the micro-batch is the one planned;
    at 384 px (2.3 GiB) it fits beside the peak and is held on the device."""
    plans = {
        size: sizing.plan_cell(Cell("xe9680", "flash", size, 16), settings(), GPU, PLAN, train_breasts=16_678)
        for size in (384, 1024)
    }
    large, small = plans[1024], plans[384]
    assert large.data_bytes == 16_678 * (1024**2 + 8) == memory.split_bytes(16_678, 1024)
    assert large.predicted_peak_bytes <= large.memory_limit_bytes < large.predicted_peak_bytes + large.data_bytes
    assert large.data_on_device is False and large.data_setting == "no" and large.micro_batch == 32
    assert small.data_on_device is True and small.data_setting == "yes"
    assert small.predicted_peak_bytes + small.data_bytes <= small.memory_limit_bytes
    # asked for: "yes" plans the micro-batch with the split already held; "no" never holds it
    held = sizing.plan_cell(
        Cell("xe9680", "flash", 1024, 16), settings(data_on_device="yes"), GPU, PLAN, train_breasts=16_678
    )
    assert held.data_on_device is True and held.micro_batch < large.micro_batch
    assert held.predicted_peak_bytes + held.data_bytes <= held.memory_limit_bytes
    assert not sizing.plan_cell(
        Cell("xe9680", "flash", 384, 16), settings(data_on_device="no"), GPU, PLAN, train_breasts=9
    ).data_on_device
    # without a device memory the device decides (auto); a CPU never holds it unless asked
    assert sizing.place_data("auto", on_gpu=True, peak=1, data_bytes=1, limit=None) is None
    assert sizing.place_data("auto", on_gpu=False, peak=1, data_bytes=1, limit=10) is False
    assert sizing.place_data("yes", on_gpu=False, peak=1, data_bytes=1, limit=None) is True
    assert sizing.place_data("auto", on_gpu=True, peak=6, data_bytes=4, limit=10) is True
    assert sizing.place_data("auto", on_gpu=True, peak=6, data_bytes=5, limit=10) is False


def test_a_cell_is_predicted_against_its_time_limit():
    cell = Cell("xe9680", "flash", 2048, 8)
    plan = sizing.plan_cell(
        cell, settings(), {**GPU, "peak_tflops": 312, "runtime_min": 2880}, PLAN, train_breasts=16_678
    )
    assert plan.predicted_hours == pytest.approx(plan.gpu_hours / 8) and plan.time_limit_hours == 48
    assert sizing.over_time_limit([plan], 0.9) == ([plan] if plan.predicted_hours > 43.2 else [])
    assert sizing.over_time_limit([plan], plan.predicted_hours / 48 + 0.01) == []
    message = sizing.time_limit_message([plan] * 5, 0.9)
    assert message.startswith(f"5 cell(s) would not finish within their SLURM time limit ({cell.name} ")
    assert "and 2 more" in message and "more nodes" in message and "runtime_min" in message and "\n" not in message


def test_slurm_signals_a_cell_two_of_its_steps_ahead_of_its_time_limit():
    cell = Cell("xe9680", "flash", 2048, 8)
    long = sizing.plan_cell(
        cell, settings(), {**GPU, "peak_tflops": 312, "runtime_min": 4320}, PLAN, train_breasts=16_678
    )
    step_s = 3600 * long.predicted_hours / long.steps  # 10 minutes a step at 50 % MFU
    assert long.signal_before_limit_s == int(2 * step_s + 120) and 1300 < long.signal_before_limit_s < 1450
    short = sizing.plan_cell(Cell("xe9680", "flash", 384, 32), settings(), GPU, PLAN, train_breasts=16_678)
    assert short.signal_before_limit_s == sizing.SIGNAL_MIN_S  # no prediction: five minutes
    brief = sizing.plan_cell(
        Cell("xe9680", "flash", 384, 32), settings(), {**GPU, "runtime_min": 2}, PLAN, train_breasts=9
    )
    assert brief.signal_before_limit_s == 30  # a quarter of a 2-minute limit


def test_a_cnn_cell_is_planned_without_tokens_for_its_tasks_outputs():
    """DenseNet-121 at CheXNet's 224 px on an 80 GiB GPU: no seq_len, its own FLOPs and memory model, 14 outputs."""
    cnn = settings(family="densenet", attention="none", model_size="densenet-121", channels=1, task="chest-findings")
    plan = sizing.plan_cell(Cell("xe9680", "densenet", 224, None), cnn, GPU, PLAN, train_breasts=16_000)
    shape = {"image_size": 224, "patch_size": None, "channels": 1, "outputs": 14}
    assert plan.seq_len is None and plan.row()["seq_len"] is None
    assert plan.flops_per_img == flops.train_flops_per_image("densenet", "densenet-121", **shape)
    assert plan.micro_batch == 64 and plan.fits  # the bound: 64 images of 224 px are a few GiB
    predicted = memory.step_peak("densenet", "none", "densenet-121", **shape, precision="bf16", micro_batch=64)
    assert plan.predicted_peak_bytes == predicted.total  # on the GPU, under DDP (which adds nothing)
    two = memory.parameters("densenet", "densenet-121", **{**shape, "outputs": 2})[0]
    assert memory.parameters("densenet", "densenet-121", **shape)[0] - two == 12 * 1024 + 12


def test_a_cpu_profile_is_planned_without_memory():
    cpu = {"launcher": "none", "nodes": 1, "gpus_per_node": 0, "micro_batch": 4, "runtime_min": 60}
    plan = sizing.plan_cell(
        Cell("cpu", "flash", 384, 8), settings(device="cpu", global_batch=6), cpu, PLAN, train_breasts=9
    )
    assert plan.micro_batch == 3 and plan.memory_limit_bytes is None and plan.fits and plan.device == "cpu"


def test_a_global_batch_the_ranks_cannot_share_is_refused():
    with pytest.raises(UserError, match="cell xe9680/flash/img512_p16: global batch 12 cannot be shared by 8 rank"):
        sizing.plan_cell(Cell("xe9680", "flash", 512, 16), settings(global_batch=12), GPU, PLAN, train_breasts=1)


def test_a_predicted_oom_is_recorded_without_running():
    cell = Cell("xe9680", "hf-eager", 2048, 16)
    cell_settings = settings(family="hf", attention="eager", micro_batch=1, hardware="xe9680", variant="hf-eager")
    plan = sizing.plan_cell(cell, cell_settings, GPU, PLAN, train_breasts=1)
    assert not plan.fits and not plan.submitted and plan.micro_batch == 1 and plan.grad_accum == 192
    assert sizing.plan_cell(cell, cell_settings, GPU, {**PLAN, "submit_predicted_oom": True}, train_breasts=1).submitted
    record = sizing.predicted_oom_record(plan.row(), cell_settings)
    records.validate_metrics(record)
    assert record["status"] == "oom" and record["oom_basis"] == "predicted" and record["steps"] == 0
    assert record["predicted_peak_bytes"] == plan.predicted_peak_bytes > 72 * 2**30
    assert record["seq_len"] == 16385 and record["peak_mem_bytes"] is None and record["throughput_img_s"] is None
    assert "predicted out of memory" in record["message"] and "72.0 GiB allowed" in record["message"]
    assert tuple(record) == records.metrics_keys()  # the same keys as a cell that ran, nothing measured
    assert record["throughput_windows_img_s"] == [] and record["val_auc_ci_low"] is None


def test_the_nominal_training_set():
    config = {
        "plan": {"train_breasts": None},
        "data": {"source": "rsna"},
        "synthetic": {"n_patients": 40},
        "manifest": {"split": {"train": 0.7}},
    }
    assert sizing.nominal_train_breasts(config) == round(2 * 11_913 * 0.7)
    assert sizing.nominal_train_breasts({**config, "data": {"source": "synthetic"}}) == 56
    assert sizing.nominal_train_breasts({**config, "plan": {"train_breasts": 100}}) == 100
