"""The task of several labels end to end: a ChestX-ray14-like cache of 14 findings, a cell trained on it with one
sigmoid per finding and binary cross-entropy, each finding's AUROC with its interval over patients, and the table
that sets them beside CheXNet's published AUROCs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammoscale import cache, files, records, stats, train
from mammoscale.errors import UserError
from mammoscale.report import findings, quality
from mammoscale.tasks import BREAST_CANCER, CHEST_FINDINGS, FINDINGS
from mammoscale.train import batches, losses, scores

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SIZE = 64
RARE = "Hernia"
"""The finding the test cache leaves out of validation: one class only there, so out of the mean."""


def write_chest_cache(root: Path, *, patients: int = 40, seed: int = 0) -> Path:
    """A tile cache of the chest-findings kind (one row per image, a 0/1 column per finding): ``patients`` patients of
    two images each, 3 in 5 patients in train and the rest in val; each finding present in about 30 % of the images
    (never :data:`RARE` in val) and drawn as a bright band of rows of its own, so a model can learn it."""
    rng = np.random.default_rng(seed)
    band = SIZE // len(FINDINGS)
    rows, tiles = [], []
    shard = files.under(root, files.TILES_SHARD, image_size=SIZE, shard=0)
    for patient in range(patients):
        split = "val" if patient % 5 >= 3 else "train"
        for follow_up in range(2):
            present = rng.random(len(FINDINGS)) < 0.3
            present[FINDINGS.index(RARE)] &= split == "train"
            tile = rng.integers(0, 80, (SIZE, SIZE)).astype(np.uint8)
            for k in np.flatnonzero(present):
                tile[k * band : (k + 1) * band] += 150
            rows.append(
                {
                    "image_id": f"{patient:08d}_{follow_up:03d}.png",
                    "patient_id": patient,
                    "label": int(present.any()),
                    **dict(zip(FINDINGS, present.astype(int))),
                    "split": split,
                    "shard": 0,
                    "file": shard.name,
                    "offset": len(tiles),
                    "crc32": files.crc32(tile),
                }
            )
            tiles.append(tile)
    shard.parent.mkdir(parents=True)
    np.save(shard, np.stack(tiles))
    index = pd.DataFrame(rows).assign(shard_sha256=files.sha256_file(shard))
    cache.write_index(
        index,
        files.under(root, files.TILE_INDEX, image_size=SIZE),
        files.under(root, files.TILE_INDEX_CHECK, image_size=SIZE),
    )
    return root


@pytest.fixture(scope="module")
def chest_cache(tmp_path_factory) -> Path:
    return write_chest_cache(tmp_path_factory.mktemp("chest-cache"))


def chest_cell(cache_root: Path, **overrides) -> dict:
    base = {
        "cache_root": str(cache_root),
        "task": CHEST_FINDINGS.name,
        "image_size": SIZE,
        "patch_size": 16,
        "model_size": "vit-tiny",
        "mode": "full",
        "epochs": 3,
        "global_batch": 8,
        "micro_batch": 4,
        "loader_workers": 0,
        "lr": 1e-3,
        "checkpoint": False,
    }
    return {**base, **overrides}


@pytest.fixture(scope="module")
def scored(chest_cache, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("chest-cell")
    return train.run_cell(chest_cell(chest_cache), out), out


# the split's targets and the loss


def test_a_split_of_several_labels_gives_float_rows_of_its_findings(chest_cache):
    split = batches.open_split(chest_cache, SIZE, "val", both_classes=True, task=CHEST_FINDINGS)
    tile, target = split[0]
    assert tile.shape == (SIZE, SIZE) and target.dtype == torch.float32 and target.shape == (len(FINDINGS),)
    assert target.tolist() == split.index.loc[0, list(FINDINGS)].astype(float).tolist()
    assert split.positives()[FINDINGS.index(RARE)] == 0 and split.positives().sum() > 0
    sampler = batches.train_sampler(split, world=1, rank=0, seed=0)
    options = {"micro_batch": 4, "device": torch.device("cpu"), "loader": batches.LoaderPlan(0, None)}
    held = batches.Batches(split, sampler, on_device=True, pin_memory=False, **options)
    loaded = batches.Batches(split, sampler, on_device=False, pin_memory=False, **options)
    for (tiles_a, targets_a), (tiles_b, targets_b) in zip(held.epoch(0), loaded.epoch(0)):
        assert torch.equal(tiles_a, tiles_b) and torch.equal(targets_a, targets_b)
        assert targets_a.shape == (4, len(FINDINGS)) and targets_a.dtype == torch.float32
    assert torch.equal(held.first(3)[1], loaded.first(3)[1])


def test_a_mammography_cache_has_no_findings_to_train_on(train_cache):
    with pytest.raises(UserError, match=r"no label column\(s\) Atelectasis, .* not built for task chest-findings"):
        batches.open_split(train_cache, 64, "val", task=CHEST_FINDINGS)


def test_a_split_without_any_finding_with_both_classes_is_refused(tmp_path):
    root = write_chest_cache(tmp_path / "cache")
    index = cache.open_tiles(root, SIZE).index
    val = index["split"] == "val"
    index.loc[val, list(FINDINGS)] = 0
    index.loc[val, "label"] = 0
    cache.write_index(
        index,
        files.under(root, files.TILE_INDEX, image_size=SIZE),
        files.under(root, files.TILE_INDEX_CHECK, image_size=SIZE),
    )
    with pytest.raises(
        UserError, match=r"the val split of the img64 cache has no label with both classes among its 32 images"
    ):
        batches.open_split(root, SIZE, "val", both_classes=True, task=CHEST_FINDINGS)


def test_the_loss_of_each_task():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    by_hand = -(targets * torch.log(torch.sigmoid(logits)) + (1 - targets) * torch.log(1 - torch.sigmoid(logits)))
    assert losses.loss(CHEST_FINDINGS, logits, targets).item() == pytest.approx(by_hand.mean().item())
    assert torch.allclose(losses.probabilities(CHEST_FINDINGS, logits), torch.sigmoid(logits))
    two = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    picked = torch.log_softmax(two, dim=1)[[0, 1], [1, 0]]
    assert losses.loss(BREAST_CANCER, two, torch.tensor([1, 0])).item() == pytest.approx(-picked.mean().item())
    assert torch.allclose(losses.probabilities(BREAST_CANCER, two), torch.softmax(two, dim=1)[:, 1])
    assert losses.random_targets(CHEST_FINDINGS, 5).shape == (5, 14)
    assert losses.random_targets(BREAST_CANCER, 5).dtype == torch.int64


# a cell of several labels, end to end


def test_a_cell_of_14_findings_records_each_findings_auroc_with_its_interval(scored):
    result, out = scored
    on_disk = json.loads((out / files.METRICS).read_text())
    records.validate_metrics(on_disk)
    assert on_disk == json.loads(json.dumps(result)) and result["status"] == "ok"
    assert result["steps"] == 3 * (48 // 8) == len(result["loss_curve"]) and all(np.isfinite(result["loss_curve"]))
    assert result["config"]["task"] == CHEST_FINDINGS.name
    per_label = result["val_auc_per_label"]
    assert list(per_label) == list(FINDINGS)
    index = cache.open_tiles(on_disk["config"]["cache_root"], SIZE).index
    val = index[index["split"] == "val"]
    assert result["val_images"] == len(val) == 32 and result["val_positive_images"] == int(val["label"].sum())
    for finding, entry in per_label.items():
        assert set(entry) == set(records.label_keys()) and entry["positives"] == int(val[finding].sum())
        if finding == RARE:
            assert entry == {"auc": None, "ci_low": None, "ci_high": None, "positives": 0}
            continue
        assert entry["ci_low"] <= entry["auc"] <= entry["ci_high"]
    scored_aucs = [entry["auc"] for entry in per_label.values() if entry["auc"] is not None]
    assert result["val_auc"] == pytest.approx(np.mean(scored_aucs), abs=1e-6)
    assert result["val_auc_ci_low"] <= result["val_auc"] <= result["val_auc_ci_high"]
    assert result["val_auc_ci_high"] - result["val_auc_ci_low"] < max(
        e["ci_high"] - e["ci_low"] for e in per_label.values() if e["auc"]
    )
    assert result["val_pf1"] is None and result["val_breasts"] is None and result["val_positive_breasts"] is None
    log = (out / files.TRAIN_LOG).read_text()
    assert f"validation: 32 images ({result['val_positive_images']} with a finding), mean AUROC" in log
    assert f"over 13 findings (95% intervals, patients resampled); left out of the mean (one class only): {RARE}" in log


def test_the_predictions_file_is_what_the_cell_scored(scored):
    result, out = scored
    predictions = files.FINDING_PREDICTION_TABLE.read(out / files.PREDICTIONS)
    assert list(predictions.columns) == list(files.FINDING_PREDICTION_TABLE.columns)
    assert len(predictions) == 32 * len(FINDINGS) and predictions["probability"].between(0, 1).all()
    again = scores.evaluate_findings(predictions, FINDINGS)
    assert {key: again[key] for key in scores.QUALITY_KEYS} == {key: result[key] for key in scores.QUALITY_KEYS}


def test_the_findings_are_learnt(scored):
    """Each finding is a bright band of its own in the test cache: three epochs of a tiny ViT tell most apart."""
    result, _ = scored
    assert result["val_auc"] > 0.6 and result["loss_curve"][-1] < result["loss_curve"][0]


def test_held_on_the_device_or_loaded_the_same_model_trains(chest_cache, tmp_path):
    curves = [
        train.run_cell(chest_cell(chest_cache, epochs=1, precision="fp32", data_on_device=where), tmp_path / where)[
            "loss_curve"
        ]
        for where in ("yes", "no")
    ]
    assert curves[0] == curves[1]


def test_a_densenet_cell_of_14_findings(chest_cache, tmp_path):
    result = train.run_cell(
        chest_cell(
            chest_cache, family="densenet", attention="none", model_size="densenet-121", patch_size=None, epochs=1
        ),
        tmp_path,
    )
    assert result["status"] == "ok" and result["patch_size"] is None and result["seq_len"] is None
    assert result["model"] == "densenet/densenet-121" and len(result["val_auc_per_label"]) == 14
    assert 0 <= result["val_auc"] <= 1


def test_the_bare_loop_and_the_memory_measurement_train_several_labels():
    from mammoscale.train import bench, memory

    shape = {"image_size": SIZE, "patch_size": 32}
    times = bench.bare_steps(task=CHEST_FINDINGS.name, **shape, micro_batch=1, global_batch=2, steps=1, warmup=1)
    assert len(times) == 1 and times[0] > 0
    measured = memory.measure_step("xtransformers", "flash", "vit-tiny", **shape, task=CHEST_FINDINGS.name)
    assert measured.peak > measured.state > 0


# the findings table and its section


def test_chexnets_published_aurocs_are_packaged_with_their_source():
    table = findings.published()
    assert list(table.index) == list(FINDINGS) and list(table.columns) == ["chexnet", "wang2017", "yao2017"]
    assert table.loc["Atelectasis", "chexnet"] == 0.8094 and table.loc["Hernia", "chexnet"] == 0.9164
    assert table["chexnet"].mean() == pytest.approx(0.8414, abs=1e-4)  # CheXNet's mean over the 14: 0.841
    assert (table["chexnet"] > table["wang2017"]).all()  # "state of the art on all 14"
    from importlib import resources

    header = resources.files("mammoscale").joinpath(findings.PUBLISHED).read_text()
    assert "arXiv:1711.05225" in header and "Table 2" in header


def runs_of(*cells: tuple[str, Path, dict]) -> pd.DataFrame:
    """runs.csv's rows of scored cells: (variant, run directory, record)."""
    return pd.DataFrame(
        [
            {
                "hardware": "local-cpu",
                "variant": variant,
                "image_size": SIZE,
                "patch_size": record["patch_size"],
                "status": record["status"],
                "val_auc": record["val_auc"],
                "val_images": record["val_images"],
                "val_positive_images": record["val_positive_images"],
                "config.task": record["config"]["task"],
                "run_dir": str(run_dir),
            }
            for variant, run_dir, record in cells
        ]
    )


def test_the_findings_table_sets_each_finding_beside_chexnet(scored, tmp_path):
    result, out = scored
    table = findings.findings_table(runs_of(("flash", out, result)))
    assert list(table.columns) == list(files.FINDINGS_TABLE.columns)
    assert list(table["finding"]) == [*FINDINGS, findings.MEAN]
    rows = table.set_index("finding")
    for finding in FINDINGS:
        entry = result["val_auc_per_label"][finding]
        assert rows.loc[finding, "positives"] == entry["positives"]
        assert rows.loc[finding, "chexnet_auc"] == findings.published().loc[finding, "chexnet"]
        low, high, chexnet = entry["ci_low"], entry["ci_high"], rows.loc[finding, "chexnet_auc"]
        expected = pd.NA if low is None else low <= chexnet <= high
        assert rows.loc[finding, "chexnet_inside"] is expected or rows.loc[finding, "chexnet_inside"] == expected
    assert pd.isna(rows.loc[RARE, "auc"]) and pd.isna(rows.loc[RARE, "chexnet_inside"])
    assert rows.loc[findings.MEAN, "auc"] == result["val_auc"]
    others = findings.published()["chexnet"].drop(RARE)
    assert rows.loc[findings.MEAN, "chexnet_auc"] == pytest.approx(others.mean())  # over the same 13 findings
    path = tmp_path / "findings.csv"
    files.FINDINGS_TABLE.write(table, path)
    back = files.FINDINGS_TABLE.read(path)
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


def test_the_findings_section(scored):
    result, out = scored
    html = findings.findings_section(findings.findings_table(runs_of(("flash", out, result))))
    cell = files.cell_name("local-cpu", "flash", SIZE, 16)
    assert f"<th>{cell}</th>" in html and "<th>CheXNet (published)</th>" in html and "0.8094" in html
    assert (
        "one class only: not scored" in html
        and f"Left out of the mean (one class only in validation): {cell}: {RARE}" in html
    )
    auc = result["val_auc_per_label"]["Atelectasis"]
    assert f"{auc['auc']:.3f} [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]; CheXNet " in html
    assert findings.findings_section(files.FINDINGS_TABLE.frame()) == ""


def test_a_published_value_inside_above_or_below_an_interval():
    assert findings.inside(0.8, 0.7, 0.9) is True and findings.inside(0.95, 0.7, 0.9) is False
    assert findings.inside(0.8, None, 0.9) is None and findings.inside(None, 0.7, 0.9) is None


def test_two_cells_of_findings_are_compared_on_their_mean_auroc(scored, chest_cache, tmp_path):
    result, out = scored
    other = train.run_cell(chest_cell(chest_cache, epochs=1, attention="materialised"), tmp_path)
    runs = runs_of(("flash", out, result), ("materialised", tmp_path, other))
    table = quality.comparisons(runs)
    assert list(table["metric"]) == ["auc"] and table["verdict"].iloc[0] != quality.NOT_COMPARED
    row = table.iloc[0]
    assert row["a"] == pytest.approx(result["val_auc"], abs=1e-6) and row["b"] == pytest.approx(
        other["val_auc"], abs=1e-6
    )
    assert row["ci_low"] <= row["difference"] <= row["ci_high"] and row["breasts"] == 32
    lines = quality.sentences(runs, table)
    assert any(
        line.startswith("Validation mean AUROC over findings of local-cpu/flash/img64_p16") and " on 32 images" in line
        for line in lines
    )


# the statistics of several labels


def test_each_labels_auc_and_interval_match_a_resample_by_resample_computation():
    rng = np.random.default_rng(4)
    patients = np.repeat(np.arange(30), 3)
    labels = rng.random((90, 3)) < [0.4, 0.2, 0.0]
    probabilities = np.clip(0.3 * labels + rng.random((90, 3)), 0, 1.5)
    result = stats.label_aucs(patients, labels, probabilities)
    assert result.auc[:2] == tuple(stats.roc_auc(labels[:, k], probabilities[:, k]) for k in range(2))
    assert result.auc[2] is None and result.ci_low[2] is None and result.scored == (True, True, False)
    assert result.mean == pytest.approx(np.mean(result.auc[:2])) and result.positives == tuple(labels.sum(axis=0))
    draws = stats._patient_draws(patients, labels, stats._rng())  # the same resamples, as rows
    by_hand = np.array([[stats._value("auc", labels[i, k], probabilities[i, k]) for k in range(2)] for i in draws])
    assert np.allclose(result.draws[:, :2], by_hand, equal_nan=True)
    for k in range(2):
        assert (result.ci_low[k], result.ci_high[k]) == pytest.approx(stats._bounds(by_hand[:, k]))
    assert (result.mean_ci_low, result.mean_ci_high) == pytest.approx(stats._bounds(by_hand.mean(axis=1)))


def test_a_label_too_rare_to_resample_gets_no_interval():
    patients = np.arange(40)
    labels = np.zeros((40, 2), dtype=bool)
    labels[:20, 0] = True  # common
    labels[0, 1] = True  # one positive patient: missing from about a third of the resamples
    probabilities = np.random.default_rng(0).random((40, 2))
    result = stats.label_aucs(patients, labels, probabilities)
    assert result.auc[1] is not None and (result.ci_low[1], result.ci_high[1]) == (None, None)
    assert result.ci_low[0] is not None and result.mean_ci_low is None  # the mean needs every label it averages


def test_the_paired_comparison_of_two_models_of_several_labels():
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(50), 2)
    labels = rng.random((100, 4)) < 0.3
    good = labels + rng.normal(0, 0.3, (100, 4))
    poor = labels + rng.normal(0, 3.0, (100, 4))
    better = stats.paired_labels(patients, labels, good, poor)
    assert better.metric == "auc" and better.distinguishable and better.ci_low > 0 and better.p_value < 0.05
    assert better.difference == pytest.approx(stats.label_aucs(patients, labels, good).mean - better.b)
    same = stats.paired_labels(patients, labels, good, good)
    assert same.difference == 0 and (same.ci_low, same.ci_high) == (0, 0)
