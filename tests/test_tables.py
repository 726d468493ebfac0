"""runs.csv, speedups.csv and pipeline.csv: every configured cell gets a row, numbers as recorded."""

from __future__ import annotations

import json

import cell_records
import pandas as pd
import pytest
from cell_records import VARIANTS, record, write

from mammoscale import files, records
from mammoscale.errors import UserError
from mammoscale.plan import grid
from mammoscale.report import tables

CELLS = grid.cells([384, 512], [16, 32], VARIANTS, ["xe9680"])


def test_every_configured_cell_has_a_row_with_its_status(tmp_path):
    write(tmp_path, record("xe9680", "flash", 512, 16, throughput=123.5, peak=3 * 2**30, job="4711"))
    write(tmp_path, record("xe9680", "hf-eager", 512, 16, "oom", message="CUDA out of memory"))
    write(tmp_path, record("xe9680", "materialised", 512, 16, "failed", message="loss nan"), files.FAILED_METRICS)
    write(tmp_path, record("xe9680", "flash", 384, 32, "skipped", message="no flash-attn"))
    runs = tables.runs_table(CELLS, VARIANTS, tmp_path)
    assert len(runs) == len(CELLS) == 12
    assert list(runs[tables.KEY].itertuples(index=False, name=None)) == CELLS
    status = runs.set_index(tables.KEY)["status"]
    assert status[("xe9680", "flash", 512, 16)] == "ok"
    assert status[("xe9680", "hf-eager", 512, 16)] == "oom"
    assert status[("xe9680", "materialised", 512, 16)] == "failed"
    assert status[("xe9680", "flash", 384, 32)] == "skipped"
    assert (runs["status"] == "missing").sum() == 8
    # a missing cell still says what it would be
    missing = runs.set_index(tables.KEY).loc[("xe9680", "hf-eager", 384, 16)]
    assert missing["family"] == "hf" and missing["seq_len"] == 577 and missing["role"] == "baseline"
    assert pd.isna(missing["throughput_img_s"])


def test_the_numbers_in_runs_csv_are_the_recorded_ones(tmp_path):
    rec = record("xe9680", "flash", 512, 16, throughput=123.5, peak=3 * 2**30, auc=0.8125, job="4711")
    write(tmp_path, rec)
    tables.write_tables(
        CELLS, VARIANTS, tmp_path, tmp_path / "runs.csv", tmp_path / "speedups.csv", tmp_path / "quality.csv"
    )
    runs = files.read_runs(tmp_path / "runs.csv")
    row = runs[(runs["variant"] == "flash") & (runs["image_size"] == 512) & (runs["patch_size"] == 16)].iloc[0]
    for field in (
        "throughput_img_s",
        "step_time_s",
        "peak_mem_bytes",
        "achieved_tflops",
        "mfu",
        "val_auc",
        "val_pf1",
        "input_wait_fraction",
        "loader_img_s",
        "seq_len",
        "world_size",
        "micro_batch",
        "grad_accum",
    ):
        assert row[field] == pytest.approx(rec[field], rel=1e-12), field
    # nested blocks flattened, lists kept as JSON
    assert str(row["env.slurm_job_id"]) == "4711" and row["env.torch"] == "2.13.0"
    assert row["config.lr"] == pytest.approx(3e-4)
    assert json.loads(row["loss_curve"]) == rec["loss_curve"]
    assert json.loads(row["env.devices"]) == rec["env"]["devices"]


def test_speedups_pair_flash_with_each_baseline(tmp_path):
    write(tmp_path, record("xe9680", "flash", 512, 16, throughput=120.0, peak=2 * 2**30))
    write(tmp_path, record("xe9680", "hf-eager", 512, 16, throughput=40.0, peak=5 * 2**30))
    write(tmp_path, record("xe9680", "materialised", 512, 16, throughput=60.0, peak=4 * 2**30))
    write(tmp_path, record("xe9680", "flash", 512, 32, throughput=300.0))
    write(tmp_path, record("xe9680", "hf-eager", 512, 32, "oom"))
    pairs = tables.speedups(tables.runs_table(CELLS, VARIANTS, tmp_path))
    assert len(pairs) == 8  # 4 (size, patch) x 2 baselines
    at = pairs.set_index(["image_size", "patch_size", "baseline_variant"])
    assert at.loc[(512, 16, "hf-eager"), "throughput_ratio"] == pytest.approx(3.0)
    assert at.loc[(512, 16, "hf-eager"), "memory_ratio"] == pytest.approx(2.5)
    assert at.loc[(512, 16, "materialised"), "throughput_ratio"] == pytest.approx(2.0)
    assert at.loc[(512, 16, "materialised"), "memory_ratio"] == pytest.approx(2.0)
    oom = at.loc[(512, 32, "hf-eager")]
    assert oom["flash_status"] == "ok" and oom["baseline_status"] == "oom" and pd.isna(oom["throughput_ratio"])
    assert at.loc[(384, 16, "hf-eager"), "flash_status"] == "missing"
    assert set(pairs["flash_variant"]) == {"flash"}


def test_a_record_in_the_wrong_place_is_refused(tmp_path):
    rec = record("xe9680", "flash", 512, 16)
    path = write(tmp_path, rec)
    moved = tmp_path / "xe9680" / "flash" / "img512_p32"
    moved.mkdir(parents=True)
    path.rename(moved / "metrics.json")
    with pytest.raises(UserError, match="holds the record of cell"):
        tables.runs_table(CELLS, VARIANTS, tmp_path)


def test_a_corrupt_record_is_named(tmp_path):
    path = write(tmp_path, record("xe9680", "flash", 512, 16))
    path.write_text('{"status": "ok", ')
    with pytest.raises(UserError, match="is not valid JSON"):
        tables.runs_table(CELLS, VARIANTS, tmp_path)


def test_no_records_yet_gives_a_table_of_missing_cells(tmp_path):
    runs = tables.runs_table(CELLS, VARIANTS, tmp_path)
    assert set(runs["status"]) == {"missing"}
    assert tables.speedups(runs)["throughput_ratio"].isna().all()


def test_pipeline_table_counts_items_per_second(tmp_path):
    bench = (
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        "{}\t0:00:02\t1\t1\t1\t1\t0\t0\t50\t{}\n"
    )
    (tmp_path / "b1.tsv").write_text(bench.format(2.0, 3.5))
    (tmp_path / "b2.tsv").write_text(bench.format(0.5, 0.4))
    (tmp_path / "shard0000.images.csv").write_text("status,image_id\nok,1\nok,2\nerror,3\nok,4\n")
    (tmp_path / "img512").mkdir()
    (tmp_path / "img512" / "shard0000.csv").write_text("breast_id\na\nb\n")
    table = tables.pipeline_table(
        [("0000", tmp_path / "shard0000.images.csv", tmp_path / "b1.tsv")],
        [(512, "0000", tmp_path / "img512" / "shard0000.csv", tmp_path / "b2.tsv")],
    )
    decode, tile = table.iloc[0], table.iloc[1]
    assert decode["items"] == 3 and decode["items_per_s"] == pytest.approx(1.5) and decode["cpu_seconds"] == 3.5
    assert tile["stage"] == "tile img512" and tile["image_size"] == 512 and tile["items"] == 2
    assert tile["items_per_s"] == pytest.approx(4.0) and list(table["shard"]) == ["shard0000", "shard0000"]


def test_a_file_that_is_not_a_benchmark_is_named(tmp_path):
    (tmp_path / "x.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(UserError, match="not a Snakemake benchmark file"):
        tables.read_benchmark(tmp_path / "x.tsv")


def test_records_module_builds_valid_metrics():
    """The test records follow the real schema, so the figures are tested on what cells write."""
    for status in ("ok", "oom", "failed", "skipped"):
        records.validate_metrics(cell_records.record("xe9680", "flash", 512, 16, status, job="1"))


def test_the_records_are_read_from_the_runs_root_given(tmp_path):
    """The root comes from the rule (files.RUNS), never from climbing the metrics files' parents."""
    write(tmp_path / "elsewhere", record("xe9680", "flash", 512, 16))
    cells = [("xe9680", "flash", 512, 16)]
    assert tables.runs_table(cells, VARIANTS, tmp_path / "elsewhere")["status"].tolist() == ["ok"]
    assert tables.runs_table(cells, VARIANTS, tmp_path)["status"].tolist() == ["missing"]
    assert tables.runs_table(cells, VARIANTS)["run_dir"].tolist() == [f"{files.RUNS}/xe9680/flash/img512_p16"]


def test_a_cnn_cell_has_no_patch_size_no_tokens_and_no_speedup(tmp_path):
    """A variant without patches (DenseNet-121) has one cell per image size, ``img<S>``: its row in runs.csv leaves
    patch_size and seq_len empty (the others stay integers), its role is none, and it is in no flash/baseline pair."""
    variants = {**VARIANTS, **cell_records.CNN}
    cells = grid.cells([384, 512], [16, 32], variants, ["xe9680"])
    assert len(cells) == len(CELLS) + 2 and ("xe9680", "densenet", 512, None) in cells
    for rec in (
        record("xe9680", "flash", 512, 16, throughput=120.0),
        record("xe9680", "hf-eager", 512, 16, throughput=40.0),
        record("xe9680", "densenet", 512, None, throughput=200.0, peak=2**31),
    ):
        write(tmp_path, rec)
    tables.write_tables(
        cells, variants, tmp_path, tmp_path / "runs.csv", tmp_path / "speedups.csv", tmp_path / "quality.csv"
    )
    text = pd.read_csv(tmp_path / "runs.csv", dtype=str, keep_default_na=False).set_index(["variant", "image_size"])
    cnn = text.loc[("densenet", "512")]
    assert cnn["patch_size"] == "" and cnn["seq_len"] == "" and cnn["status"] == "ok"
    assert cnn["role"] == "none" and cnn["attention"] == "none" and cnn["run_dir"].endswith("xe9680/densenet/img512")
    assert text.loc[("flash", "512"), "patch_size"].tolist() == ["16", "32"]  # not 16.0
    assert text.loc[("hf-eager", "512"), "seq_len"].tolist() == ["1025", "257"]
    runs = files.read_runs(tmp_path / "runs.csv")
    row = runs[runs["variant"] == "densenet"].set_index("image_size")
    assert row["patch_size"].isna().all() and row.loc[512, "throughput_img_s"] == 200.0
    assert row.loc[384, "status"] == "missing" and row.loc[384, "family"] == "densenet"
    assert list(runs.loc[tables.at_patch(runs, None), "variant"]) == ["densenet", "densenet"]
    assert len(runs[tables.at_patch(runs, 16)]) == 6 and tables.patched(runs).sum() == len(CELLS)
    # the speed-ups are those of the grid without it
    pairs = files.SPEEDUP_TABLE.read(tmp_path / "speedups.csv")
    alone = tables.speedups(tables.runs_table(CELLS, VARIANTS, tmp_path))
    assert len(pairs) == len(alone) == 8 and "densenet" not in set(pairs["flash_variant"]) | set(
        pairs["baseline_variant"]
    )
    assert pairs["throughput_ratio"].dropna().tolist() == pytest.approx([3.0])
