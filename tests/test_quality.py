"""Model quality compared on the same validation breasts (mammoscale.report.quality, quality.csv)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mammoscale import files, stats
from mammoscale.report import quality

PATIENTS = 150


def scored_cell(tmp_path, variant: str, probability, label, **record) -> dict:
    run_dir = tmp_path / variant
    run_dir.mkdir()
    patient = np.repeat(np.arange(PATIENTS), 2)
    frame = pd.DataFrame(
        {"patient_id": patient, "laterality": np.tile(["L", "R"], PATIENTS), "label": label, "probability": probability}
    )
    files.PREDICTION_TABLE.write(frame, run_dir / files.PREDICTIONS)
    return {
        "hardware": "cpu",
        "variant": variant,
        "image_size": 64,
        "patch_size": 32,
        "status": "ok",
        "val_auc": stats.roc_auc(label, probability),
        "val_breasts": len(frame),
        "run_dir": str(run_dir),
        **record,
    }


@pytest.fixture
def labels():
    return np.random.default_rng(0).integers(0, 2, 2 * PATIENTS)


def test_two_models_alike_are_indistinguishable(tmp_path, labels):
    rng = np.random.default_rng(1)
    noise = rng.uniform(0, 1, labels.size)
    runs = pd.DataFrame(
        [
            scored_cell(tmp_path, "flash", 0.1 * labels + noise, labels),
            scored_cell(tmp_path, "materialised", 0.1 * labels + noise + rng.normal(0, 0.01, labels.size), labels),
        ]
    )
    table = quality.comparisons(runs)
    assert list(table.columns) == list(files.QUALITY_TABLE.columns)
    assert list(table["metric"]) == list(stats.METRICS) and set(table["verdict"]) == {quality.INDISTINGUISHABLE}
    auc = table[table["metric"] == "auc"].iloc[0]
    assert auc["ci_low"] <= 0 <= auc["ci_high"] and auc["breasts"] == 2 * PATIENTS
    assert auc["a"] == pytest.approx(runs["val_auc"][0])


def test_a_clearly_better_model_is_named(tmp_path, labels):
    rng = np.random.default_rng(2)
    runs = pd.DataFrame(
        [
            scored_cell(tmp_path, "flash", rng.uniform(0, 1, labels.size), labels),
            scored_cell(tmp_path, "materialised", 0.8 * labels + rng.uniform(0, 1, labels.size), labels),
        ]
    )
    auc = quality.comparisons(runs).set_index("metric").loc["auc"]
    assert auc["verdict"] == quality.better("materialised") and auc["difference"] < 0 and auc["p_value"] < 0.01


def test_predictions_that_are_not_what_was_scored_are_not_used(tmp_path, labels):
    rng = np.random.default_rng(3)
    good = scored_cell(tmp_path, "flash", rng.uniform(0, 1, labels.size), labels)
    edited = scored_cell(tmp_path, "materialised", rng.uniform(0, 1, labels.size), labels)
    edited["val_auc"] = 0.99  # the record says otherwise: the file was changed after the cell scored
    missing = scored_cell(tmp_path, "hf-eager", rng.uniform(0, 1, labels.size), labels)
    (tmp_path / "hf-eager" / files.PREDICTIONS).unlink()
    table = quality.comparisons(pd.DataFrame([good, edited, missing]))
    assert len(table) == 3 * len(stats.METRICS) and set(table["verdict"]) == {quality.NOT_COMPARED}
    assert table["detail"].str.contains("is not what the cell scored").sum() == 2 * len(stats.METRICS)
    assert table["detail"].str.contains("is missing").sum() == 2 * len(stats.METRICS)
    assert table["detail"].str.contains("--forcerun").all()


def test_cells_elsewhere_or_unscored_are_not_paired(tmp_path, labels):
    rng = np.random.default_rng(4)
    first = scored_cell(tmp_path, "flash", rng.uniform(0, 1, labels.size), labels)
    other = scored_cell(tmp_path, "materialised", rng.uniform(0, 1, labels.size), labels, image_size=128)
    unscored = {**first, "variant": "hf-eager", "val_auc": None}
    assert quality.comparisons(pd.DataFrame([first, other, unscored])).empty


def test_a_quality_cell_over_its_seeds(tmp_path):
    cell = {"status": "ok", "mode": "full", "config": {"seed": 10}, "val_auc": 0.70, "val_pf1": 0.30}
    for seed, auc in ((11, 0.74), (13, 0.99)):  # 13 is not one of the 3 seeds (10, 11, 12): not read
        directory = tmp_path / files.fill(files.SEED_DIR, seed=seed)
        directory.mkdir(parents=True)
        (directory / files.METRICS).write_text(json.dumps({**cell, "config": {"seed": seed}, "val_auc": auc}))
    summary = quality.seed_summary(cell, tmp_path, 3)
    assert summary["seeds_scored"] == 2 and json.loads(summary["val_auc_seeds"]) == [0.70, 0.74]
    assert summary["val_auc_seeds_mean"] == pytest.approx(0.72) and summary["val_auc_seeds_sd"] == pytest.approx(
        np.std([0.70, 0.74], ddof=1)
    )
    assert quality.seed_summary(cell, tmp_path, 1) == {}
    assert quality.seed_summary({**cell, "mode": "throughput"}, tmp_path, 3) == {}
    row = pd.Series({**cell, "hardware": "cpu", "variant": "flash", "image_size": 64, "patch_size": 32, **summary})
    (line,) = quality.sentences(pd.DataFrame([row]), files.QUALITY_TABLE.frame())
    assert "; over 2 seeds: mean 0.720, sd 0.028." in line
