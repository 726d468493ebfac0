"""The grid as data: cells, each cell's own settings, launch commands, and a cell run as a workflow job."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from mammoscale import files
from mammoscale.config import defaults
from mammoscale.errors import UserError
from mammoscale.plan import grid, launch
from mammoscale.plan.grid import Cell
from mammoscale.plan.launch import launch_command
from mammoscale.plan.settings import Settings
from mammoscale.train import checkpoint, run_job

TRAIN = defaults()["train"]
FLASH = {"family": "xtransformers", "attention": "flash"}
EAGER = {"family": "hf", "attention": "eager"}
DENSENET = {"family": "densenet"}
CPU = {"launcher": "none", "nodes": 1, "gpus_per_node": 0, "micro_batch": 1, "precision": "fp32"}
GPU8 = {"launcher": "torchrun", "nodes": 1, "gpus_per_node": 8, "micro_batch": 64, "peak_tflops": 312.0}


def test_cells_skip_patches_that_do_not_divide():
    cells = grid.cells([384, 512], [16, 32, 256], {"flash": FLASH}, ["a"])
    assert ("a", "flash", 384, 16) in cells and ("a", "flash", 512, 256) in cells
    assert ("a", "flash", 384, 256) not in cells and len(cells) == 5
    assert grid.missing_cells([384, 512], [16, 32, 256]) == ["img384_p256"]


def test_unknown_hardware_is_named():
    with pytest.raises(UserError, match="grid.hardware names h100, not among the hardware profiles"):
        grid.check_hardware(["local-cpu", "h100"], {"local-cpu": CPU})


def test_a_cell_takes_its_profile_variant_and_train_settings():
    cell = grid.cell_settings(
        Cell("xe9680", "hf-eager", 512, 16),
        profile=GPU8,
        variant={"family": "hf", "attention": "eager"},
        train=TRAIN,
        cache_root="results/cache",
        local_scratch="/local",
        micro_batch=48,
    )
    settings = Settings.from_dict(cell)
    assert settings.backend == "ddp" and settings.device == "cuda" and settings.micro_batch == 48
    assert settings.family == "hf" and settings.peak_tflops == 312.0 and settings.local_scratch == "/local"
    assert settings.precision == TRAIN["precision"] and settings.mode == TRAIN["mode"] == "throughput"
    cpu = grid.cell_settings(
        Cell("local-cpu", "flash", 256, 8),
        profile=CPU,
        variant={"family": "xtransformers", "attention": "flash"},
        train=TRAIN,
        cache_root="c",
        local_scratch=None,
        micro_batch=1,
    )
    assert cpu["precision"] == "fp32" and cpu["device"] == "cpu" and cpu["backend"] == "none"
    full = grid.cell_settings(
        Cell("local-cpu", "flash", 256, 8),
        profile=CPU,
        variant={"family": "xtransformers", "attention": "flash"},
        train={**TRAIN, "full_mode_at": [{"image_size": 256, "patch_size": 8}]},
        cache_root="c",
        local_scratch=None,
        micro_batch=1,
    )
    assert full["mode"] == "full" and "full_mode_at" not in full and Settings.from_dict(full).mode == "full"


def test_launch_commands(tmp_path, monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    target = ["-m", "mammoscale.train", "--cell", "c.yaml", "--out", "out", "--rank-log"]
    assert launch_command(CPU, "c.yaml", "out") == [sys.executable, *target]
    single = launch_command(GPU8, "c.yaml", "out")
    assert single[0].endswith("torchrun") and single[1:3] == ["--standalone", "--nproc-per-node=8"]
    # in the SLURM executor's job (no SLURM_NTASKS: the plugin drops them), one node too is a step of a task per rank
    step = launch_command(GPU8, "c.yaml", "out", env={"SLURM_JOB_ID": "7"})
    assert step[:5] == ["srun", "--nodes=1", "--ntasks=8", "--ntasks-per-node=8", "--gpus-per-node=8"]
    assert step[-7:] == target and launch_command(CPU, "c", "o", env={"SLURM_JOB_ID": "7"})[:3] == [
        "srun",
        "--nodes=1",
        "--ntasks=1",
    ]
    # an allocation of one's own with one task for 8 ranks: torchrun inside it
    assert launch_command(GPU8, "c", "o", env={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"})[0].endswith("torchrun")
    multi = launch_command({**GPU8, "nodes": 4, "cpus_per_task": 64}, "c.yaml", "out")
    assert multi[:4] == ["srun", "--nodes=4", "--ntasks=32", "--ntasks-per-node=8"] and multi[-7:] == target
    horovod = launch_command({"launcher": "horovod", "nodes": 1, "gpus_per_node": 0, "micro_batch": 1}, "c.yaml", "out")
    assert horovod[0].endswith("horovodrun") and horovod[1:5] == ["-np", "1", "-H", "localhost:1"]
    assert "--gloo" in horovod
    # several nodes: srun for Horovod too (no ssh to the other nodes, no horovodrun)
    hosts = launch_command(
        {"launcher": "horovod", "nodes": 2, "gpus_per_node": 4, "cpus_per_task": 16, "micro_batch": 1}, "c.yaml", "out"
    )
    assert hosts[:4] == ["srun", "--nodes=2", "--ntasks=8", "--ntasks-per-node=4"] and "--gloo" not in hosts
    with pytest.raises(UserError, match="launcher none runs one process"):
        launch_command({**CPU, "nodes": 2}, "c", "o")


def job_cell(cache_root, **overrides):
    return {
        "cache_root": str(cache_root),
        "image_size": 64,
        "patch_size": 16,
        "mode": "full",
        "epochs": 2,
        "global_batch": 8,
        "micro_batch": 8,
        "loader_workers": 0,
        "precision": "fp32",
        **overrides,
    }


def test_a_job_drops_a_finished_or_foreign_checkpoint_and_resumes_an_unfinished_one(train_cache, tmp_path):
    launch = {"launcher": "none", "nodes": 1, "gpus_per_node": 0}
    first = run_job(job_cell(train_cache), launch, tmp_path)
    assert first["status"] == "ok" and (tmp_path / "cell.yaml").is_file()
    again = run_job(job_cell(train_cache), launch, tmp_path)  # --forcerun of a finished cell: redo it
    assert again["resumed_from_epoch"] is None and again["steps"] == first["steps"]
    state = torch_load(tmp_path)
    state["epoch"] = 1
    checkpoint.save(tmp_path, state)  # as if the job had been preempted after epoch 1
    resumed = run_job(job_cell(train_cache), launch, tmp_path)
    assert resumed["resumed_from_epoch"] == 1
    changed = run_job(job_cell(train_cache, lr=1e-4), launch, tmp_path)  # the config changed: start afresh
    assert changed["resumed_from_epoch"] is None


def torch_load(out_dir):
    return torch.load(out_dir / checkpoint.NAME, weights_only=True)


def test_a_failed_cell_fails_the_job_and_keeps_its_record_apart(train_cache, tmp_path):
    with pytest.raises(UserError, match="failed: the training loss became nan"):
        run_job(
            job_cell(train_cache, lr=1e12, warmup_fraction=0, epochs=3),
            {"launcher": "none", "nodes": 1, "gpus_per_node": 0},
            tmp_path,
        )
    # Snakemake removes a failed job's metrics.json; the record stays for the tables
    assert not (tmp_path / "metrics.json").exists()
    record = json.loads((tmp_path / files.FAILED_METRICS).read_text())
    assert record["status"] == "failed" and "nan" in record["message"]
    # the next attempt starts without it
    run_job(job_cell(train_cache, checkpoint=False), {"launcher": "none", "nodes": 1, "gpus_per_node": 0}, tmp_path)
    assert (tmp_path / "metrics.json").is_file() and not (tmp_path / files.FAILED_METRICS).exists()


def test_a_launched_job_reads_the_metrics_its_processes_wrote(train_cache, tmp_path, monkeypatch):
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "NCCL_DEBUG", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    result = run_job(
        job_cell(train_cache, backend="ddp", checkpoint=False),
        {"launcher": "torchrun", "nodes": 1, "gpus_per_node": 0, "nccl_debug": "WARN"},
        tmp_path,
    )
    assert result["status"] == "ok" and result["backend"] == "ddp"
    # every rank starts with NCCL's warnings on and the allocator's expandable segments, and logs to its own file
    assert result["env"]["nccl_debug"] == "WARN" and result["env"]["pytorch_cuda_alloc_conf"] == launch.ALLOCATOR
    assert "status ok" in (tmp_path / "rank0.log").read_text()


def test_a_failed_cells_record_keeps_the_end_of_each_ranks_log(tmp_path):
    from mammoscale.train import job

    (tmp_path / "rank0.log").write_text("".join(f"NCCL INFO line {i}\n" for i in range(100_000)) + "the end\n")
    (tmp_path / "rank1.log").write_text("")
    tails = job.log_tails(tmp_path, 3)
    assert tails[0][-1] == "the end" and tails[0][0] == "NCCL INFO line 99981" and len(tails[0]) == job.TAIL_LINES
    assert tails[1] == [] and 2 not in tails


def test_every_rank_starts_with_nccls_warnings_and_expandable_segments_unless_told_otherwise():
    assert launch.rank_env({"nccl_debug": "WARN"}, env={}) == {
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        "NCCL_DEBUG": "WARN",
    }
    assert launch.rank_env({"nccl_debug": None}, env={"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"}) == {}
    assert launch.rank_env({"nccl_debug": "INFO"}, env={"NCCL_DEBUG": "TRACE"}) == {
        "PYTORCH_CUDA_ALLOC_CONF": launch.ALLOCATOR
    }


def test_a_cell_on_several_nodes_outside_a_slurm_job_is_refused_before_srun(train_cache, tmp_path, monkeypatch):
    """srun outside a job would ask SLURM for an allocation of its own, or be missing: one line instead."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(UserError, match="a cell on 2 nodes runs inside a SLURM job"):
        run_job(
            job_cell(train_cache, backend="ddp", checkpoint=False),
            {"launcher": "torchrun", "nodes": 2, "gpus_per_node": 0, "cpus_per_task": 1},
            tmp_path,
        )
    assert not (tmp_path / files.METRICS).exists()


def test_extra_cells_join_the_grid_once_and_are_checked():
    variants = {"flash": FLASH, "eager": EAGER, "densenet": DENSENET}
    product = grid.cells([384, 512], [16], variants, ["a"])
    extra = [
        {"hardware": "b", "variant": "flash", "image_size": 512, "patch_size": 16},
        {"hardware": "a", "variant": "flash", "image_size": 512, "patch_size": 16},
    ]  # already in the product
    cells = grid.with_extra_cells(
        product, extra, image_sizes=[384, 512], variants=variants, profiles={"a": {}, "b": {}}
    )
    assert cells == product + [("b", "flash", 512, 16)]
    bad = [
        ({"hardware": "c"}, "no hardware profile 'c'"),
        ({"variant": "sdpa"}, "no variant 'sdpa'"),
        ({"image_size": 1024}, "image size 1024 is not in grid.image_sizes"),
        ({"patch_size": 24}, "patch size 24 does not divide 512"),
        ({"patch_size": None}, r"variant flash \(xtransformers\) is a vision transformer: give its patch_size"),
        ({"variant": "densenet"}, r"b/densenet/img512_p16: variant densenet \(densenet\) has no patch size: leave "),
        ({"variant": "densenet"}, r"has no patch size: leave patch_size out \(not 16\)$"),
    ]
    for change, message in bad:
        cell = {**extra[0], **change}
        with pytest.raises(UserError, match=message):
            grid.with_extra_cells(
                product, [cell], image_sizes=[384, 512], variants=variants, profiles={"a": {}, "b": {}}
            )


def test_a_cells_job_is_a_task_per_rank_signalled_ahead_of_its_limit():
    from mammoscale.plan.launch import job_request

    gpu = job_request({**GPU8, "cpus_per_task": 48, "runtime_min": 60, "gpu_model": "a100"}, 900)
    assert gpu["tasks"] == 8 and gpu["cpus_per_task"] == 6 and gpu["nodes"] == 1 and gpu["mpi"] == "srun"
    assert gpu["slurm_extra"] == "--ntasks-per-node=8 --gpus-per-node=a100:8 --signal=USR1@900"
    assert gpu["gpu"] is None and gpu["gpu_model"] is None  # per node: no --gpus, which with tasks is --ntasks-per-gpu
    bound = job_request({**GPU8, "cpus_per_task": 48, "runtime_min": 60, "slurm_extra": "--gres-flags=enforce-binding"})
    assert bound["slurm_extra"] == "--ntasks-per-node=8 --gpus-per-node=8 --gres-flags=enforce-binding"  # the cluster's
    cpu = job_request({**CPU, "runtime_min": 60})
    assert cpu["tasks"] == 1 and cpu["cpus_per_task"] == 1 and cpu["slurm_extra"] == "--ntasks-per-node=1"
    assert cpu["constraint"] == "" and cpu["mpi"] == ""  # one task: the plugin submits it as no MPI job


def test_a_cell_on_several_nodes_asks_for_a_task_per_rank_from_the_batch_script():
    from mammoscale.plan.launch import job_request

    gpu = job_request({**GPU8, "nodes": 2, "cpus_per_task": 48, "runtime_min": 60, "gpu_model": "a100"})
    assert gpu["tasks"] == 16 and gpu["cpus_per_task"] == 6 and gpu["nodes"] == 2 and gpu["mpi"] == "srun"
    assert gpu["slurm_extra"] == "--ntasks-per-node=8 --gpus-per-node=a100:8"
    assert gpu["gpu"] is None and gpu["gpu_model"] is None  # per node, not a total SLURM may spread unevenly
    cpu = job_request({**CPU, "launcher": "torchrun", "nodes": 3, "cpus_per_task": 4, "runtime_min": 60})
    assert cpu["tasks"] == 3 and cpu["cpus_per_task"] == 4 and cpu["slurm_extra"] == "--ntasks-per-node=1"


def test_a_cnn_variant_has_one_cell_per_image_size_named_without_a_patch():
    cells = grid.cells([384, 512], [16, 32], {"flash": FLASH, "densenet": DENSENET}, ["a"])
    cnn = [cell for cell in cells if cell.variant == "densenet"]
    assert cnn == [("a", "densenet", 384, None), ("a", "densenet", 512, None)] and len(cells) == 6
    assert [cell.name for cell in cnn] == ["a/densenet/img384", "a/densenet/img512"]
    assert str(cnn[0].run_dir()) == f"{files.RUNS}/a/densenet/img384"
    extra = {"hardware": "b", "variant": "densenet", "image_size": 512}  # its patch_size left out
    joined = grid.with_extra_cells(
        cells, [extra], image_sizes=[384, 512], variants={"densenet": DENSENET}, profiles={"a": {}, "b": {}}
    )
    assert joined[-1] == ("b", "densenet", 512, None)
    settings = grid.cell_settings(
        cnn[0], profile=CPU, variant=DENSENET, train=TRAIN, cache_root="c", local_scratch=None, micro_batch=1
    )
    assert settings["patch_size"] is None and settings["attention"] == "none"
    assert settings["model_size"] == "densenet-121" and settings["family"] == "densenet"


def test_the_claims_baseline_is_never_a_variant_without_attention():
    assert grid.choose_baseline({"densenet": DENSENET, "flash": FLASH}, None) is None
    materialised = {"family": "xtransformers", "attention": "materialised"}
    assert grid.choose_baseline({"densenet": DENSENET, "m": materialised}, None) == "m"
    assert grid.choose_baseline({"densenet": DENSENET, "m": materialised, "hf-eager": EAGER}, None) == "hf-eager"
    with pytest.raises(UserError) as refused:
        grid.choose_baseline({"densenet": DENSENET, "m": materialised}, "densenet")
    assert str(refused.value) == (
        "figures.baseline is 'densenet', a variant without attention (family densenet): the baseline of a speed-up "
        "has a materialised attention; choose one of m, or null"
    )
    with pytest.raises(UserError, match=r"a variant with a flash attention \(flash\).*none in grid.variants, or null"):
        grid.choose_baseline({"densenet": DENSENET, "flash": FLASH}, "flash")
