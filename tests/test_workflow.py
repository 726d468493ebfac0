"""The Snakemake workflow end to end on the test profile, as `make run` runs it on the default."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mammoscale import files, records
from mammoscale.report.captions import FIGURES

from conftest import REPO

pytestmark = pytest.mark.workflow
WORKFLOW_FILES = ("Snakefile", "rules", "workflow", "config", "envs")
AFTER_CELLS = {"aggregate": 1, "scaling_table": 1, "figure": len(FIGURES), "study_report": 1}
"""Tables, figures and report: what reruns after any cell changes."""
REPLAN = {"plan": 1}  # plan.csv: after any change of the cells or their plans


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def build_cache_of(workdir: Path, data: Path, *config: str, check: bool = True) -> subprocess.CompletedProcess:
    """``snakemake -c2 cache`` on the test profile over the RSNA-layout directory ``data``."""
    source = f"data={{source: rsna, root: {data}}}"
    return snakemake(
        workdir, "-c2", "cache", "--configfile", "config/test.yaml", "--config", source, *config, check=check
    )


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """The "Job stats" table of a dry run: rule -> number of jobs."""
    jobs, inside = {}, False
    for line in (result.stdout + result.stderr).splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            inside = True
        elif inside and len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                break
            jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("wf"))
    snakemake(workdir, "--cores", "2", "all", "decode_audit", "--configfile", "config/test.yaml")
    return workdir


def test_all_builds_the_manifest_the_cache_and_its_qc(finished_run):
    from mammoscale.cache import open_tiles

    results = finished_run / "results"
    breasts = pd.read_csv(results / "manifest" / "breasts.csv")
    assert len(breasts) > 0 and set(breasts["shard"]) == {0, 1}
    assert pd.read_csv(results / "qc" / "decode_errors.csv").empty
    for size in (64, 128):
        tiles = open_tiles(results / "cache", size, verify=True)
        assert len(tiles) == len(breasts) and tiles[0].shape == (size, size)
        assert (results / "qc" / f"contact_sheet_img{size}.png").stat().st_size > 1000
    summary = json.loads((results / "qc" / "preprocess_summary.json").read_text())
    assert summary["breasts_cached"] == len(breasts) and summary["roi_fallbacks"] == 0
    log = (results / "logs" / "cache_views" / "shard0000.log").read_text()
    assert "100%" in log


def test_every_cell_of_the_grid_trained(finished_run):

    runs = sorted((finished_run / "results" / "runs").rglob("metrics.json"))
    cells = {p.relative_to(finished_run / "results" / "runs").parent.as_posix() for p in runs}
    assert cells == {
        f"{hw}/{variant}/img{size}_p32"
        for hw in ("local-cpu", "local-cpu-b")
        for variant in ("flash", "materialised")
        for size in (64, 128)
    }
    for path in runs:
        record = json.loads(path.read_text())
        records.validate_metrics(record)
        assert record["status"] == "ok" and record["mode"] == "throughput" and record["throughput_img_s"] > 0
        hardware = path.parts[-4]
        assert record["hardware"] == hardware
        assert record["micro_batch"] == {"local-cpu": 1, "local-cpu-b": 2}[hardware]
        assert record["grad_accum"] * record["micro_batch"] == record["global_batch"] == 2
        assert (path.parent / "train.log").is_file() and (path.parent / "cell.yaml").is_file()
    assert (finished_run / "results" / "benchmarks" / "train" / "local-cpu" / "flash" / "img64_p32.tsv").is_file()


def test_adding_an_image_size_tiles_it_alone_and_trains_its_cells(finished_run):
    result = snakemake(
        finished_run, "-n", "all", "--configfile", "config/test.yaml", "--config", "grid={image_sizes: [64, 96, 128]}"
    )
    assert planned_jobs(result) == {
        "all": 1,
        "cache_index": 1,
        "cache_tiles": 2,
        "contact_sheet": 1,
        "train_cell": 4,
        "pipeline_table": 1,
        **REPLAN,
        **AFTER_CELLS,
    }


def test_adding_a_patch_size_trains_only_the_new_cells(finished_run):
    result = snakemake(
        finished_run, "-n", "all", "--configfile", "config/test.yaml", "--config", "grid={patch_sizes: [16, 32]}"
    )
    assert planned_jobs(result) == {"all": 1, "train_cell": 8, **REPLAN, **AFTER_CELLS}


def test_an_extra_cell_trains_alone_and_joins_the_tables(finished_run):
    extra = "grid={extra_cells: [{hardware: slurm-gpu, variant: flash, image_size: 128, patch_size: 32}]}"
    result = snakemake(finished_run, "-n", "all", "--configfile", "config/test.yaml", "--config", extra)
    assert planned_jobs(result) == {"all": 1, "train_cell": 1, **REPLAN, **AFTER_CELLS}
    assert "results/runs/slurm-gpu/flash/img128_p32/metrics.json" in result.stdout


def test_changing_one_hardware_profile_reruns_only_its_cells(finished_run):
    result = snakemake(
        finished_run,
        "-n",
        "all",
        "--configfile",
        "config/test.yaml",
        "--config",
        "hardware={local-cpu-b: {micro_batch: 1}}",
    )
    assert planned_jobs(result) == {"all": 1, "train_cell": 4, **REPLAN, **AFTER_CELLS}
    assert "local-cpu/" not in "".join(line for line in result.stdout.splitlines() if "output:" in line)


def test_a_memory_headroom_change_replans_only_the_cells_it_changes(finished_run):
    # the test profiles are CPUs without a device memory: a new headroom changes no cell, so nothing reruns
    result = snakemake(
        finished_run, "-n", "all", "--configfile", "config/test.yaml", "--config", "plan={memory_headroom: 0.5}"
    )
    assert "Nothing to be done" in result.stdout + result.stderr


def test_cells_predicted_out_of_memory_get_their_record_without_running(finished_run, tmp_path):
    workdir = tmp_path / "wf"
    shutil.copytree(finished_run, workdir, symlinks=True)
    small = "hardware={local-cpu-b: {device_memory_gib: 0.01}}"  # 9.2 MiB allowed: the 40 MB a step takes cannot fit
    planned = planned_jobs(snakemake(workdir, "-n", "all", "--configfile", "config/test.yaml", "--config", small))
    assert planned == {"all": 1, **REPLAN, **AFTER_CELLS}  # no training job
    snakemake(workdir, "--cores", "2", "all", "--configfile", "config/test.yaml", "--config", small)
    plan = pd.read_csv(workdir / "results" / "tables" / "plan.csv")
    assert list(plan.columns) == list(files.PLAN_TABLE.columns) and len(plan) == 8
    assert plan.loc[plan["hardware"] == "local-cpu-b", "fits"].eq(False).all() and plan["fits"].sum() == 4
    assert (plan.loc[plan["hardware"] == "local-cpu-b", "memory_limit_bytes"] == int(0.9 * 0.01 * 2**30)).all()
    runs = pd.read_csv(workdir / "results" / "tables" / "runs.csv")
    predicted = runs[runs["hardware"] == "local-cpu-b"]
    assert (predicted["status"] == "oom").all() and (predicted["oom_basis"] == "predicted").all()
    assert predicted["throughput_img_s"].isna().all() and (predicted["predicted_peak_bytes"] > 0.01 * 2**30).all()
    assert (runs.loc[runs["hardware"] == "local-cpu", "status"] == "ok").all()
    assert "OOM (predicted)" in (workdir / "results" / "report" / "report.html").read_text()


def test_one_cell_reruns_alone_on_request(finished_run):
    target = "results/runs/local-cpu/flash/img64_p32/metrics.json"
    result = snakemake(finished_run, "-n", target, "--forcerun", target, "--configfile", "config/test.yaml")
    assert planned_jobs(result) == {"train_cell": 1}


def test_a_damaged_cell_record_is_one_line_whose_command_reruns_that_cell(finished_run, tmp_path):
    workdir = tmp_path / "wf"
    shutil.copytree(finished_run, workdir, symlinks=True)
    record = workdir / "results" / "runs" / "local-cpu" / "flash" / "img64_p32" / "metrics.json"
    record.write_text('{"status": "ok", ')  # cut short (a full disk, an editor)
    failed = snakemake(workdir, "-c2", "all", "--configfile", "config/test.yaml", check=False)
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert failed.returncode != 0 and len(errors) == 1 and "is not valid JSON" in errors[0]
    command = errors[0].split("rerun the cell: ", 1)[1].split()
    assert command[0] == "snakemake" and "Traceback" not in failed.stderr
    assert planned_jobs(snakemake(workdir, "-n", *command[1:], "--configfile", "config/test.yaml")) == {"train_cell": 1}
    snakemake(workdir, "-c2", *command[1:], "--configfile", "config/test.yaml")
    assert json.loads(record.read_text())["status"] == "ok"
    snakemake(workdir, "-c2", "all", "--configfile", "config/test.yaml")


def test_changing_the_roi_rebuilds_the_views_and_everything_after(finished_run):
    result = snakemake(
        finished_run, "-n", "all", "--configfile", "config/test.yaml", "--config", "preprocess={roi: {border: 0.03}}"
    )
    jobs = planned_jobs(result)
    assert jobs["cache_views"] == 2 and jobs["cache_tiles"] == 4 and "manifest" not in jobs
    assert jobs["train_cell"] == 8  # every cell trains on the new tiles
    assert jobs["pipeline_table"] == 1 and jobs["study_report"] == 1 and jobs["figure"] == len(FIGURES)


@pytest.mark.parametrize(
    "override",
    ["figures={dpi: 72}", "figures={reference: {variant: materialised}}", "figures={tolerance: 0.3}"],
    ids=["dpi", "reference", "tolerance"],
)
def test_a_figure_option_redraws_only_figures_and_report(finished_run, override):
    result = snakemake(finished_run, "-n", "all", "--configfile", "config/test.yaml", "--config", override)
    jobs = planned_jobs(result)
    assert jobs.pop("study_report") == 1 and jobs.pop("all") == 1
    profiled = {"profile_cell", "profile_figure"} if "reference" in override else {"profile_figure"}
    assert set(jobs) <= {"figure", *profiled}  # the tolerance is the report's alone; a new reference is profiled


def test_the_tables_hold_what_the_cells_recorded(finished_run):
    from mammoscale import files

    results = finished_run / "results"
    runs = files.read_runs(results / "tables" / "runs.csv")
    assert len(runs) == 8 and set(runs["status"]) == {"ok"}
    for _, row in runs.iterrows():
        record = json.loads((finished_run / row["run_dir"] / "metrics.json").read_text())
        for field in ("throughput_img_s", "peak_mem_bytes", "step_time_s", "achieved_tflops", "loader_img_s"):
            assert row[field] == pytest.approx(record[field], rel=1e-12), field
        assert row["env.git_commit"] == record["env"]["git_commit"]
    pairs = pd.read_csv(results / "tables" / "speedups.csv")
    assert len(pairs) == 4 and pairs["throughput_ratio"].notna().all()
    row = pairs.iloc[0]
    flash = runs[
        (runs["hardware"] == row["hardware"]) & (runs["variant"] == "flash") & (runs["image_size"] == row["image_size"])
    ].iloc[0]
    baseline = runs[
        (runs["hardware"] == row["hardware"])
        & (runs["variant"] == "materialised")
        & (runs["image_size"] == row["image_size"])
    ].iloc[0]
    assert row["throughput_ratio"] == pytest.approx(flash["throughput_img_s"] / baseline["throughput_img_s"])
    pipeline = pd.read_csv(results / "tables" / "pipeline.csv")
    assert list(pipeline["stage"]) == ["decode + crop"] * 2 + ["tile img64"] * 2 + ["tile img128"] * 2
    breasts = len(pd.read_csv(results / "manifest" / "breasts.csv"))
    decoded = json.loads((results / "qc" / "preprocess_summary.json").read_text())["decoded"]
    assert pipeline.groupby("stage", sort=False)["items"].sum().to_dict() == {
        "decode + crop": decoded,
        "tile img64": breasts,
        "tile img128": breasts,
    }


def test_all_draws_every_figure_and_the_report(finished_run):
    from mammoscale.report import captions

    results = finished_run / "results"
    for name in captions.FIGURES:
        assert (results / "figures" / f"{name}.png").stat().st_size > 5000
        assert (results / "figures" / f"{name}.svg").is_file()
    page = (results / "report" / "report.html").read_text()
    assert "Published claim vs this run" in page and "Provenance" in page
    # + a contact sheet per size, + the reference cell's time breakdown (its profile)
    assert page.count('src="data:image/png;base64,') == len(captions.FIGURES) + 2 + 1
    assert 'id="figure-profile"' in page and "aten::" in page
    for decoder in json.loads((results / "qc" / "preprocess_summary.json").read_text())["decoders"]:
        assert decoder in page  # the codecs that ran, with their versions, in the provenance
    for rule in ("aggregate", "pipeline_table", "study_report"):
        assert (results / "benchmarks" / f"{rule}.tsv").is_file() and (results / "logs" / f"{rule}.log").is_file()


def test_snakemakes_own_report_has_the_categories_and_captions(finished_run):
    snakemake(finished_run, "--configfile", "config/test.yaml", "--report", "results/report/snakemake_report.html")
    page = (finished_run / "results" / "report" / "snakemake_report.html").read_text()
    for text in (
        "Data QC",
        "Performance",
        "Model quality",
        "Report",
        "fig4_flash_vs_baseline.png",
        "contact_sheet_img64.png",
        "Figure 4 (flash vs baseline)",
    ):
        assert text in page, text


def test_a_snapshot_reports_while_cells_are_missing(finished_run, tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    shutil.copytree(finished_run / "results" / "runs" / "local-cpu", workdir / "results" / "runs" / "local-cpu")
    snakemake(workdir, "--cores", "1", "--nolock", "--force", "snapshot", "--configfile", "config/test.yaml")
    page = (workdir / "results" / "snapshot" / "report.html").read_text()
    assert "8 cells configured: 4 ok, 4 not run." in page
    runs = pd.read_csv(workdir / "results" / "snapshot" / "runs.csv")
    assert (runs.loc[runs["hardware"] == "local-cpu-b", "status"] == "missing").all()


def test_too_many_lost_images_stop_the_cache_and_keep_the_errors(finished_run, tmp_path):
    """A missing file counts as lost like a failed decode; the terminal shows one line of what was lost."""
    data = tmp_path / "rsna"
    shutil.copytree(finished_run / "results" / "data" / "synthetic", data)
    breasts = pd.read_csv(finished_run / "results" / "manifest" / "breasts.csv")
    victim = data / "train_images" / str(breasts.iloc[0]["patient_id"]) / f"{breasts.iloc[0]['mlo_image_id']}.dcm"
    victim.write_bytes(b"broken")
    gone = data / "train_images" / str(breasts.iloc[1]["patient_id"]) / f"{breasts.iloc[1]['cc_image_id']}.dcm"
    gone.unlink()
    workdir = copy_workflow(tmp_path / "wf")
    result = build_cache_of(workdir, data, "cache={max_failure_fraction: 0.0}", check=False)
    assert result.returncode != 0
    # the first image size's index to run stops the workflow (which one Snakemake schedules first varies)
    logs = sorted((workdir / "results" / "logs" / "cache_index").glob("img*.log"))
    assert logs, result.stderr
    log = logs[0].read_text()
    lost = (
        r"2 of (\d+) images \(\d+\.\d%\) are lost \(missing_file 1, not_dicom 1\), more than cache.max_failure_fraction"
    )
    assert re.search(lost, log) and "Traceback" not in log
    assert re.search(r"^warning: 2 of \d+ images lost \(missing_file 1, not_dicom 1\)", result.stderr, re.MULTILINE)
    errors = pd.read_csv(workdir / "results" / "qc" / "decode_errors.csv")
    assert errors["file"].tolist() == [str(victim.relative_to(data))] and errors["error_kind"].tolist() == ["not_dicom"]
    excluded = pd.read_csv(workdir / "results" / "manifest" / "excluded.csv", dtype=str)
    assert excluded.loc[excluded["reason"] == "missing_file", "image_id"].tolist() == [gone.stem]


def test_decode_audit_decodes_every_listed_image(finished_run):
    data = finished_run / "results" / "data" / "synthetic"
    table = pd.read_csv(data / "train.csv")
    counts = json.loads((finished_run / "results" / "qc" / "decode_audit.json").read_text())
    summary = pd.read_csv(finished_run / "results" / "qc" / "decode_audit.csv")
    assert counts["images"] == counts["decoded"] == len(table) == len(summary)
    assert counts["errors"] == 0 and counts["unlisted_files"] == 0
    assert len(counts["transfer_syntaxes"]) == 4
    assert (summary["rows"] == 160).all()
    assert "breasts of 6 patients" in (finished_run / "results" / "logs" / "manifest.log").read_text()
    assert counts["decoders"] and sum(counts["decoders"].values()) == counts["decoded"]
    for rule in ("synthetic_data", "decode_audit"):
        log = (finished_run / "results" / "logs" / f"{rule}.log").read_text()
        assert "100%" in log, f"{rule} reports progress in its log"
        assert (finished_run / "results" / "benchmarks" / f"{rule}.tsv").is_file()


def test_a_finished_run_has_nothing_to_do(finished_run):
    result = snakemake(finished_run, "-n", "all", "--configfile", "config/test.yaml")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_rsna_source_reads_an_existing_directory_without_generating(finished_run, tmp_path):
    workdir = copy_workflow(tmp_path)
    root = finished_run / "results" / "data" / "synthetic"
    result = snakemake(workdir, "-n", "all", "--config", f"data={{source: rsna, root: {root}}}")
    jobs = planned_jobs(result)
    assert jobs["manifest"] == 1 and "synthetic_data" not in jobs
    snakemake(workdir, "-c2", "decode_audit", "--config", f"data={{source: rsna, root: {root}}}")
    counts = json.loads((workdir / "results" / "qc" / "decode_audit.json").read_text())
    assert counts["decoded"] == len(pd.read_csv(root / "train.csv"))


def test_a_missing_rsna_directory_fails_before_running(tmp_path):
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "-n", "all", "--config", "data={source: rsna, root: /nonexistent/rsna}", check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "data.root /nonexistent/rsna does not exist" in errors[0]
    assert "/nonexistent/rsna/train.csv" in errors[0] and "MissingInputException" not in result.stderr
    planned = snakemake(workdir, "-n", "plan", "--config", "data={source: rsna, root: /nonexistent/rsna}")
    assert planned_jobs(planned) == {"plan": 1}  # the plan needs no data: a laptop plans a cluster's study


@pytest.mark.parametrize(
    "override, message",
    [
        ("data={source: kaggle, root: x}", "kaggle"),
        ("typo_key=1", "typo_key"),
        ("synthetic={n_patients: 0, image_shape: [64, 64], cancer_rate: 0.1, seed: 1}", "n_patients"),
        ("grid={patch_sizes: [7]}", "the grid has no cell: no patch size of [7] divides"),
        ("figures={reference: {variant: eager}}", "figures.reference.variant 'eager' is not in grid.variants"),
        ("figures={baseline: nope}", "figures.baseline is 'nope', not one of grid.variants"),
        ("figures={vector_format: eps}", "eps"),
        (
            "grid={extra_cells: [{hardware: local-cpu, variant: flash, image_size: 512, patch_size: 24}]}",
            "patch size 24 does not divide 512",
        ),
    ],
    ids=[
        "bad-source",
        "unknown-key",
        "zero-patients",
        "no-cell",
        "bad-reference",
        "bad-baseline",
        "bad-format",
        "bad-extra-cell",
    ],
)
def test_invalid_config_is_refused_with_the_offending_value(tmp_path, override, message):
    """One line, naming the value: no traceback, no schema or config dump (Snakemake's own banner aside)."""
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "-n", "all", "--config", override, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in output and 'File "' not in output and "properties" not in output


def test_a_grid_without_a_cell_still_builds_the_cache(tmp_path):
    """The cache needs image sizes only: a grid whose patch sizes fit none blocks "all", not "cache"."""
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "-n", "cache", "--config", "grid={patch_sizes: [7]}")
    assert planned_jobs(result)["cache_tiles"] > 0


def test_lint_is_clean(tmp_path):
    workdir = copy_workflow(tmp_path)
    lint = snakemake(workdir, "--lint", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Congratulations" in lint.stdout + lint.stderr


def planned_mem_mb(result: subprocess.CompletedProcess) -> dict[str, set[int]]:
    """rule -> the mem_mb values of its planned jobs, from a dry run's job listing."""
    found: dict[str, set[int]] = {}
    rule = None
    for line in result.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule and "mem_mb=" in line:
            found.setdefault(rule, set()).add(int(line.split("mem_mb=")[1].split(",")[0]))
    return found


def test_memory_requests_of_the_heavy_rules_double_on_the_retry(tmp_path):
    workdir = copy_workflow(tmp_path)
    first, retry = (
        planned_mem_mb(
            snakemake(
                workdir, "-n", "-c2", "all", "decode_audit", "--configfile", "config/test.yaml", "--attempt", attempt
            )
        )
        for attempt in ("1", "2")
    )
    for rule in ("cache_views", "cache_tiles", "decode_audit", "train_cell"):
        assert first[rule] and {2 * mem for mem in first[rule]} == retry[rule], rule
    assert first["train_cell"] == {8000, 4000}  # local-cpu: 8000 (config.yaml); local-cpu-b: the default
    assert first["cache_views"] == {4000}  # 2 threads x 2000


def test_quality_cells_trained_with_several_seeds(tmp_path):
    """The embedded study at 64 px (its 40 patients give a validation split with both classes), its two quality
    cells trained with 2 seeds each: the extra seed is a train_seed job; the tables and report give the spread."""
    workdir = copy_workflow(tmp_path / "wf")
    options = [
        "--config",
        "grid={image_sizes: [64], patch_sizes: [32]}",
        "figures={reference: {image_size: 64, patch_size: 32}}",
        "train={seeds: 2, epochs: 2, full_mode_at: [{image_size: 64, patch_size: 32}]}",
    ]
    assert planned_jobs(snakemake(workdir, "-n", "all", *options))["train_seed"] == 2  # flash and materialised
    snakemake(workdir, "--cores", "2", "all", *options)
    for variant in ("flash", "materialised"):
        run = files.fill(files.SEED_RUN, hardware="local-cpu", variant=variant, image_size=64, patch_size=32, seed=2024)
        seed = json.loads((workdir / run / files.METRICS).read_text())
        assert seed["status"] == "ok" and seed["config"]["seed"] == 2024 and seed["mode"] == "full"
    runs = files.read_runs(workdir / files.RUNS_CSV).set_index("variant")
    assert list(runs["seeds_scored"]) == [2, 2]  # each cell and its extra seed, read by the tables
    aucs = json.loads(runs.loc["flash", "val_auc_seeds"])
    assert len(aucs) == 2 and aucs[0] == runs.loc["flash", "val_auc"]  # the cell itself is the first seed
    assert runs.loc["flash", "val_auc_seeds_mean"] == pytest.approx(sum(aucs) / 2)
    assert "over 2 seeds: mean" in (workdir / files.REPORT).read_text()


def test_a_densenet_variant_plans_a_cell_per_image_size_named_without_a_patch(tmp_path):
    """DenseNet-121 beside the ViTs of the embedded study: one train_cell per image size, its run directory
    ``img<S>``, and the tables, figures and report after them."""
    workdir = copy_workflow(tmp_path)
    variants = (
        "grid={variants: {flash: {family: xtransformers, attention: flash}, materialised: {family: xtransformers, "
    )
    variants += "attention: materialised}, densenet: {family: densenet}}}"
    result = snakemake(workdir, "-n", "all", "--config", variants)
    output = result.stdout + result.stderr
    assert planned_jobs(result)["train_cell"] == 2 * 2 * 3 + 2
    for size in (384, 512):
        assert f"{files.RUNS}/local-cpu/densenet/img{size}/metrics.json" in output
    assert "densenet/img384_p" not in output
    assert {rule: planned_jobs(result)[rule] for rule in AFTER_CELLS} == AFTER_CELLS


def test_a_densenet_baseline_beside_the_vits_trains_its_cells_alone_and_joins_every_table(finished_run, tmp_path):
    """The mammography grid with a CNN variant: only the DenseNet cells train (one per hardware and image size), their
    records hold no patch size and no tokens, and the tables, figures and report take them."""
    workdir = tmp_path / "wf"
    shutil.copytree(finished_run, workdir, symlinks=True)
    grid = (
        "grid={variants: {flash: {family: xtransformers, attention: flash}, materialised: {family: xtransformers, "
        "attention: materialised}, densenet: {family: densenet}}}"
    )
    args = ("all", "--configfile", "config/test.yaml", "--config", grid)
    assert planned_jobs(snakemake(workdir, "-n", *args)) == {"all": 1, "train_cell": 4, **REPLAN, **AFTER_CELLS}
    snakemake(workdir, "--cores", "2", *args)
    for hardware in ("local-cpu", "local-cpu-b"):
        for size in (64, 128):
            record = records.read_cell_record(workdir / files.run_dir(hardware, "densenet", size, None))
            records.validate_metrics(record)
            assert record["status"] == "ok" and record["throughput_img_s"] > 0
            assert record["patch_size"] is None and record["seq_len"] is None and record["attention"] == "none"
            assert record["model"] == "densenet/densenet-121"
    runs = files.read_runs(workdir / files.RUNS_CSV)
    cnn = runs[runs["variant"] == "densenet"]
    assert len(cnn) == 4 and cnn["patch_size"].isna().all() and (runs["variant"] != "densenet").sum() == 8
    plan = files.PLAN_TABLE.read(workdir / files.PLAN_CSV)
    assert plan.loc[plan["variant"] == "densenet", "patch_size"].isna().all()
    assert plan.loc[plan["variant"] == "densenet", "predicted_peak_bytes"].gt(0).all()
    speedups = files.SPEEDUP_TABLE.read(workdir / files.SPEEDUPS_CSV)
    assert "densenet" not in set(speedups["flash_variant"]) | set(speedups["baseline_variant"])
    assert "local-cpu/densenet/img128" in (workdir / files.REPORT).read_text()
