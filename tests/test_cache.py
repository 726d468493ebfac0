"""Stage 1 and 2 over a synthetic dataset, the cache format, open_tiles, staging and the contact sheet."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mammoscale import cache, files, synthetic
from mammoscale.dataset import manifest
from mammoscale.preprocess import contact_sheet
from mammoscale.preprocess.summary import check_failures
from mammoscale.preprocess.tiles import PreprocessError, build_tiles

from conftest import SIZES, build_cache


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return synthetic.generate(
        tmp_path_factory.mktemp("data") / "rsna", n_patients=8, image_shape=(192, 144), seed=9, cancer_rate=0.25
    )


@pytest.fixture(scope="module")
def built(data, tmp_path_factory) -> Path:
    """The cache root; its working directory (the manifest, the QC) is ``workdir_of(built)``."""
    return build_cache(data, tmp_path_factory.mktemp("out"), workers=2)


def workdir_of(cache_root: Path) -> Path:
    return cache_root.parents[1]  # the default cache.root, results/cache


# what the tiles show


def test_every_breast_of_the_manifest_is_a_tile(built):
    breasts = pd.read_csv(workdir_of(built) / files.BREASTS)
    for size in SIZES:
        tiles = cache.open_tiles(built, size)
        assert len(tiles) == len(breasts)
        assert sorted(tiles.index["breast_id"]) == sorted(breasts["breast_id"])
        assert {"patient_id", "laterality", "label", "split"} <= set(tiles.index.columns)
        assert tiles[0].shape == (size, size) and tiles[0].dtype == np.uint8
        assert (
            tiles.index["label"].tolist()
            == breasts.set_index("breast_id").loc[tiles.index["breast_id"], "label"].tolist()
        )


def test_tiles_have_tissue_on_the_left_of_each_half(built):
    tiles = cache.open_tiles(built, 128)
    for i in range(len(tiles)):
        tile = np.asarray(tiles[i], dtype=float)
        for half in (tile[:, :64], tile[:, 64:]):
            assert half[:, :16].mean() > half[:, 48:].mean() + 20, tiles.index.iloc[i]["breast_id"]


def test_cc_is_left_and_mlo_right(built):
    """The MLO's pectoral wedge is bright at the top of the chest wall: only in the right half."""
    tiles = cache.open_tiles(built, 128)
    for i in range(len(tiles)):
        tile = np.asarray(tiles[i], dtype=float)
        rows = np.flatnonzero(tile[:, 64:].any(axis=1))
        top = rows[0] + 2
        mlo_corner = tile[top : top + 8, 64 + 2 : 64 + 8].mean()
        cc_rows = np.flatnonzero(tile[:, :64].any(axis=1))
        cc_corner = tile[cc_rows[0] + 2 : cc_rows[0] + 10, 2:8].mean()
        assert mlo_corner > cc_corner + 25, tiles.index.iloc[i]["breast_id"]


def test_aspect_ratio_of_each_crop_is_kept_within_one_pixel(built):
    images = pd.concat(pd.read_csv(p) for p in sorted((built / "views").glob("*.images.csv")))
    views = pd.concat(pd.read_csv(p) for p in sorted((built / "views").glob("shard*[0-9].csv")))
    for row in images.itertuples():
        r0, c0, r1, c1 = (int(v) for v in row.roi_box.split())
        v = views[views["breast_id"] == row.breast_id].iloc[0]
        rows, cols = v[f"{row.view.lower()}_rows"], v[f"{row.view.lower()}_cols"]
        assert abs(cols - rows * (c1 - c0) / (r1 - r0)) <= 1 or abs(rows - cols * (r1 - r0) / (c1 - c0)) <= 1


def test_crc32_in_the_index_matches_each_tile(built):
    tiles = cache.open_tiles(built, 64, verify=True)
    for i in range(len(tiles)):
        assert files.crc32(tiles[i]) == tiles.index.iloc[i]["crc32"]


def test_random_access(built):
    tiles = cache.open_tiles(built, 64)
    assert np.array_equal(tiles[-1], tiles[len(tiles) - 1])
    assert len(tiles[1:3]) == 2
    with pytest.raises(IndexError):
        tiles[len(tiles)]
    assert not tiles[0].flags.writeable


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_cache_bytes_are_identical_across_runs(data, built, tmp_path):
    again = build_cache(data, tmp_path, workers=1)
    assert digests(again) == digests(built)


# failures


def test_a_corrupt_dicom_is_recorded_and_only_its_breast_is_lost(data, tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    breasts = manifest.build(copy, split_fractions={"train": 0.6, "val": 0.2, "test": 0.2}, seed=1, n_shards=2)[0]
    victim = breasts.iloc[0]
    victim_path = files.image_path(copy, victim.patient_id, victim.cc_image_id)
    victim_path.write_bytes(b"this is not a DICOM file" * 10)
    root = build_cache(copy, tmp_path / "out")
    errors = pd.read_csv(tmp_path / "out" / files.DECODE_ERRORS)
    assert list(errors.columns[:3]) == ["file", "error_kind", "message"]
    assert errors["breast_id"].tolist() == [victim.breast_id]
    assert errors["error_kind"].tolist() == ["not_dicom"]
    tiles = cache.open_tiles(root, 64)
    assert victim.breast_id not in set(tiles.index["breast_id"]) and len(tiles) == len(breasts) - 1
    summary = json.loads((tmp_path / "out" / files.PREPROCESS_SUMMARY).read_text())
    assert summary["breasts_excluded_decode_error"] == 1 and summary["failed_images"] == 1
    assert summary["lost_images"] == 1 and summary["missing_files"] == 0
    assert re.search(
        r"^warning: 1 of \d+ images lost \(not_dicom 1\); \d+ of \d+ breasts cached: see .*decode_errors.csv and "
        r".*excluded.csv$",
        capsys.readouterr().err,
        re.MULTILINE,
    )
    with pytest.raises(
        PreprocessError, match=r"1 of \d+ images \(.*%\) are lost \(not_dicom 1\).*decode_errors.*excluded"
    ):
        check_failures(tmp_path / "out" / files.PREPROCESS_SUMMARY, "decode_errors.csv", max_failure_fraction=0.0)
    check_failures(tmp_path / "out" / files.PREPROCESS_SUMMARY, "decode_errors.csv", max_failure_fraction=0.5)


def test_a_half_written_file_never_appears_under_its_name(tmp_path):
    target = tmp_path / "img64" / "shard0000.npy"
    with pytest.raises(RuntimeError, match="killed"), files.atomic_array(target, (4, 64, 64)) as array:
        array[0] = 7
        raise RuntimeError("killed mid-write")
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_missing_truncated_or_altered_shards_are_refused(built, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(built, copy)
    shard = copy / "img64" / "shard0001.npy"
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])
    with pytest.raises(cache.CacheError, match="shard0001.npy"):
        tiles = cache.open_tiles(copy, 64)
        [tiles[i] for i in range(len(tiles))]
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(cache.CacheError, match="sha256"):
        cache.open_tiles(copy, 64, verify=True)
    shard.unlink()
    with pytest.raises(cache.CacheError, match="incomplete"):
        tiles = cache.open_tiles(copy, 64)
        [tiles[i] for i in range(len(tiles))]
    with pytest.raises(cache.CacheError, match="img32"):
        cache.open_tiles(copy, 32)


def test_a_size_above_the_canonical_views_is_refused(built, tmp_path):
    with pytest.raises(PreprocessError, match="canonical_size"):
        build_tiles(
            files.under(built, files.VIEWS_SHARD, shard=0),
            files.under(built, files.VIEWS_INDEX, shard=0),
            tmp_path / "x.npy",
            tmp_path / "x.csv",
            image_size=256,
        )


def test_more_shards_than_breasts_leaves_empty_shards_that_work(data, tmp_path):
    root = build_cache(data, tmp_path, n_shards=40)
    breasts = pd.read_csv(tmp_path / files.BREASTS)
    assert len(breasts) < 40
    assert len(cache.open_tiles(root, 64)) == len(breasts)
    assert np.load(root / "img64" / "shard0039.npy").shape == (0, 64, 64)


# staging to node-local scratch


def _stage(args):
    return str(cache.stage(*args))


def test_stage_copies_once_verified_and_reuses(built, tmp_path):
    scratch = tmp_path / "nvme"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        roots = pool.map(_stage, [(built, 64, scratch)] * 2)
    assert roots[0] == roots[1]
    staged = cache.open_tiles(roots[0], 64, verify=True)
    source = cache.open_tiles(built, 64)
    assert all(np.array_equal(staged[i], source[i]) for i in range(len(source)))
    shard = Path(roots[0]) / "img64" / "shard0000.npy"
    before = os.stat(shard).st_mtime_ns
    assert str(cache.stage(built, 64, scratch)) == roots[0]
    assert os.stat(shard).st_mtime_ns == before, "a verified copy is reused, not copied again"
    assert not list((Path(roots[0])).glob(".*partial"))


def test_stage_refuses_a_corrupt_source(built, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(built, copy)
    shard = copy / "img64" / "shard0000.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(cache.CacheError, match="corrupt"):
        cache.stage(copy, 64, tmp_path / "nvme")
    assert not list((tmp_path / "nvme").rglob("index.csv"))


# contact sheet


def test_contact_sheet_shows_positives_and_negatives(built, tmp_path):
    out = tmp_path / "sheet.png"
    shown = contact_sheet.draw(built, 64, out, n=6, seed=0)
    assert shown == 6
    with Image.open(out) as image:
        assert image.size == (
            4 * (64 + contact_sheet.GAP) + contact_sheet.GAP,
            2 * (64 + contact_sheet.CAPTION + contact_sheet.GAP) + contact_sheet.GAP,
        )
    labels = np.array([0, 0, 0, 1, 0, 1, 0, 0])
    chosen = contact_sheet.choose(labels, 4, seed=1)
    assert len(chosen) == 4 and {3, 5} <= set(chosen)
    assert contact_sheet.choose(np.zeros(3), 8, seed=0) == [0, 1, 2]
