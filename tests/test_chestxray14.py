"""ChestX-ray14 as a data source: the synthetic set, the manifest, the tile cache and open_tiles, the rules' DAG."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mammoscale import cache, config, files, stats
from mammoscale.dataset import chestxray14 as dataset
from mammoscale.dataset.manifest import ManifestError
from mammoscale.plan.sizing import nominal_train_breasts
from mammoscale.preprocess import chestxray14 as preprocess
from mammoscale.preprocess.tiles import PreprocessError
from mammoscale.synthetic import chestxray14 as synthetic
from mammoscale.tasks import CHEST_FINDINGS, FINDINGS, NO_FINDING

from test_workflow import copy_workflow, planned_jobs, snakemake

SIZES = (32, 64)
CONFIG = {
    "grid": {"image_sizes": list(SIZES)},
    "manifest": {"split": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 1},
    "cache": {"shards": 2},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return synthetic.generate(
        tmp_path_factory.mktemp("data") / "cxr", n_patients=80, image_size=64, test_fraction=0.2, seed=3
    )


@pytest.fixture(scope="module")
def built(data, tmp_path_factory) -> Path:
    """The cache root; the manifest and the QC are under its working directory, ``workdir_of(built)``."""
    return preprocess.build_cache(data, tmp_path_factory.mktemp("out"), config=CONFIG)


def workdir_of(cache_root: Path) -> Path:
    return cache_root.parents[1]  # the default cache.root, results/cache


def copy_of(data: Path, dest: Path) -> Path:
    return Path(shutil.copytree(data, dest))


def entries(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / files.CHEST_ENTRIES, dtype=str, keep_default_na=False, index_col=False)


def write_entries(root: Path, table: pd.DataFrame) -> None:
    table.to_csv(root / files.CHEST_ENTRIES, index=False)


# the synthetic set


def test_the_synthetic_set_has_nih_s_layout_and_about_its_frequencies(data):
    header = (data / files.CHEST_ENTRIES).read_text().splitlines()[0]
    assert header == ",".join(files.CHEST_COLUMNS) + ","  # NIH's header, its trailing empty column too
    table = entries(data)
    labels = [set(value.split("|")) for value in table["Finding Labels"]]
    assert all(names <= {*FINDINGS, NO_FINDING} and (NO_FINDING not in names or len(names) == 1) for names in labels)
    none = np.mean([names == {NO_FINDING} for names in labels])
    assert 0.5 < none < 0.65, none  # NIH: 53.8 %
    assert {name for names in labels for name in names} >= {"Infiltration", "Effusion", "Atelectasis"}
    patients = table.groupby("Patient ID")["Image Index"].count()
    assert len(patients) == 80 and patients.between(1, 4).all() and patients.nunique() > 1
    truth = pd.read_csv(data / files.SYNTHETIC_TRUTH)
    assert set(truth["mode"]) == set(synthetic.VARIATIONS)
    assert {Path(path).parts[0] for path in truth["path"]} == set(synthetic.part_directories())


def test_the_official_lists_split_the_set_by_patient(data):
    table = entries(data).set_index("Image Index")
    lists = {split: dataset.read_list(data, name) for split, name in dataset.LISTS.items()}
    assert sorted(lists["train_val"] + lists["test"]) == sorted(table.index)
    patients = {split: set(table.loc[images, "Patient ID"]) for split, images in lists.items()}
    assert not patients["train_val"] & patients["test"]
    assert len(patients["test"]) == 16  # 0.2 of 80


def test_the_synthetic_set_follows_from_its_seed(data, tmp_path):
    again = synthetic.generate(tmp_path / "again", n_patients=80, image_size=64, test_fraction=0.2, seed=3)
    other = synthetic.generate(tmp_path / "other", n_patients=80, image_size=64, test_fraction=0.2, seed=4)
    for name in (files.CHEST_ENTRIES, files.CHEST_TEST, "images_001/images/00000001_000.png"):
        assert (again / name).read_bytes() == (data / name).read_bytes(), name
    assert (other / files.CHEST_ENTRIES).read_bytes() != (data / files.CHEST_ENTRIES).read_bytes()
    with pytest.raises(FileExistsError):
        synthetic.generate(again, n_patients=2)


def test_each_finding_leaves_a_signal_a_linear_probe_learns(built):
    """Ridge regression on 32 x 32 pixels, per finding, scored on the held-out images: well above chance."""
    tiles = cache.open_tiles(built, 32)
    x = np.stack([np.asarray(tiles[i], dtype=np.float64).ravel() for i in range(len(tiles))]) / 255
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    train = (tiles.index["split"] == "train").to_numpy()
    aucs = []
    for name in FINDINGS:
        y = tiles.index[name].to_numpy(dtype=np.float64)
        if y[train].sum() < 2 or y[~train].sum() < 1 or y[~train].all():
            continue
        a = x[train]
        w = np.linalg.solve(a.T @ a + 300 * np.eye(a.shape[1]), a.T @ (y[train] - y[train].mean()))
        aucs.append(stats.roc_auc(y[~train], x[~train] @ w))
    assert len(aucs) >= 8 and np.mean(aucs) > 0.75, aucs


# decoding


@pytest.mark.parametrize(
    ("mode", "make"),
    [
        ("L", lambda v: Image.fromarray(v)),
        ("I;16", lambda v: Image.fromarray(v.astype(np.uint16) * 257)),
        ("RGB", lambda v: Image.fromarray(np.stack([v] * 3, -1))),
        ("RGBA", lambda v: Image.fromarray(np.stack([v, v, v, np.full_like(v, 7)], -1))),
        ("P", lambda v: Image.fromarray(v).convert("P")),
        ("LA", lambda v: Image.fromarray(v).convert("LA")),
    ],
)
def test_every_png_mode_becomes_the_same_8_bit_grey(tmp_path, mode, make):
    values = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))
    make(values).save(tmp_path / "x.png")
    grey, found = preprocess.read_png(tmp_path / "x.png", max_pixels=10**6)
    assert grey.dtype == np.uint8 and grey.shape == values.shape
    assert np.abs(grey.astype(int) - values).max() <= (8 if mode == "P" else 0), mode  # a palette keeps 256 greys
    assert found.startswith(mode[0])


@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated"),
        (lambda p: p.write_bytes(b"not an image at all"), "not_png"),
        (lambda p: Image.new("L", (8, 8)).save(p, format="JPEG"), "not_png"),
        (lambda p: p.unlink(), "missing_file"),
        (lambda p: (p.unlink(), p.mkdir()), "unreadable"),
    ],
)
def test_a_png_that_will_not_decode_says_why(tmp_path, damage, kind):
    path = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    damage(path)
    with pytest.raises(preprocess.ImageError) as error:
        preprocess.read_png(path, max_pixels=10**6)
    assert error.value.kind == kind and str(path) in str(error.value)


def test_a_png_larger_than_the_limit_is_refused_before_it_is_decoded(tmp_path):
    Image.new("L", (100, 100)).save(tmp_path / "x.png")
    with pytest.raises(preprocess.ImageError, match="100 x 100 is more than decode.max_pixels") as error:
        preprocess.read_png(tmp_path / "x.png", max_pixels=9999)
    assert error.value.kind == "too_large"


def test_a_non_square_image_is_letterboxed_with_its_aspect_kept():
    image = np.full((30, 60), 200, np.uint8)
    tile = preprocess.square(image, 32, "area")
    assert tile.shape == (32, 32)
    assert (tile[:8] == 0).all() and (tile[-8:] == 0).all() and (tile[8:24] == 200).all()


# the manifest and the cache


def test_manifest_cache_and_open_tiles_round_trip(data, built):
    workdir = workdir_of(built)
    images = files.CHEST_IMAGE_TABLE.read(workdir / files.CHEST_IMAGES)
    table = entries(data).set_index("Image Index")
    assert sorted(images["image_id"]) == sorted(table.index)
    for row in images.itertuples(index=False):  # the 0/1 columns are the CSV's findings, label is any of them
        names = set(table.at[row.image_id, "Finding Labels"].split("|")) - {NO_FINDING}
        assert {name for name in FINDINGS if getattr(row, name)} == names and row.label == int(bool(names))
    for size in SIZES:
        tiles = cache.open_tiles(built, size, verify=True)
        assert list(tiles.index.columns) == list(files.CHEST_TILE_TABLE.columns)
        assert len(tiles) == len(images) and tiles[0].shape == (size, size)
        merged = tiles.index.merge(images, on="image_id", suffixes=("", "_manifest"))
        for column in ("patient_id", "split", "shard", "label", *CHEST_FINDINGS.labels):
            assert (merged[column] == merged[f"{column}_manifest"]).all(), column
    tiles = cache.open_tiles(built, 64)
    for i in (0, len(tiles) // 2, len(tiles) - 1):  # each tile is its own PNG, fitted
        row = images.set_index("image_id").loc[tiles.index.at[i, "image_id"]]
        grey, _ = preprocess.read_png(data / row["path"], max_pixels=10**6)
        assert np.array_equal(tiles[i], preprocess.square(grey, 64, "area"))
    counts = files.read_json(workdir / files.MANIFEST_COUNTS)
    assert counts["rows"] == counts["images"] == len(images) and counts["excluded_by_reason"] == {}
    assert sum(counts["images_by_shard"]) == len(images)


def test_splits_are_patient_disjoint_and_the_test_split_is_the_official_list(data, built):
    images = files.CHEST_IMAGE_TABLE.read(workdir_of(built) / files.CHEST_IMAGES)
    assert (images.groupby("patient_id")["split"].nunique() == 1).all()
    assert sorted(images.loc[images["split"] == "test", "image_id"]) == dataset.read_list(data, files.CHEST_TEST)
    patients = images.groupby("split")["patient_id"].nunique()
    assert patients["train"] == 48 and patients["val"] == 16  # train_val's 64 patients split 0.6 : 0.2
    assert (images["shard"] == images["patient_id"] % 2).all()


def test_a_flat_images_directory_gives_the_same_manifest(data, built, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(data, flat, ignore=shutil.ignore_patterns("images_*"))
    (flat / files.CHEST_FLAT).mkdir()
    for png in data.glob(f"{files.fill(files.CHEST_PART, part='*')}/*.png"):
        shutil.copy(png, flat / files.CHEST_FLAT)
    images, _, _ = dataset.build(flat, split_fractions=CONFIG["manifest"]["split"], seed=1, n_shards=2)
    before = files.CHEST_IMAGE_TABLE.read(workdir_of(built) / files.CHEST_IMAGES)
    assert images.drop(columns="path").equals(before.drop(columns="path"))
    assert images["path"].str.startswith(f"{files.CHEST_FLAT}/").all()


def test_counts_add_up_with_a_corrupt_png_and_a_listed_file_missing(data, tmp_path, capsys):
    copy = copy_of(data, tmp_path / "cxr")
    table = entries(copy)
    corrupt, gone = copy / "images_001/images/00000002_000.png", copy / "images_002/images" / table.iloc[-1, 0]
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    gone.unlink()
    root = preprocess.build_cache(copy, tmp_path / "out", config=CONFIG)
    workdir = workdir_of(root)
    counts = files.read_json(workdir / files.MANIFEST_COUNTS)
    excluded = files.CHEST_EXCLUDED_TABLE.read(workdir / files.EXCLUDED)
    assert excluded[["image_id", "reason"]].values.tolist() == [[gone.name, "missing_file"]]
    assert counts["rows"] == len(table) == counts["images"] + len(excluded) == counts["rows_accounted"]
    errors = files.CHEST_DECODE_ERROR_TABLE.read(workdir / files.DECODE_ERRORS)
    assert errors[["image_id", "error_kind"]].values.tolist() == [[corrupt.name, "truncated"]]
    assert errors["file"].tolist() == ["images_001/images/00000002_000.png"]
    summary = files.read_json(workdir / files.PREPROCESS_SUMMARY)
    assert (summary["images"], summary["decoded"], summary["missing_files"], summary["lost_images"]) == (
        counts["images"],
        counts["images"] - 1,
        1,
        2,
    )
    for size in SIZES:
        tiles = cache.open_tiles(root, size, verify=True)
        assert len(tiles) == counts["images"] - 1 and corrupt.name not in set(tiles.index["image_id"])
        npy = np.load(files.under(root, files.TILES_SHARD, image_size=size, shard=0))
        assert len(npy) == (tiles.index["shard"] == 0).sum()  # the failed image's place given back
    assert f"2 of {len(table)} images lost (missing_file 1, truncated 1)" in capsys.readouterr().err
    with pytest.raises(PreprocessError, match=r"2 of \d+ images .* are lost .*max_failure_fraction = 0.001"):
        preprocess.build_cache(
            copy, tmp_path / "strict", config={**CONFIG, "cache": {"shards": 2, "max_failure_fraction": 0.001}}
        )


def test_bad_rows_are_excluded_with_their_reason(data, tmp_path):
    copy = copy_of(data, tmp_path / "cxr")
    table = entries(copy)
    listed = dataset.read_list(copy, files.CHEST_TRAIN_VAL)
    row = table[table["Image Index"] == listed[0]].index[0]
    table.loc[row + 1, "Patient ID"] = "x1"  # invalid_id
    table.loc[row + 4, "Patient ID"] = "9" * 19  # invalid_id: no int64 holds it
    table.loc[row + 2, "Finding Labels"] = f"{NO_FINDING}|Mass"  # invalid_labels
    table = pd.concat([table, table.iloc[[row + 3]]], ignore_index=True)  # duplicate_image: both copies
    unlisted = table.iloc[[row]].assign(**{"Image Index": "99999999_000.png"})  # not_listed
    write_entries(copy, pd.concat([table, unlisted], ignore_index=True))
    images, excluded, counts = dataset.build(copy, split_fractions=CONFIG["manifest"]["split"], seed=1, n_shards=2)
    assert counts["excluded_by_reason"] == {"duplicate_image": 2, "invalid_id": 2, "invalid_labels": 1, "not_listed": 1}
    assert counts["rows"] == len(table) + 1 == len(images) + len(excluded)
    assert dataset.fingerprints(copy, 2).files == len(table) + 1  # the workflow's fingerprint reads the same rows
    (copy / files.CHEST_ENTRIES).write_bytes(b"\xff\xfe not a CSV")  # read when Snakemake plans: never a traceback
    assert dataset.fingerprints(copy, 2).files == 0
    (copy / files.CHEST_TEST).write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ManifestError, match="is not a text list of image names"):
        dataset.read_list(copy, files.CHEST_TEST)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: write_entries(r, entries(r).drop(columns="Patient ID")), r"lacks column\(s\) Patient ID"),
        (
            lambda r: write_entries(r, entries(r).assign(**{"Finding Labels": "Pneumonitis|Mass"})),
            r"name 'Pneumonitis' \(e.g. 00000001_000.png\), not one of the fourteen findings",
        ),
        (
            lambda r: (r / files.CHEST_TEST).write_text((r / files.CHEST_TEST).read_text() + "12345678_000.png\n"),
            r"test_list.txt lists 1 image\(s\) that Data_Entry_2017.csv does not have \(e.g. 12345678_000.png\)",
        ),
        (
            lambda r: (r / files.CHEST_TEST).write_text((r / files.CHEST_TRAIN_VAL).read_text()),
            r"are in both train_val_list.txt and test_list.txt",
        ),
        (
            lambda r: (r / files.CHEST_TEST).write_text(
                (r / files.CHEST_TEST).read_text() + dataset.read_list(r, files.CHEST_TRAIN_VAL)[0] + "\n"
            ),
            r"in both",
        ),
        (lambda r: (r / files.CHEST_TRAIN_VAL).unlink(), r"train_val_list.txt not found in .*: data.root must be"),
        (
            lambda r: [shutil.rmtree(r / d) for d in synthetic.part_directories()],
            r"has no image directory \(images_\*/images/ or images/\)",
        ),
    ],
)
def test_what_the_manifest_refuses_it_says_in_one_line(data, tmp_path, change, message):
    copy = copy_of(data, tmp_path / "cxr")
    change(copy)
    with pytest.raises(ManifestError, match=message) as error:
        dataset.main(
            copy,
            tmp_path / "i.csv",
            tmp_path / "e.csv",
            tmp_path / "c.json",
            split_fractions=CONFIG["manifest"]["split"],
            seed=1,
            n_shards=2,
        )
    assert "\n" not in str(error.value) and not (tmp_path / "i.csv").exists()


def test_a_patient_in_both_lists_is_refused(data, tmp_path):
    copy = copy_of(data, tmp_path / "cxr")
    table = entries(copy)
    test_image = dataset.read_list(copy, files.CHEST_TEST)[0]
    table.loc[table["Image Index"] == test_image, "Patient ID"] = table.loc[
        table["Image Index"] == dataset.read_list(copy, files.CHEST_TRAIN_VAL)[0], "Patient ID"
    ].iloc[0]
    write_entries(copy, table)
    with pytest.raises(ManifestError, match=r"1 patient\(s\) have images in both .* split by patient"):
        dataset.build(copy, split_fractions=CONFIG["manifest"]["split"], seed=1, n_shards=2)


def test_the_index_check_refuses_tiles_that_do_not_match_the_manifest(built, tmp_path):
    workdir = workdir_of(built)
    images = files.CHEST_IMAGE_TABLE.read(workdir / files.CHEST_IMAGES)
    extra = images.iloc[[0]].assign(image_id="elsewhere.png")
    files.CHEST_IMAGE_TABLE.write(pd.concat([images, extra]), tmp_path / "images.csv")
    shards = files.shard_names(2)
    with pytest.raises(PreprocessError, match=r"holds \d+ images; .*\(1 missing, e.g. \['elsewhere.png'\]"):
        preprocess.gather_index(
            [files.under(built, files.TILES_INDEX, image_size=32, shard=s) for s in shards],
            tmp_path / "index.csv",
            [files.under(built, files.TILES_SHARD, image_size=32, shard=s) for s in shards],
            tmp_path / "index.json",
            images_csv=tmp_path / "images.csv",
            decode_errors_csv=workdir / files.DECODE_ERRORS,
        )
    assert not (tmp_path / "index.csv").exists()


def test_an_altered_chest_tile_is_named_by_its_image(built, tmp_path):
    copy = Path(shutil.copytree(built, tmp_path / "cache"))
    npy = files.under(copy, files.TILES_SHARD, image_size=32, shard=1)
    array = np.load(npy)
    array[0, 0, 0] ^= 0xFF
    np.save(npy, array)
    tiles = cache.open_tiles(copy, 32)
    first = int(np.flatnonzero(tiles.index["shard"] == 1)[0])
    with pytest.raises(cache.CacheError, match=rf"image_id {tiles.index.at[first, 'image_id']}\) does not match"):
        tiles[first]


def test_the_contact_sheet_draws_chest_tiles(built, tmp_path):
    assert preprocess.draw_contact_sheet(built, 32, tmp_path / "sheet.png", n=6, cell=64, seed=1) == 6
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    assert sheet.shape[1] == 4 * (64 + 4) + 4 and sheet.std() > 10


# what the workflow asks of the data


def test_fingerprints_change_with_a_shard_s_file_only(data, tmp_path):
    copy = copy_of(data, tmp_path / "cxr")
    before = dataset.fingerprints(copy, 2)
    assert before.files == len(entries(copy)) and set(before.shards) == {"0000", "0001"}
    png = copy / "images_001/images/00000001_000.png"  # patient 1: shard 1
    png.write_bytes(png.read_bytes() + b"\0")
    after = dataset.fingerprints(copy, 2)
    assert after.shards["0000"] == before.shards["0000"] and after.shards["0001"] != before.shards["0001"]
    assert after.absent == before.absent
    png.unlink()
    assert dataset.fingerprints(copy, 2).absent != before.absent


@pytest.mark.parametrize("spelt", ["absolute", "trailing slash", "relative"])
def test_an_images_path_under_the_root_is_relpaths_however_the_root_is_spelt(data, monkeypatch, spelt):
    root = {"absolute": str(data), "trailing slash": f"{data}/", "relative": "."}[spelt]
    if spelt == "relative":
        monkeypatch.chdir(data)
    found = [entry for entries in dataset.find_images(root).values() for entry in entries]
    assert found and all(dataset.relative(root, e) == os.path.relpath(e.path, root) for e in found)
    assert {dataset.relative(root, e).split("/", 1)[0] for e in found} >= {"images_001"}


def test_the_plan_counts_the_source_s_training_images_and_checks_its_settings():
    def cfg(**data):
        return config.with_defaults({"data": {"root": "/nowhere", **data}})

    assert nominal_train_breasts(cfg(source="chestxray14")) == round(dataset.NIH_TRAIN_VAL_IMAGES * 0.7 / 0.85)
    assert nominal_train_breasts(cfg(source="synthetic-chestxray14")) == round(200 * 2.5 * 0.85 * 0.7 / 0.85)
    with pytest.raises(ManifestError, match="does not exist: set it to NIH's ChestX-ray14 directory"):
        dataset.check_data(cfg(source="chestxray14"))
    dataset.check_data(cfg(source="synthetic-chestxray14"))
    with pytest.raises(ManifestError, match="train and val 0"):
        dataset.train_val_fractions({"train": 0.0, "val": 0.0, "test": 1.0})


def test_the_workflow_plans_the_chest_cache(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    source = "data={source: synthetic-chestxray14, root: results/data/cxr}"
    result = snakemake(workdir, "-n", "cache", "--configfile", "config/test.yaml", "--config", source)
    assert planned_jobs(result) == {
        "synthetic_data": 1,
        "manifest": 1,
        "cache_tiles": 2,
        "preprocess_summary": 1,
        "cache_index": 2,
        "contact_sheet": 2,
        "cache": 1,
    }
