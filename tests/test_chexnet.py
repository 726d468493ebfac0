"""The second study end to end: CheXNet's DenseNet-121 on a synthetic ChestX-ray14 set, on this machine's CPU, and
the published reproduction's plan (config/chexnet.yaml) made on a machine without its data."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mammoscale import files, records, tasks
from mammoscale.report import captions, findings

from test_workflow import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.workflow
LOCAL = ("--configfile", "config/chexnet-local.yaml")


@pytest.fixture(scope="module")
def chest_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("chexnet"))
    snakemake(workdir, "--cores", "2", "all", *LOCAL, "--config", "train={epochs: 2}")
    return workdir


def test_the_synthetic_study_trains_densenet_on_fourteen_findings(chest_run):
    record = records.read_cell_record(chest_run / files.run_dir("local-cpu", "densenet", 64, None))
    records.validate_metrics(record)
    assert record["status"] == "ok" and record["mode"] == "full" and record["model"] == "densenet/densenet-121"
    assert record["patch_size"] is None and record["seq_len"] is None
    per_label = record["val_auc_per_label"]
    assert list(per_label) == list(tasks.FINDINGS)
    scored = [entry["auc"] for entry in per_label.values() if entry["auc"] is not None]
    assert scored and 0 <= record["val_auc"] <= 1 and record["val_auc"] == pytest.approx(sum(scored) / len(scored))
    assert record["val_images"] > 0 and record["val_pf1"] is None


def test_its_manifest_counts_add_up_and_its_cache_holds_every_kept_image(chest_run):
    counts = json.loads((chest_run / files.MANIFEST_COUNTS).read_text())
    assert counts["rows"] == counts["rows_accounted"] == counts["images"] + sum(counts["excluded_by_reason"].values())
    index = pd.read_csv(chest_run / "results" / "cache" / files.fill(files.TILE_INDEX, image_size=64))
    assert len(index) == counts["images"] and set(tasks.FINDINGS) <= set(index.columns)
    images = files.CHEST_IMAGE_TABLE.read(chest_run / files.CHEST_IMAGES)
    assert images.groupby("patient_id")["split"].nunique().eq(1).all()  # no patient in two splits


def test_the_report_puts_each_findings_auroc_beside_chexnets(chest_run):
    table = files.FINDINGS_TABLE.read(chest_run / files.FINDINGS_CSV)
    assert list(table["finding"]) == [*tasks.FINDINGS, findings.MEAN]
    assert table.loc[table["finding"] != findings.MEAN, "chexnet_auc"].between(0.7, 0.95).all()
    page = (chest_run / files.REPORT).read_text()
    assert "CheXNet (published)" in page and "Images per finding" in page and "Pleural_Thickening" in page
    assert "local-cpu/densenet/img64" in page and "Scaling across ranks and nodes" in page
    assert "Flash Attention study" not in page and "Published claims:" not in page  # the mammography study's claims


def test_the_figures_about_a_vits_patches_and_attention_are_left_out_and_said_so(chest_run):
    drawn = sorted(path.stem for path in (chest_run / "results" / "figures").glob("*.png"))
    assert drawn == sorted(set(captions.FIGURES) - {"fig3_patch_size", "fig4_flash_vs_baseline"})
    page = (chest_run / files.REPORT).read_text()
    assert 'id="figure-fig3_patch_size"' not in page and 'id="figure-memory"' in page
    assert "Not drawn: <code>fig3_patch_size</code>, as no variant of grid.variants has a patch size" in page


def test_a_finished_synthetic_study_has_nothing_to_do(chest_run):
    result = snakemake(chest_run, "-n", "all", *LOCAL, "--config", "train={epochs: 2}")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_the_reproduction_plans_its_scaling_sweep_without_its_data(tmp_path):
    workdir = copy_workflow(tmp_path)
    snakemake(workdir, "--cores", "1", "plan", "--configfile", "config/chexnet.yaml")
    plan = files.PLAN_TABLE.read(workdir / files.PLAN_CSV)
    assert sorted(set(plan["world_size"])) == [1, 2, 4, 8, 16] and sorted(set(plan["image_size"])) == [224, 256]
    assert plan["patch_size"].isna().all() and plan["seq_len"].isna().all() and plan["fits"].all()
    # CheXNet's recipe: 16 images a rank, so a run's steps shrink as its ranks grow
    steps = plan[plan["image_size"] == 224].set_index("world_size")["steps"]
    assert steps[1] > steps[2] > steps[4] > steps[8] > steps[16]
    jobs = planned_jobs(snakemake(workdir, "-n", "plan", "--configfile", "config/chexnet.yaml"))
    assert jobs == {}  # planned already: nothing to do


def test_the_reproduction_stops_in_one_line_without_its_data(tmp_path):
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "-n", "all", "--configfile", "config/chexnet.yaml", check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1 and "/set/me/chestxray14" in errors[0]
    assert "Traceback" not in result.stderr


def test_pretrained_weights_that_are_not_there_stop_the_study_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path)
    weights = (
        "grid={variants: {densenet: {family: densenet, weights: {path: /nowhere/densenet121.pth, sha256: a639ec97}}}}"
    )
    result = snakemake(workdir, "-n", "all", *LOCAL, "--config", weights, check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1 and "Traceback" not in result.stderr
    assert "grid.variants.densenet.weights.path /nowhere/densenet121.pth is not a file" in errors[0]
    assert planned_jobs(snakemake(workdir, "-n", "plan", *LOCAL, "--config", weights))["plan"] == 1  # plans without it
