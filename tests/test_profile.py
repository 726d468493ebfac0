"""Where a cell's time goes: named ranges in the loop, a profile of any cell (its trace, operators, breakdown and
figure, by the library, the command line and Snakemake), and the energy a cell's training used."""

from __future__ import annotations

import contextlib
import ctypes.util
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from mammoscale import files, train
from mammoscale.errors import UserError
from mammoscale.plan import grid
from mammoscale.report import breakdown as breakdown_figure
from mammoscale.report import plots
from mammoscale.train import energy, job, profiling, ranges, record
from mammoscale.train.loop import Progress

from conftest import REPO
from test_workflow import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
NAMED = (ranges.STEP, *ranges.PHASES)
ONE_PROCESS = {"launcher": "none", "nodes": 1, "gpus_per_node": 0, "cpus_per_task": 2}


def cell(cache_root: Path, **overrides) -> dict:
    """vit-tiny at 64 px, patch 32: two micro-batches a step."""
    base = {
        "cache_root": str(cache_root),
        "image_size": 64,
        "patch_size": 32,
        "global_batch": 4,
        "micro_batch": 2,
        "loader_workers": 0,
        "precision": "fp32",
    }
    return {**base, **overrides}


def profiled(settings: dict) -> dict:
    """A cell's settings as its profile runs them: 1 warm-up step, 2 profiled."""
    return grid.profile_settings(settings, steps=2, warmup_steps=1)


def check_profile(out: Path, steps: int) -> pd.DataFrame:
    """The profile in ``out``: a trace holding every named range, the operators and the breakdown; its shares."""
    events = json.loads((out / files.PROFILE_TRACE).read_text())["traceEvents"]
    assert set(NAMED) <= {event.get("name") for event in events}
    operators = files.OPERATOR_TABLE.read(out / files.PROFILE_OPERATORS)
    assert list(operators.columns) == list(files.OPERATOR_TABLE.columns)
    assert 0 < len(operators) <= profiling.TOP_OPERATORS and "aten::mm" in set(operators["name"])
    assert not set(operators["name"]) & set(NAMED) and operators["self_device_s"].isna().all()  # no device here
    steps_found = files.BREAKDOWN_TABLE.read(out / files.PROFILE_BREAKDOWN)
    assert list(steps_found.columns) == list(files.BREAKDOWN_TABLE.columns)
    assert list(dict.fromkeys(steps_found["phase"])) == [*ranges.PHASES, ranges.OTHER]
    assert sorted(steps_found["step"].unique()) == list(range(1, steps + 1))
    assert steps_found.groupby("step")["share"].sum().to_numpy() == pytest.approx(1.0, abs=1e-6)
    assert (steps_found["seconds"] >= 0).all()
    return steps_found


# the named ranges


def test_the_ranges_are_a_shared_null_context_until_a_run_turns_them_on():
    assert isinstance(ranges.phase(ranges.FORWARD), contextlib.nullcontext) and not ranges.active()
    with ranges.enabled(record=True, nvtx=True):
        assert ranges.active() and not isinstance(ranges.phase(ranges.FORWARD), contextlib.nullcontext)
    assert not ranges.active()
    cost = ranges.per_call_cost(calls=20_000)
    assert cost["off"] < 2.0 and cost["off"] < cost["on, no profiler"]


def test_the_ranges_do_not_change_what_a_cell_trains(train_cache, tmp_path, monkeypatch):
    """With the ranges off (every run), and on without a profiler: the same losses; the energy is not measured on
    a machine without NVML and RAPL, and says so."""
    seen = []
    metrics = record.metrics
    monkeypatch.setattr(record, "metrics", lambda *args, **kwargs: seen.append(args[2]) or metrics(*args, **kwargs))
    plain = train.run_cell(cell(train_cache, timed_steps=3), tmp_path / "plain")
    with ranges.enabled(record=True, nvtx=False):
        ranged = train.run_cell(cell(train_cache, timed_steps=3), tmp_path / "ranged")
    assert plain["status"] == ranged["status"] == "ok" and plain["steps"] == 4
    assert plain["loss_curve"] == ranged["loss_curve"]
    if not energy.rapl_zones():
        assert all(progress.energy_j is None and progress.energy_source is None for progress in seen)
        assert energy.record_fields(seen[0], 8) == {"energy_j": None, "energy_source": None, "energy_per_img_j": None}


# a profile


def test_a_profile_of_a_cell_holds_every_named_range_and_where_the_time_went(train_cache, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="mammoscale"):
        result = job.run_profile(profiled(cell(train_cache)), ONE_PROCESS, tmp_path)
    assert result["status"] == "ok" and result["steps"] == 3 and result["mode"] == "throughput"
    steps = check_profile(tmp_path, steps=2)
    assert steps.groupby("phase")["seconds"].sum()[[ranges.FORWARD, ranges.BACKWARD]].min() > 0
    logged = caplog.text
    assert str(tmp_path / files.PROFILE_TRACE) in logged and profiling.PERFETTO in logged
    assert f"tensorboard --logdir {tmp_path}" in logged
    png, svg = tmp_path / "breakdown.png", tmp_path / "breakdown.svg"
    plots.save(breakdown_figure.draw(steps, "local-cpu/flash/img64_p32"), png, svg, dpi=60)
    assert png.stat().st_size > 1000 and svg.is_file()


def test_a_cell_that_cannot_run_here_is_said_not_profiled(train_cache, tmp_path, caplog):
    """A kernel this CPU cannot run (or an OOM) is a finding: the profile says so, and the report still builds."""
    skipped = cell(train_cache, family="hf", attention="flash_attention_2")
    with caplog.at_level(logging.WARNING, logger="mammoscale"):
        result = job.run_profile(profiled(skipped), ONE_PROCESS, tmp_path)
    assert result["status"] == "skipped" and "not profiled: the cell ended skipped" in caplog.text
    trace = json.loads((tmp_path / files.PROFILE_TRACE).read_text())
    assert trace["traceEvents"] == [] and trace["mammoscale"].startswith("not profiled")
    steps = files.BREAKDOWN_TABLE.read(tmp_path / files.PROFILE_BREAKDOWN)
    assert steps.empty and files.OPERATOR_TABLE.read(tmp_path / files.PROFILE_OPERATORS).empty
    fig = breakdown_figure.draw(steps, "local-cpu/hf-fa2/img64_p32")
    assert "not profiled" in " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    png = tmp_path / "breakdown.png"
    plots.save(fig, png, tmp_path / "breakdown.svg", dpi=60)
    said = breakdown_figure.section(png, tmp_path / files.PROFILE_OPERATORS, "local-cpu/hf-fa2/img64_p32", "trace")
    assert "was not profiled" in said


def test_ddp_all_reduce_counts_as_gradient_communication(train_cache, tmp_path):
    """Two DDP ranks under torchrun (gloo), started as the cell's job starts them: each writes its trace, and the
    all-reduce DDP runs inside the backward pass is gradient communication."""
    launch = {**ONE_PROCESS, "launcher": "torchrun", "gpus_per_node": 2}
    settings = cell(train_cache, backend="ddp", device="cpu", micro_batch=1)
    job.run_profile(profiled(settings), launch, tmp_path)
    steps = check_profile(tmp_path, steps=2)
    assert (steps[steps["phase"] == ranges.COMMUNICATION]["seconds"] > 0).all()
    assert (tmp_path / files.fill(files.PROFILE_RANK_TRACE, rank=1)).is_file()


@pytest.mark.parametrize("ranged", ["profile", "nvtx"])
def test_the_command_line_names_the_ranges(train_cache, tmp_path, ranged):
    """``python -m mammoscale.train --cell CELL --out DIR --ranges nvtx`` is what ``nsys profile -t cuda,nvtx`` runs
    (docs/profiling.md); ``--ranges profile`` profiles the timed steps."""
    cell_file = tmp_path / "cell.yaml"
    cell_file.write_text(json.dumps(cell(train_cache, timed_steps=2)))
    out = tmp_path / "out"
    command = ["-m", "mammoscale.train", "--cell", str(cell_file), "--out", str(out), "--ranges", ranged]
    proc = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    if ranged == "profile":
        check_profile(out, steps=2)
    else:
        assert not (out / files.PROFILE_TRACE).exists()
        assert "NVTX ranges are a GPU's" in (out / files.TRAIN_LOG).read_text()


def test_a_bad_ranges_request_is_one_line(train_cache, tmp_path, monkeypatch):
    monkeypatch.setenv(ranges.ENV, "perf")
    with pytest.raises(UserError, match="MAMMOSCALE_RANGES must be one of profile, nvtx, not 'perf'"):
        train.run_cell(cell(train_cache), tmp_path)


def test_profiling_a_full_cell_says_only_throughput_cells_are(train_cache, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(ranges.ENV, "profile")
    with caplog.at_level(logging.WARNING, logger="mammoscale"):
        result = train.run_cell(cell(train_cache, mode="full", epochs=1, checkpoint=False), tmp_path)
    assert result["status"] == "ok" and not (tmp_path / files.PROFILE_TRACE).exists()
    assert "no profile: only a throughput cell's timed steps are profiled" in caplog.text


def test_the_breakdown_gives_collectives_their_time_and_the_rest_to_the_host_phase():
    step = profiling.Span(ranges.STEP, 0, 100, thread=1)
    found = [
        step,
        profiling.Span(ranges.DATA_WAIT, 0, 10, thread=1),
        profiling.Span(ranges.FORWARD, 10, 30, thread=1),
        profiling.Span(ranges.BACKWARD, 30, 80, thread=1),
        profiling.Span("gloo:all_reduce", 50, 70, thread=2),  # on the process group's thread, inside backward
        profiling.Span(ranges.OPTIMISER_STEP, 80, 95, thread=1),
        profiling.Span(ranges.FORWARD, 200, 300, thread=1),  # another step's
    ]
    steps = profiling.breakdown(found).set_index("phase")
    expected = {"data wait": 10, "forward": 20, "backward": 30, "gradient communication": 20, "optimiser step": 15}
    assert steps["seconds"].to_dict() == pytest.approx({**{k: v / 1e6 for k, v in expected.items()}, "other": 5e-6})
    assert steps["share"].sum() == pytest.approx(1.0)
    with pytest.raises(UserError, match="no training step"):
        profiling.breakdown(found[1:])


@pytest.mark.parametrize(
    "name, collective",
    [
        ("gloo:all_reduce", True),
        ("c10d::allreduce_", True),
        ("ncclDevKernel_AllReduce_Sum_f32_RING_LL", True),
        ("nccl:all_gather", True),
        ("record_param_comms", True),
        ("aten::broadcast_tensors", False),
        ("aten::mm", False),
    ],
)
def test_collectives_are_known_by_name(name, collective):
    assert profiling.is_collective(name) is collective


@pytest.mark.workflow
def test_profile_reference_profiles_the_reports_cell_with_its_settings(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    snakemake(workdir, "-c2", "profile_reference", "--configfile", "config/test.yaml")
    out = workdir / files.fill(files.PROFILE, hardware="local-cpu", variant="flash", image_size=128, patch_size=32)
    check_profile(out, steps=3)  # the schema's profile.steps
    assert (out / files.fill(files.PROFILE_FIGURE, ext="png")).stat().st_size > 1000
    profiled = yaml.safe_load((out / files.CELL_SETTINGS).read_text())  # the cell's own settings, in throughput mode
    assert (profiled["hardware"], profiled["variant"], profiled["micro_batch"]) == ("local-cpu", "flash", 1)
    assert (profiled["mode"], profiled["timing_warmup_steps"], profiled["timed_steps"]) == ("throughput", 1, 3)
    other = files.fill(files.PROFILE, hardware="local-cpu-b", variant="flash", image_size=64, patch_size=32)
    target = f"{other}/{files.fill(files.PROFILE_FIGURE, ext='png')}"
    planned = planned_jobs(snakemake(workdir, "-n", target, "--configfile", "config/test.yaml"))
    assert planned["profile_cell"] == planned["profile_figure"] == 1 and "train_cell" not in planned


@pytest.mark.workflow
def test_the_documented_targets_profile_on_the_default_study(tmp_path):
    """docs/profiling.md's snakemake commands, planned on the default config (config/config.yaml)."""
    workdir = copy_workflow(tmp_path / "wf")
    page = (REPO / "docs" / "profiling.md").read_text()
    targets = re.findall(r"^snakemake --cores all (\S+)", page, re.MULTILINE)
    assert targets == ["profile_reference", "results/profiles/local-cpu/flash/img384_p32/breakdown.png"]
    for target in targets:
        planned = planned_jobs(snakemake(workdir, "-n", "--cores", "all", target))
        assert planned["profile_cell"] == planned["profile_figure"] == 1 and "train_cell" not in planned


# energy


def test_rapl_counters_wrap_around():
    assert energy.rapl_delta_uj(100, 350, 1000) == 250
    assert energy.rapl_delta_uj(900, 50, 1000) == 150  # past 1000, back to 0
    assert energy.joules_of(1_000, 3_500) == 2.5


def test_energy_adds_up_the_ranks_or_gives_none():
    assert energy.combine([(1.5, "nvml"), (2.5, "nvml")]) == (4.0, "nvml")
    assert energy.combine([(10.0, "rapl"), (0.0, "rapl")]) == (10.0, "rapl")  # the node's other rank counts 0
    assert energy.combine([(1.5, "nvml"), (None, None)]) == (None, None)
    assert energy.combine([]) == (None, None)
    measured = Progress(energy_j=12.0, energy_source="rapl")
    assert energy.record_fields(measured, 4) == {"energy_j": 12.0, "energy_source": "rapl", "energy_per_img_j": 3.0}
    assert energy.record_fields(Progress(), 4)["energy_per_img_j"] is None


def fake_powercap(root: Path, packages: dict[int, int], max_range: int = 1000) -> Path:
    for package, microjoules in packages.items():
        for zone in (f"intel-rapl:{package}", f"intel-rapl:{package}:0"):  # a package and its core sub-zone
            (root / zone).mkdir(parents=True, exist_ok=True)
            (root / zone / "energy_uj").write_text(f"{microjoules}\n")
            (root / zone / "max_energy_range_uj").write_text(f"{max_range}\n")
    return root


def test_rapl_sums_the_packages_across_a_wrap_and_counts_once_a_node(tmp_path):
    root = fake_powercap(tmp_path, {0: 900, 1: 100})
    assert [zone.energy.parent.name for zone in energy.rapl_zones(root)] == ["intel-rapl:0", "intel-rapl:1"]
    with (
        energy.Meter(torch.device("cpu"), 0, root=root) as first,
        energy.Meter(torch.device("cpu"), 1, root=root) as other,
    ):
        fake_powercap(tmp_path, {0: 400, 1: 300})  # package 0 wrapped: 100 + 400; package 1: 200
    assert first.source == other.source == energy.RAPL
    assert first.joules == pytest.approx(700e-6) and other.joules == 0.0


def test_no_readable_counter_is_none_said_once(tmp_path, caplog):
    (tmp_path / "intel-rapl:0").mkdir()
    (tmp_path / "intel-rapl:0" / "energy_uj").mkdir()  # unreadable as a file
    (tmp_path / "intel-rapl:0" / "max_energy_range_uj").write_text("1000\n")
    energy._said.clear()
    with caplog.at_level(logging.INFO, logger="mammoscale"):
        for _ in range(2):
            with energy.Meter(torch.device("cpu"), 0, root=tmp_path) as meter:
                pass
            assert meter.joules is None and meter.source is None
    assert caplog.text.count("energy: not measured") == 1


def test_nvml_without_its_library_is_none():
    assert energy.Nvml.open("00000000:3B:00.0", library="libnvidia-ml-absent.so.1") is None
    libc = ctypes.util.find_library("c")
    assert energy.Nvml.open("00000000:3B:00.0", library=libc) is None  # a library without NVML's functions
    if ctypes.util.find_library("nvidia-ml") is None:
        assert energy.Nvml.open("00000000:3B:00.0") is None
    assert energy.pci_bus_id(0, 0x3B, 0) == "00000000:3B:00.0"


def test_this_machine_says_where_its_energy_comes_from():
    with energy.Meter(torch.device("cpu"), 0) as meter:
        pass
    assert meter.source == (energy.RAPL if energy.rapl_zones() else None)
