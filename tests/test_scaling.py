"""Scaling across ranks and nodes: the global batch and learning rate a cell resolves, and the series, speed-ups,
efficiencies and times to train that runs.csv gives (the real-SLURM sweep is in tests/test_slurm.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml
from cell_records import VARIANTS, record, write
from PIL import Image

from mammoscale import config, files, records
from mammoscale.config import defaults
from mammoscale.errors import UserError
from mammoscale.plan import grid, sizing
from mammoscale.plan.grid import Cell
from mammoscale.plan.settings import LR_SCALINGS, Settings, SettingsError, lr_scale
from mammoscale.plan.study import Study
from mammoscale.report import figures, plots, scaling, tables
from mammoscale.report.page import SECTIONS, Context
from mammoscale.report.snapshot import snapshot
from mammoscale.train import optim

from conftest import REPO

TRAIN = defaults()["train"]
GPU = {"launcher": "torchrun", "nodes": 1, "micro_batch": 64, "device_memory_gib": 80, "peak_tflops": 312}
PROFILES = {
    "a100x1": {**GPU, "launcher": "none", "gpus_per_node": 1},
    "a100x4": {**GPU, "gpus_per_node": 4},
    "a100x8": {**GPU, "gpus_per_node": 8},
    "a100x2x8": {**GPU, "nodes": 2, "gpus_per_node": 8},
    "a100-40": {**GPU, "gpus_per_node": 8, "device_memory_gib": 40},  # another device: in no series of the others
}
FLASH = {"flash": VARIANTS["flash"]}
REFERENCE = {"hardware": "a100x1", "variant": "flash", "image_size": 512, "patch_size": 16}


# the global batch and the learning rate


def settings_on(profile: dict, **train) -> dict:
    return grid.cell_settings(
        Cell("hw", "flash", 64, 16),
        profile=profile,
        variant=VARIANTS["flash"],
        train={**TRAIN, **train},
        cache_root="c",
        local_scratch=None,
        micro_batch=1,
    )


def test_the_global_batch_is_constant_unless_it_grows_with_the_ranks():
    for name in ("a100x1", "a100x8", "a100x2x8"):
        assert settings_on(PROFILES[name], global_batch=256)["global_batch"] == 256
    grown = {name: settings_on(PROFILES[name], global_batch=256, batch_per_rank=16) for name in PROFILES}
    assert [grown[name]["global_batch"] for name in ("a100x1", "a100x4", "a100x8", "a100x2x8")] == [16, 64, 128, 256]
    assert all("batch_per_rank" not in settings for settings in grown.values()), "resolved, not passed on"


@pytest.mark.parametrize(
    "rule, global_batch, reference, scale",
    [("none", 256, 16, 1.0), ("linear", 256, 16, 16.0), ("sqrt", 256, 16, 4.0), ("linear", 64, 64, 1.0)],
)
def test_lr_scaling_rules(rule, global_batch, reference, scale):
    assert lr_scale(rule, global_batch, reference) == pytest.approx(scale)


def test_an_unknown_rule_is_refused_and_the_schema_has_every_rule():
    with pytest.raises(SettingsError, match="lr_scaling must be one of none, linear, sqrt, not 'cubic'"):
        lr_scale("cubic", 64, 16)
    assert config.schema()["properties"]["train"]["properties"]["lr_scaling"]["enum"] == list(LR_SCALINGS)


def test_the_reference_batch_is_resolved_per_cell():
    """Null: the batch per rank (the scale is the ranks, Horovod's lr x size), else the global batch (scale 1);
    with nothing scaled, no reference (a changed reference reruns nothing)."""
    horovod = Settings.from_dict(settings_on(PROFILES["a100x8"], batch_per_rank=16, lr_scaling="linear"))
    assert horovod.global_batch == 128 and horovod.lr_reference_batch == 16 and horovod.lr_scale == 8
    sqrt = Settings.from_dict(settings_on(PROFILES["a100x8"], batch_per_rank=16, lr_scaling="sqrt"))
    assert sqrt.lr_scale == pytest.approx(math.sqrt(8))
    constant = Settings.from_dict(settings_on(PROFILES["a100x8"], global_batch=256, lr_scaling="linear"))
    assert constant.lr_reference_batch == 256 and constant.lr_scale == 1
    chosen = Settings.from_dict(
        settings_on(PROFILES["a100x4"], batch_per_rank=16, lr_scaling="linear", lr_reference_batch=256)
    )
    assert chosen.lr_scale == pytest.approx(64 / 256)
    unscaled = settings_on(PROFILES["a100x8"], batch_per_rank=16, lr_reference_batch=32)
    assert "lr_reference_batch" not in unscaled and Settings.from_dict(unscaled).lr_scale == 1
    assert unscaled["lr_scale_with_world_size"] is False  # as every cell held it before lr_scaling
    assert (
        Settings.from_dict({"image_size": 64, "patch_size": 16, "cache_root": "c", "lr_scaling": "linear"}).lr_scale
        == 1
    )


def test_the_schedule_warms_up_to_the_scaled_peak():
    settings = Settings.from_dict(settings_on(PROFILES["a100x4"], batch_per_rank=8, lr_scaling="linear", lr=0.01))
    lr = [
        optim.learning_rate(step, total=100, warmup=10, base=settings.lr, min_fraction=0.0, scale=settings.lr_scale)
        for step in range(100)
    ]
    assert lr[0] == pytest.approx(0.04 / 10) and max(lr) == pytest.approx(0.04) and lr.index(max(lr)) == 9


def study_config(**changes) -> dict:
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["hardware"].update(
        {
            "cpu2": {"launcher": "torchrun", "nodes": 1, "gpus_per_node": 2, "device": "cpu", "micro_batch": 4},
            "cpu2x2": {
                "launcher": "torchrun",
                "nodes": 2,
                "gpus_per_node": 2,
                "cpus_per_task": 2,
                "device": "cpu",
                "micro_batch": 4,
            },
        }
    )
    raw["grid"] = {"image_sizes": [64], "patch_sizes": [32], "hardware": ["local-cpu", "cpu2", "cpu2x2"]}
    raw["figures"] = {"reference": {"image_size": 64, "patch_size": 32}}
    for section, values in changes.items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw


def test_the_plan_sees_the_resolved_global_batch():
    study = Study.from_config(study_config(train={"batch_per_rank": 6, "global_batch": 5, "mode": "full"}))
    plans = {cell.hardware: study.plans[cell] for cell in study.cells if cell.variant == "flash"}
    assert {hw: study.cell_settings(plan.cell)["global_batch"] for hw, plan in plans.items()} == {
        "local-cpu": 6,
        "cpu2": 12,
        "cpu2x2": 24,
    }
    # each rank's 6 images: micro-batches of 1 on local-cpu (its bound), 3 (the largest divisor within 4) elsewhere
    assert [(p.micro_batch, p.grad_accum) for p in plans.values()] == [(1, 6), (3, 2), (3, 2)]
    examples, epochs = sizing.nominal_train_breasts(study.config), study.config["train"]["epochs"]
    assert [p.steps for p in plans.values()] == [epochs * (examples // batch) for batch in (6, 12, 24)]


def test_a_global_batch_the_ranks_or_micro_batches_cannot_make_up_is_refused_at_plan_time():
    with pytest.raises(UserError, match="cell cpu2x2/flash/img64_p32: global batch 6 cannot be shared by 4 rank"):
        Study.from_config(study_config(train={"global_batch": 6}))
    Study.from_config(study_config(train={"global_batch": 6, "batch_per_rank": 3}))  # 3 a rank: any ranks share it
    settings = Settings.from_dict({**settings_on(PROFILES["a100x4"], batch_per_rank=6), "micro_batch": 4})
    with pytest.raises(SettingsError, match="global batch 24 is not a multiple of micro-batch 4 x 4 rank"):
        settings.grad_accum(4)


def test_the_old_key_says_what_replaced_it():
    raw = study_config(train={"lr_scale_with_world_size": True})
    with pytest.raises(UserError) as error:
        Study.from_config(raw)
    message = str(error.value)
    assert "\n" not in message and "train.lr_scale_with_world_size was renamed lr_scaling" in message
    assert "batch_per_rank" in message


# the series


def runs_of(tmp_path, specs, hardware, variants=FLASH) -> pd.DataFrame:
    """runs.csv as the aggregate rule writes it and the scaling rule reads it back, from ``specs``' records."""
    for spec in specs:
        write(tmp_path / "runs", record(**spec))
    cells = grid.cells([512], [16], variants, hardware)
    files.write_csv(tables.runs_table(cells, variants, tmp_path / "runs"), tmp_path / "runs.csv")
    return files.read_runs(tmp_path / "runs.csv")


def flash(hardware, throughput, **more) -> dict:
    return {"hardware": hardware, "variant": "flash", "size": 512, "patch": 16, "throughput": throughput, **more}


def test_a_series_is_one_cell_on_one_device_type_in_ranks_then_nodes(tmp_path):
    runs = runs_of(
        tmp_path,
        [flash("a100x8", 700.0), flash("a100x1", 100.0), flash("a100x4", 380.0, windows=3), flash("a100x2x8", 1200.0)]
        + [flash("a100-40", 650.0)],
        ["a100x8", "a100x1", "a100x4", "a100x2x8", "a100-40"],
    )
    table = scaling.points(runs, PROFILES)
    assert list(table.columns) == [c for c in files.SCALING_TABLE.columns if c not in scaling.TIME_COLUMNS]
    assert list(table["hardware"]) == ["a100x1", "a100x4", "a100x8", "a100x2x8"], "a100-40 is another device"
    assert set(table["series"]) == {"flash/img512_p16 on GPU 80 GiB 312 TFLOP/s"}
    assert list(table["ranks"]) == [1, 4, 8, 16] and list(table["nodes"]) == [1, 1, 1, 2]
    assert list(table["speedup"]) == pytest.approx([1.0, 3.8, 7.0, 12.0])
    assert list(table["ideal_img_s"]) == pytest.approx([100.0, 400.0, 800.0, 1600.0])
    assert list(table["efficiency"]) == pytest.approx([1.0, 0.95, 0.875, 0.75])
    # intervals: a ratio of windows where both have five; none with three (a100x4) or for the smallest run itself
    assert table["speedup_ci_low"].isna().tolist() == [True, True, False, False]
    eight = table.iloc[2]
    assert eight["speedup_ci_low"] < 7.0 < eight["speedup_ci_high"]
    assert eight["efficiency_ci_low"] == pytest.approx(eight["speedup_ci_low"] / 8)
    assert eight["throughput_ci_low_img_s"] < 700.0 < eight["throughput_ci_high_img_s"]


def test_the_same_ranks_on_one_node_and_on_two_are_two_points(tmp_path):
    profiles = {
        "one": {"launcher": "none", "nodes": 1, "gpus_per_node": 0, "cpus_per_task": 2, "micro_batch": 2},
        "two": {"launcher": "torchrun", "nodes": 1, "gpus_per_node": 2, "cpus_per_task": 4, "device": "cpu"},
        "twonodes": {"launcher": "torchrun", "nodes": 2, "gpus_per_node": 1, "cpus_per_task": 2, "device": "cpu"},
        "fat": {"launcher": "torchrun", "nodes": 1, "gpus_per_node": 2, "cpus_per_task": 16, "device": "cpu"},
    }
    runs = runs_of(
        tmp_path, [flash("one", 10.0), flash("two", 18.0), flash("twonodes", 15.0), flash("fat", 40.0)], list(profiles)
    )
    table = scaling.points(runs, profiles)
    assert list(table["hardware"]) == ["one", "two", "twonodes"], "8 CPUs a rank is another device"
    assert table["device"].iloc[0] == "CPU rank of 2 CPUs"
    assert list(zip(table["ranks"], table["nodes"])) == [(1, 1), (2, 1), (2, 2)]
    assert list(table["efficiency"]) == pytest.approx([1.0, 0.9, 0.75])


def test_a_point_without_a_number_keeps_its_row(tmp_path):
    hardware = ["a100x1", "a100x4", "a100x8"]
    runs = runs_of(tmp_path, [flash("a100x1", 100.0), flash("a100x8", None, status=records.FAILED)], hardware)
    table = scaling.points(runs, PROFILES)
    assert list(table["status"]) == [records.OK, records.MISSING, records.FAILED]
    assert table["speedup"].isna().tolist() == [False, True, True]
    assert list(table["ideal_img_s"]) == pytest.approx([100.0, 400.0, 800.0]), "the ideal needs the smallest run only"
    smallest_failed = runs_of(
        tmp_path / "b", [flash("a100x1", None, status=records.OOM), flash("a100x4", 300.0)], hardware
    )
    table = scaling.points(smallest_failed, PROFILES)
    assert (
        table["speedup"].isna().all()
        and table["ideal_img_s"].isna().all()
        and table["throughput_img_s"].notna().sum() == 1
    )


def test_time_to_train_as_the_chexnet_post_presents_it(tmp_path):
    """10 epochs of 36,000 examples at 100 images/s: an hour; the speed-up of the hours is the throughput's."""
    assert scaling.time_to_train_h(100.0, epochs=10, train_examples=36_000) == pytest.approx(1.0)
    runs_of(tmp_path, [flash("a100x1", 100.0), flash("a100x8", 470.0 / 0.625)], ["a100x1", "a100x8"])
    table = scaling.write_table(
        tmp_path / "runs.csv", tmp_path / "scaling.csv", profiles=PROFILES, epochs=10, train_examples=1000
    )
    back = files.SCALING_TABLE.read(tmp_path / "scaling.csv")
    assert list(back.columns) == list(files.SCALING_TABLE.columns) and len(back) == len(table) == 2
    hours = back["time_to_train_h"].tolist()
    assert hours[0] == pytest.approx(10 * 1000 / 100 / 3600) and hours[0] / hours[1] == pytest.approx(
        back["speedup"].iloc[1]
    )
    assert back["epochs"].tolist() == [10, 10] and back["train_examples"].tolist() == [1000, 1000]
    assert back["patch_size"].tolist() == [16, 16] and back["global_batch"].tolist() == [64, 64]


def test_no_series_gives_an_empty_table_and_says_so(tmp_path):
    runs = runs_of(tmp_path, [flash("a100x8", 700.0)], ["a100x8"])
    scaling.write_table(tmp_path / "runs.csv", tmp_path / "scaling.csv", profiles=PROFILES, epochs=1, train_examples=9)
    empty = files.SCALING_TABLE.read(tmp_path / "scaling.csv")
    assert empty.empty and list(empty.columns) == list(files.SCALING_TABLE.columns)
    fig = figures.draw("scaling", runs=runs, pairs=None, pipeline=None, reference={}, variants=FLASH, profiles=PROFILES)
    assert any("no scaling series" in text.get_text() for text in fig.axes[0].texts)
    assert "No scaling series" in scaling.section(empty)


def test_the_figure_draws_each_series_on_log2_axes_with_its_efficiencies(tmp_path):
    variants = {**FLASH, "materialised": VARIANTS["materialised"]}
    hardware = ["a100x1", "a100x8", "a100x2x8"]
    specs = [flash("a100x1", 100.0), flash("a100x8", 700.0), flash("a100x2x8", None, status=records.OOM)]
    specs += [{**spec, "variant": "materialised", "throughput": 50.0 * (k + 1)} for k, spec in enumerate(specs[:2])]
    runs = runs_of(tmp_path, specs, hardware, variants)
    fig = figures.draw(
        "scaling", runs=runs, pairs=None, pipeline=None, reference={}, variants=variants, profiles=PROFILES
    )
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log" and ax.xaxis.get_transform().base == 2
    written = [text.get_text() for text in ax.texts]
    assert {"100%", "88%", "25%"} <= set(written) and "OOM" in written
    assert [line.get_linestyle() for line in ax.lines].count("--") == 2, "an ideal line per series"
    assert {text.get_text() for text in ax.get_legend().get_texts()} >= {"1 node", "2 nodes"}
    plots.save(fig, tmp_path / "scaling.png", tmp_path / "scaling.svg", dpi=60)
    with Image.open(tmp_path / "scaling.png") as image:
        assert image.width > 200


def test_the_report_section_says_what_each_series_gained(tmp_path):
    runs = runs_of(tmp_path, [flash("a100x1", 100.0), flash("a100x2x8", 1200.0)], ["a100x1", "a100x2x8"])
    table = scaling.scaling_table(runs, PROFILES, epochs=10, train_examples=36_000)
    html = scaling.section(table)
    assert (
        "16 ranks on 2 nodes train 10 epochs of 36,000 examples in 0.0833 h, 12x faster than 1 rank on 1 node" in html
    )
    assert "efficiency 75 %, 95% interval [" in html
    assert "scaling" in SECTIONS


def test_the_snapshot_has_the_scaling_table_of_what_finished(tmp_path):
    hardware = ["a100x1", "a100x8"]
    write(tmp_path / "runs", record(**flash("a100x1", 100.0)))
    missing = str(tmp_path / "nothing")
    run_config = {
        "data": {"source": "rsna", "root": "/data/rsna"},
        "grid": {"image_sizes": [512], "patch_sizes": [16], "variants": FLASH, "hardware": hardware},
        "hardware": {name: PROFILES[name] for name in hardware},
        "train": {"epochs": 10, "seed": 1, "model_size": "vit-base"},  # as a completed config has it
        "configfiles": [],
    }
    snapshot(
        tmp_path / "snapshot",
        cells=grid.cells([512], [16], FLASH, hardware),
        variants=FLASH,
        runs_root=tmp_path / "runs",
        pipeline={"stage1": [], "stage2": []},
        contact_sheets={},
        manifest_counts=missing,
        preprocess_summary=missing,
        context=Context(run_config, REFERENCE, None, 0.15, "", train_examples=36_000),
        dpi=40,
        vector_format="pdf",
    )
    table = files.SCALING_TABLE.read(tmp_path / "snapshot" / "scaling.csv")
    assert table["status"].tolist() == [records.OK, records.MISSING] and table["time_to_train_h"].iloc[0] == 1.0
    page = (tmp_path / "snapshot" / "report.html").read_text()
    assert "no speed-up yet" in page and 'id="figure-scaling"' in page
