"""One grid cell end to end on the CPU: from the tile cache to a schema-valid metrics.json.

Every status is exercised for real: ``ok``; ``oom`` from a real allocation failure (the process's
address space capped); ``failed`` from a loss driven to NaN; ``skipped`` for a kernel this
machine cannot run; and a cell killed mid-run resumes from its checkpoint to the same result.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mammoscale import cache, files, records, train
from mammoscale.errors import UserError
from mammoscale.plan import memory
from mammoscale.train import batches, checkpoint, cli, devices, loop, models, optim, probe, scores, stopping

from conftest import Preempted, preempt_after_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def cell(cache_root: Path, **overrides) -> dict:
    base = {
        "cache_root": str(cache_root),
        "image_size": 64,
        "patch_size": 16,
        "mode": "full",
        "epochs": 1,
        "global_batch": 8,
        "micro_batch": 4,
        "loader_workers": 0,
        "lr": 1e-3,
    }
    return {**base, **overrides}


def run_cli(out: Path, settings: dict, **popen) -> subprocess.Popen:
    args = [f"{key}={'null' if value is None else value}" for key, value in settings.items()]
    return subprocess.Popen(
        [sys.executable, "-m", "mammoscale.train", "--out", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    """Until the cell running in ``proc`` has written its first checkpoint into ``out``."""
    deadline = time.monotonic() + timeout
    while not (out / checkpoint.NAME).exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def test_a_cell_writes_schema_valid_metrics(train_cache, tmp_path):
    result = train.run_cell(cell(train_cache, epochs=2), tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    records.validate_metrics(on_disk)
    assert on_disk == json.loads(json.dumps(result))
    assert result["status"] == "ok" and result["message"] is None
    assert result["steps"] == 2 * (19 // 8) == len(result["loss_curve"])
    assert result["epochs"] == 2 and len(result["epoch_times_s"]) == 2
    assert result["grad_accum"] == 2 and result["world_size"] == 1 and result["backend"] == "none"
    assert result["seq_len"] == 16 and result["params"] > 1e6 and result["attention_backend"] == "sdpa-flash-cpu"
    assert result["throughput_img_s"] > 0 and result["step_time_s"] > 0 and result["achieved_tflops"] > 0
    assert result["mfu"] is None  # no peak given for this hardware
    assert result["peak_mem_bytes"] > 0 and result["peak_mem_kind"] == "cpu_peak_rss"
    assert 0 <= result["val_auc"] <= 1 and 0 <= result["val_pf1"] <= 1
    assert result["env"]["torch"] == torch.__version__ and result["env"]["git_commit"]
    assert result["config"]["global_batch"] == 8
    assert "validation: 8 breasts" in (tmp_path / "train.log").read_text()
    assert (tmp_path / checkpoint.NAME).is_file()
    predictions = files.PREDICTION_TABLE.read(tmp_path / files.PREDICTIONS)
    assert len(predictions) == result["val_breasts"] == 8
    assert scores.evaluate(predictions)["val_auc"] == result["val_auc"]  # the file is what was scored
    assert result["val_positive_breasts"] == int(predictions["label"].sum())
    assert result["val_auc_per_label"] is None and result["val_images"] is None  # one label: scored per breast


def test_mfu_against_the_hardware_peak(train_cache, tmp_path):
    result = train.run_cell(cell(train_cache, peak_tflops=2.0, epochs=2, checkpoint=False), tmp_path)
    assert result["mfu"] == pytest.approx(result["achieved_tflops"] / 2.0)


def test_a_cell_is_deterministic_on_the_cpu(train_cache, tmp_path):
    first = train.run_cell(cell(train_cache, epochs=2), tmp_path / "a")
    second = train.run_cell(cell(train_cache, epochs=2), tmp_path / "b")
    assert first["loss_curve"] == second["loss_curve"]
    assert first["val_auc"] == second["val_auc"]


def test_accumulation_and_on_device_data_train_the_same_model(train_cache, tmp_path):
    curves = {}
    for name, overrides in {
        "8x1": {"micro_batch": 8},
        "4x2": {"micro_batch": 4},
        "2x4": {"micro_batch": 2},
        "on-device": {"micro_batch": 4, "data_on_device": "yes"},
    }.items():
        result = train.run_cell(
            cell(train_cache, precision="fp32", epochs=2, checkpoint=False, **overrides), tmp_path / name
        )
        curves[name] = result["loss_curve"]
        assert result["grad_accum"] == 8 // overrides["micro_batch"]
    for name in ("4x2", "2x4"):
        assert curves[name] == pytest.approx(curves["8x1"], rel=1e-4)
    assert curves["on-device"] == curves["4x2"]


def test_throughput_mode_runs_a_fixed_number_of_steps(train_cache, tmp_path):
    result = train.run_cell(
        cell(train_cache, mode="throughput", timing_warmup_steps=2, timed_steps=5, timing_windows=5), tmp_path
    )
    assert result["status"] == "ok" and result["steps"] == 7 and result["epoch_times_s"] == []
    assert result["val_auc"] is None and result["throughput_img_s"] > 0
    assert not (tmp_path / checkpoint.NAME).exists() and not (tmp_path / files.PREDICTIONS).exists()
    windows = result["throughput_windows_img_s"]
    assert len(windows) == 5 and result["throughput_img_s"] == pytest.approx(np.median(windows))
    assert result["throughput_ci_low_img_s"] <= result["throughput_img_s"] <= result["throughput_ci_high_img_s"]
    assert result["throughput_cv"] >= 0 and isinstance(result["throughput_unstable"], bool)


@pytest.mark.parametrize("attention, kernel", [("eager", "matmul-softmax"), ("sdpa", "sdpa-flash-cpu")])
def test_hugging_face_vit_cells(train_cache, tmp_path, attention, kernel):
    result = train.run_cell(
        cell(train_cache, family="hf", attention=attention, variant=f"hf-{attention}", channels=3, checkpoint=False),
        tmp_path,
    )
    assert result["status"] == "ok" and result["attention_backend"] == kernel
    assert result["seq_len"] == 17 and result["model"] == "hf/vit-tiny"


def test_a_kernel_this_machine_cannot_run_is_skipped(train_cache, tmp_path):
    result = train.run_cell(cell(train_cache, family="hf", attention="flash_attention_2"), tmp_path)
    assert result["status"] == "skipped" and "flash_attention_2" in result["message"]
    records.validate_metrics(json.loads((tmp_path / "metrics.json").read_text()))


def test_cache_staged_to_local_scratch(train_cache, tmp_path):
    result = train.run_cell(
        cell(train_cache, local_scratch=str(tmp_path / "scratch"), checkpoint=False), tmp_path / "run"
    )
    assert result["status"] == "ok"
    assert list((tmp_path / "scratch").glob("mammoscale-cache-*/img64/index.csv"))


def test_a_nan_loss_fails_the_cell_with_a_message(train_cache, tmp_path):
    settings = cell(train_cache, micro_batch=8, epochs=3, lr=1e12, warmup_fraction=0)
    code = cli.main(["--out", str(tmp_path), *[f"{k}={v}" for k, v in settings.items()]])
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert code == 1
    assert result["status"] == "failed" and "the training loss became nan" in result["message"]
    assert result["val_auc"] is None and result["throughput_img_s"] is None


def _cap_address_space():
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def test_an_out_of_memory_cell_is_a_result_and_exits_zero(train_cache, tmp_path):
    # 128 px with 1 px patches: 16,384 tokens; materialised attention needs a 6 GiB score tensor per layer
    settings = cell(train_cache, image_size=128, patch_size=1, attention="materialised", variant="materialised")
    proc = run_cli(tmp_path, settings, preexec_fn=_cap_address_space)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["status"] == "oom" and "can't allocate memory" in result["message"]
    assert result["steps"] == 0 and result["throughput_img_s"] is None and result["seq_len"] == 16384
    assert "out of memory" in (tmp_path / "train.log").read_text()
    assert result["oom_basis"] == "measured" and result["micro_batch_retries"] == [4, 2, 1]
    assert "down to 1 (tried 4, 2, 1)" in result["message"]


PROBE_OVERHEAD = 2**29
"""Address space a training process takes beyond its imports and its live tensors (thread stacks, malloc's
arenas, the allocator's slack): about 0.4-0.5 GiB measured here at 0.7-2.7 GiB of tensors."""


def _address_space_after_imports() -> int:
    code = (
        "import re, pathlib, x_transformers, mammoscale.train.cell; "
        "print(re.search(r'VmSize:\\s+(\\d+) kB', pathlib.Path('/proc/self/status').read_text()).group(1))"
    )
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) * 1024


def test_the_probe_settles_on_the_largest_micro_batch_that_fits(train_cache, tmp_path):
    # vit-tiny, materialised attention, 1,024 tokens, fp32: about 0.17 GiB an image; planned micro-batch 16
    settings = cell(
        train_cache,
        image_size=128,
        patch_size=4,
        attention="materialised",
        variant="materialised",
        mode="throughput",
        timing_warmup_steps=0,
        timed_steps=2,
        global_batch=16,
        micro_batch=16,
        precision="fp32",
    )

    def predicted(micro: int) -> int:
        return memory.step_peak(
            "xtransformers",
            "materialised",
            "vit-tiny",
            image_size=128,
            patch_size=4,
            channels=1,
            precision="fp32",
            micro_batch=micro,
            device="cpu",
        ).total

    # halfway between what micro-batch 8 and micro-batch 16 take: 16 fails, 8 fits (+-0.65 GiB either side)
    cap = _address_space_after_imports() + PROBE_OVERHEAD + (predicted(8) + predicted(16)) // 2
    proc = run_cli(tmp_path / "capped", settings, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    probed = json.loads((tmp_path / "capped" / "metrics.json").read_text())
    assert probed["status"] == "ok", probed["message"]
    assert probed["micro_batch_planned"] == 16 and probed["micro_batch_retries"] == [16]
    assert probed["micro_batch"] == 8 and probed["grad_accum"] == 2 and probed["global_batch"] == 16
    assert probed["predicted_peak_bytes"] == predicted(8) and probed["oom_basis"] is None
    assert "training with micro-batch 8, planned 16" in (tmp_path / "capped" / "train.log").read_text()

    fixed = train.run_cell({**settings, "micro_batch": 8}, tmp_path / "fixed")
    assert fixed["micro_batch"] == fixed["micro_batch_planned"] == 8 and fixed["micro_batch_retries"] == []
    assert probed["loss_curve"] == fixed["loss_curve"]  # the probe leaves no trace in the training


def test_a_killed_cell_resumes_from_its_checkpoint(train_cache, tmp_path):
    settings = cell(train_cache, image_size=128, patch_size=8, epochs=4, precision="fp32")
    reference = train.run_cell(settings, tmp_path / "uninterrupted")

    out = tmp_path / "preempted"
    proc = run_cli(out, settings)
    wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (out / "metrics.json").exists(), "the cell finished before it could be killed"
    saved = torch.load(out / checkpoint.NAME, weights_only=True)["epoch"]
    assert 1 <= saved < 4

    resumed = train.run_cell(settings, out)
    assert resumed["status"] == "ok" and resumed["resumed_from_epoch"] == saved
    assert resumed["epochs"] == 4 and len(resumed["epoch_times_s"]) == 4
    assert resumed["loss_curve"] == pytest.approx(reference["loss_curve"], rel=1e-5)
    assert resumed["val_auc"] == reference["val_auc"]


def mid_epoch(train_cache, **overrides) -> dict:
    """9 steps an epoch (19 training tiles, global batch 2), a checkpoint after every step (checkpoint_every_min)."""
    base = {"image_size": 64, "patch_size": 16, "epochs": 3, "global_batch": 2, "micro_batch": 2, "precision": "fp32"}
    return cell(train_cache, **{**base, "checkpoint_every_min": 1e-6, **overrides})


def test_checkpoints_every_few_minutes_resume_mid_epoch(train_cache, tmp_path, monkeypatch):
    """Killed right after the checkpoint of step 13 (the 4th of epoch 2), the cell resumes after it: the samples of the
    epoch's first 4 steps are skipped, and the loss curve is an uninterrupted run's."""
    settings = mid_epoch(train_cache)
    reference = train.run_cell({**settings, "checkpoint_every_min": 30}, tmp_path / "reference")
    preempt_after_checkpoint(monkeypatch, lambda state: (state["epoch"], state["epoch_step"]) == (1, 4))
    with pytest.raises(Preempted):
        train.run_cell(settings, tmp_path / "killed")
    resumed = train.run_cell(settings, tmp_path / "killed")
    assert resumed["resumed_from_epoch"] == 1 and resumed["resumed_from_step"] == 9 + 4
    assert (
        resumed["loss_curve"] == pytest.approx(reference["loss_curve"], rel=1e-6) and len(resumed["loss_curve"]) == 27
    )
    assert resumed["epochs"] == 3 and len(resumed["epoch_times_s"]) == 3 and resumed["val_auc"] == reference["val_auc"]


def test_a_signalled_cell_stops_after_the_step_with_a_checkpoint_and_resumes(train_cache, tmp_path, monkeypatch):
    """SIGUSR1 (SLURM's warning ahead of the time limit) during step 13: the cell finishes step 14, writes its
    checkpoint, and stops (Interrupted: no record); run again, it resumes after step 14 as if never stopped."""
    settings = mid_epoch(train_cache, checkpoint_every_min=30)
    reference = train.run_cell(settings, tmp_path / "reference")
    calls = []

    def signal_at_step_13(*args, **kwargs):
        value = step_end(*args, **kwargs)
        calls.append(1)
        if len(calls) == 13:
            os.kill(os.getpid(), stopping.SIGNAL)
        return value

    from mammoscale.train.backends import Backend

    step_end = Backend.step_end
    monkeypatch.setattr(Backend, "step_end", lambda self, loss, stop: signal_at_step_13(self, loss, stop))
    with pytest.raises(stopping.Interrupted, match="stopped when asked"):
        train.run_cell(settings, tmp_path / "stopped")
    monkeypatch.setattr(Backend, "step_end", step_end)
    saved = torch.load(tmp_path / "stopped" / checkpoint.NAME, weights_only=True)
    assert (saved["step"], saved["epoch"], saved["epoch_step"]) == (14, 1, 5)
    assert not (tmp_path / "stopped" / files.METRICS).exists()
    resumed = train.run_cell(settings, tmp_path / "stopped")
    assert resumed["resumed_from_step"] == 14 and resumed["epochs"] == 3
    assert resumed["loss_curve"] == pytest.approx(reference["loss_curve"], rel=1e-6)


def test_a_signalled_process_exits_with_the_try_again_code(train_cache, tmp_path):
    """From outside, as SLURM sends it: the command line exits 75 with a checkpoint and no record."""
    settings = mid_epoch(train_cache, epochs=40, checkpoint_every_min=30)
    out = tmp_path / "run"
    proc = run_cli(out, settings)
    wait_for_checkpoint(proc, out)
    proc.send_signal(stopping.SIGNAL)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == stopping.EXIT_CODE, output
    assert "SIGUSR1 (asked here): stopping after step" in output and not (out / files.METRICS).exists()
    assert torch.load(out / checkpoint.NAME, weights_only=True)["step"] > 9


def test_too_few_tiles_for_one_global_batch_is_a_user_error(train_cache, tmp_path):
    with pytest.raises(UserError, match="train split of the img64 cache has 19 tiles; at least 32"):
        train.run_cell(cell(train_cache, global_batch=32, micro_batch=8), tmp_path)


def test_a_missing_cache_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="build the cache for img64 first"):
        train.run_cell(cell(tmp_path / "nowhere"), tmp_path / "out")


def test_an_unexpected_error_still_leaves_a_failed_record(train_cache, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("broken input pipeline")

    monkeypatch.setattr(batches, "to_model_input", broken)
    with pytest.raises(RuntimeError, match="broken input pipeline"):
        train.run_cell(cell(train_cache), tmp_path)
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["status"] == "failed" and "broken input pipeline" in result["message"]


def test_the_command_line_takes_a_cell_file_and_overrides(train_cache, tmp_path):
    cell_file = tmp_path / "cell.yaml"
    cell_file.write_text("\n".join(f"{k}: {v}" for k, v in cell(train_cache, epochs=3).items()))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mammoscale.train",
            "--cell",
            str(cell_file),
            "--out",
            str(tmp_path / "out"),
            "epochs=1",
            "checkpoint=false",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert result["epochs"] == 1 and result["config"]["checkpoint"] is False


def test_a_bad_setting_on_the_command_line_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mammoscale.train",
            "--out",
            str(tmp_path),
            "image_size=64",
            "patch_size=16",
            "cache_root=x",
            "epoch=3",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown cell setting(s) epoch")
    assert "Traceback" not in proc.stderr


def test_parse_cell_refuses_malformed_input(tmp_path):
    with pytest.raises(UserError, match="expected key=value"):
        cli.parse_cell(None, ["epochs"])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        cli.parse_cell(str(tmp_path / "list.yaml"), [])
    with pytest.raises(UserError, match="cannot read cell file"):
        cli.parse_cell(str(tmp_path / "absent.yaml"), [])


def test_learning_rate_warms_up_then_decays():
    lr = [optim.learning_rate(s, total=100, warmup=10, base=1.0, min_fraction=0.1, scale=1) for s in range(100)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))
    assert lr[-1] == pytest.approx(0.1, abs=1e-3)
    scaled = optim.learning_rate(10, total=100, warmup=10, base=1.0, min_fraction=0.0, scale=4)
    assert scaled == pytest.approx(4.0)


def test_the_forced_flash_context_of_cuda_holds_across_steps(train_cache, tmp_path, monkeypatch):
    """The CUDA path forces the flash SDPA kernel around every step; on the CPU that forcing still
    admits the CPU flash kernel, so the same code path (a fresh context per step) runs here."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    monkeypatch.setattr(models, "kernel_context", lambda attention, device: sdpa_kernel([SDPBackend.FLASH_ATTENTION]))
    result = train.run_cell(cell(train_cache, epochs=2, checkpoint=False), tmp_path)
    assert result["status"] == "ok" and result["steps"] == 4 and result["val_auc"] is not None
    assert result["attention_backend"] == "sdpa-flash-cpu"


def test_long_runs_report_progress_in_the_log(train_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", 0.0)
    train.run_cell(cell(train_cache, epochs=2, checkpoint=False), tmp_path)
    lines = [line for line in (tmp_path / "train.log").read_text().splitlines() if " step " in line]
    assert [line.split(" step ")[1].split(":")[0] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert all("img/s over the last" in line for line in lines)


def test_input_wait_is_measured_and_shows_a_slow_loader(train_cache, tmp_path, monkeypatch):
    settings = cell(train_cache, mode="throughput", timing_warmup_steps=1, timed_steps=2, data_on_device="no")
    fast = train.run_cell(settings, tmp_path / "fast")
    assert 0 <= fast["input_wait_fraction"] < 1 and fast["loader_img_s"] > 0
    records.validate_metrics(fast)

    original = batches.Split.__getitem__

    def slow(self, i):
        time.sleep(0.1)
        return original(self, i)

    monkeypatch.setattr(batches.Split, "__getitem__", slow)
    starved = train.run_cell(settings, tmp_path / "slow")
    # 8 images a step at >= 0.1 s each: the loop waits >= 0.8 s a step for input
    assert starved["loader_img_s"] < 10.5
    assert starved["input_wait_fraction"] > fast["input_wait_fraction"]
    assert starved["input_wait_fraction"] > 0.5


def test_two_ranks_never_share_a_gpu(monkeypatch):
    """A rank whose local rank has no GPU of its own is refused, not mapped onto another rank's GPU."""
    from mammoscale.train import devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    assert devices.choose("cuda", 1) == torch.device("cuda", 1)
    with pytest.raises(UserError, match="local rank 2 has no GPU of its own: this node shows 2 GPU"):
        devices.choose("auto", 2)


@pytest.mark.parametrize("attention", ["mem_efficient", "cudnn"])
def test_a_forced_kernel_that_cannot_run_stops_the_cell_instead_of_running_another(train_cache, tmp_path, attention):
    """PyTorch's memory-efficient and cuDNN kernels, forced, on a CPU that has neither: no silent fallback to the CPU's
    flash or math kernel, a skipped cell (the plan refuses such a cell before it runs; by hand it is skipped)."""
    settings = cell(train_cache, attention=attention, variant=attention, mode="throughput", checkpoint=False)
    result = train.run_cell(settings, tmp_path)
    said = f"the {attention} kernel cannot run here: No viable backend"
    assert result["status"] == "skipped" and said in result["message"]
    assert result["attention_backend"] is None and result["throughput_img_s"] is None
    records.validate_metrics(json.loads((tmp_path / "metrics.json").read_text()))


def test_the_peak_is_the_steps_not_the_split_held_on_the_device(train_cache, tmp_path, monkeypatch):
    """The split held on the device is recorded apart (data_bytes) and left out of peak_mem_bytes."""
    monkeypatch.setattr(devices.PeakMemory, "peak", lambda self: 10**9)
    held = train.run_cell(cell(train_cache, mode="throughput", data_on_device="yes", checkpoint=False), tmp_path / "a")
    assert held["data_on_device"] is True and held["data_bytes"] == 19 * 64 * 64 + 19 * 8  # uint8 tiles, int64 labels
    assert held["peak_mem_bytes"] == 10**9 - held["data_bytes"]
    streamed = train.run_cell(
        cell(train_cache, mode="throughput", data_on_device="no", checkpoint=False), tmp_path / "b"
    )
    assert streamed["data_on_device"] is False and streamed["data_bytes"] == 0 and streamed["peak_mem_bytes"] == 10**9


def test_the_probe_runs_with_the_split_where_the_run_holds_it(train_cache, tmp_path, monkeypatch):
    """The split is on the device before the probe (its bytes count against the micro-batch there, as in training),
    and the probe's images are the held ones; a cell left to decide on a CPU (auto) streams it."""
    seen = []
    first = batches.Batches.first

    def spy(self, n):
        tiles, labels = first(self, n)
        shared = (
            tiles.untyped_storage().data_ptr() == self.tiles.untyped_storage().data_ptr() if self.on_device else None
        )
        seen.append((self.on_device, self.device_bytes, shared))
        return tiles, labels

    monkeypatch.setattr(batches.Batches, "first", spy)
    held = train.run_cell(cell(train_cache, mode="throughput", data_on_device="yes", checkpoint=False), tmp_path / "a")
    assert seen == [(True, held["data_bytes"], True)] and held["data_bytes"] == memory.split_bytes(19, 64)
    seen.clear()
    auto = train.run_cell(cell(train_cache, mode="throughput", data_on_device="auto", checkpoint=False), tmp_path / "b")
    assert seen == [(False, 0, None)] and auto["data_on_device"] is False


def test_a_pass_that_leaves_the_gpu_too_little_free_is_not_a_fit():
    """The probe's second question on a GPU: the device's used memory at the pass's peak (the allocator's reserve with
    its fragments, and the CUDA context and NCCL's buffers outside it) must leave FREE_MARGIN of the device free."""
    total = 80 * 2**30
    roomy = devices.DeviceUse(reserved_peak=70 * 2**30, outside=2 * 2**30, total=total)
    assert roomy.used_peak == 72 * 2**30 and probe.over_margin(roomy) is None
    tight = devices.DeviceUse(reserved_peak=76 * 2**30, outside=2 * 2**30, total=total)
    said = probe.over_margin(tight)
    assert said.startswith("78.0 GiB of the device's 80.0 GiB used at the pass's peak (76.0 GiB reserved")
    assert "less than 3% left free" in said
    assert probe.over_margin(None) is None and devices.device_use(torch.device("cpu")) is None


def test_labels_and_inputs_are_copied_without_blocking():
    """A blocking label copy would synchronise every micro-batch; both copies are non_blocking (seen on 'meta')."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Copies(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.flags = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func._schema.name == "aten::_to_copy" and (kwargs or {}).get("device") is not None:
                self.flags.append((kwargs or {}).get("non_blocking", False))  # a copy to another device
            return func(*args, **(kwargs or {}))

    with Copies() as seen:
        inputs, labels = batches.to_device(
            torch.zeros(2, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), 1, torch.device("meta")
        )
    assert inputs.device.type == labels.device.type == "meta" and inputs.dtype == torch.float32
    assert seen.flags == [True, True]


def test_loader_workers_fit_the_nodes_cpus_and_say_so(train_cache, tmp_path):
    cpus = len(os.sched_getaffinity(0))
    result = train.run_cell(
        cell(train_cache, mode="throughput", data_on_device="no", loader_workers=64, checkpoint=False), tmp_path
    )
    assert result["status"] == "ok" and result["loader_workers"] == min(64, cpus - 1)
    assert (
        f"data loader: {cpus - 1} worker(s) per rank (asked 64; {cpus} CPU(s) shared by 1 rank(s)"
        in (tmp_path / "train.log").read_text()
    )


@pytest.mark.parametrize(
    "asked, cpus, ranks, batch, memory, plan",
    [
        (8, 48, 8, 1, 10**12, (5, 2)),  # 8 ranks x 8 workers on 48 CPUs: 6 CPUs a rank, one its own
        (8, 2, 1, 1, 10**12, (1, 2)),
        (8, 8, 8, 1, 10**12, (0, None)),  # no CPU to spare: the rank loads its own batches
        (8, 64, 8, 64 * 2048**2, 100 * 10**9, (5, 1)),  # 2048 px, micro-batch 64: memory caps prefetch, then workers
        (2, 16, 1, 10**6, None, (2, 2)),  # unknown memory: CPUs alone
    ],
)
def test_loader_plans(asked, cpus, ranks, batch, memory, plan):
    chosen = batches.plan_loader(asked, cpus=cpus, local_ranks=ranks, batch_bytes=batch, memory_bytes=memory)
    assert (chosen.workers, chosen.prefetch) == plan
    if memory and chosen.workers:
        assert ranks * chosen.workers * chosen.prefetch * batch <= batches.IN_FLIGHT_SHARE * memory


@pytest.mark.parametrize(
    "message, oom",
    [
        ("CUDA out of memory. Tried to allocate 2.00 GiB", True),
        ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory", True),
        ("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", True),
        ("cuDNN error: CUDNN_STATUS_ALLOC_FAILED", True),
        ("CUDA error: an illegal memory access was encountered", False),
    ],
)
def test_allocation_failures_of_cublas_and_cudnn_are_oom(message, oom):
    assert devices.is_oom(RuntimeError(message)) is oom


def test_a_split_without_a_positive_breast_stops_training_with_a_clear_error(train_cache, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(train_cache, root)
    index = files.TILE_TABLE.read(root / "img64" / "index.csv")
    assert batches.open_split(root, 64, "val", both_classes=True).labels.sum() > 0
    cache.write_index(  # a consistent index (its check rewritten) whose val split has no positive breast
        index.assign(label=index["label"].where(index["split"] != "val", 0)),
        root / "img64" / "index.csv",
        root / "img64" / "index.json",
    )
    with pytest.raises(
        UserError, match=r"the val split of the img64 cache has 0 positive breast\(s\) of \d+: .*both classes"
    ):
        batches.open_split(root, 64, "val", both_classes=True)
    assert len(batches.open_split(root, 64, "val")) > 0  # a throughput cell needs no labels
