"""Bad input end to end: the cache over a corpus of every fault at once, a worker that dies, altered cache files.

The corpus (:mod:`faults`) is a synthetic RSNA-layout set damaged one image (or one train.csv row) per
fault. The workflow's ``cache`` target must finish, put every damaged image in ``decode_errors.csv``
or ``excluded.csv`` with its kind, account for every row of ``train.csv``, say on the terminal what
was lost, and stop with one line when more is lost than ``cache.max_failure_fraction`` allows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from faults import make_corpus

from mammoscale import cache, files, synthetic
from mammoscale.preprocess import tiles, views
from mammoscale.preprocess.tiles import PreprocessError
from mammoscale.processes import map_isolated

from test_workflow import build_cache_of, copy_workflow


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return synthetic.generate(tmp_path_factory.mktemp("clean") / "rsna", n_patients=16, image_shape=(256, 192), seed=3)


@pytest.fixture(scope="module")
def corpus(clean, tmp_path_factory):
    return make_corpus(clean, tmp_path_factory.mktemp("faults") / "corpus")


@pytest.fixture(scope="module")
def cached(corpus, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("wf"))
    return workdir, build_cache_of(workdir, corpus.root, "cache={max_failure_fraction: 1.0}"), corpus.root


def test_the_cache_over_every_fault_at_once_finishes_and_records_each(corpus, cached):
    workdir, result, _ = cached
    results = workdir / "results"
    errors = pd.read_csv(results / "qc" / "decode_errors.csv", dtype=str)
    expected = {image_id: fault.kind for image_id, fault in corpus.decode.items() if fault.kind}
    assert dict(zip(errors["image_id"], errors["error_kind"], strict=True)) == expected
    images = pd.concat(
        [pd.read_csv(p, dtype=str, keep_default_na=False) for p in results.glob("cache/views/*.images.csv")]
    )
    for image_id, fault in corpus.decode.items():
        if fault.kind is None:  # decoded, and what was done is said
            row = images[images["image_id"] == image_id].iloc[0]
            assert row["status"] == "ok" and fault.note in row["message"], fault.name
    excluded = pd.read_csv(results / "manifest" / "excluded.csv", dtype=str, keep_default_na=False)
    for image_id, reason in corpus.excluded.items():
        assert reason in set(excluded.loc[excluded["image_id"] == image_id, "reason"]), (image_id, reason)
    assert (excluded["reason"] == "duplicate_image_id").sum() == 2
    assert "missing_cc" in set(excluded["reason"])  # the breast that lost its CC file: its MLO goes too


def test_every_row_of_train_csv_is_accounted_for(corpus, cached):
    workdir, _, _ = cached
    results = workdir / "results"
    counts = json.loads((results / "manifest" / "counts.json").read_text())
    excluded = pd.read_csv(results / "manifest" / "excluded.csv", dtype=str)
    other_views = sum(counts["other_views_not_used"].values())
    assert counts["rows"] == corpus.rows == counts["images_used"] + len(excluded) + other_views
    summary = json.loads((results / "qc" / "preprocess_summary.json").read_text())
    failed = sum(1 for fault in corpus.decode.values() if fault.kind)
    assert summary["images"] == counts["images_used"] and summary["failed_images"] == failed
    assert summary["missing_files"] == 1 and summary["lost_images"] == failed + 1
    breasts = pd.read_csv(results / "manifest" / "breasts.csv")
    index = pd.read_csv(results / "cache" / "img64" / "index.csv")
    assert len(index) == len(breasts) - summary["breasts_excluded_decode_error"] == summary["breasts_cached"]


def test_the_terminal_says_in_one_line_what_was_lost(corpus, cached):
    _, result, _ = cached
    failed = sum(1 for fault in corpus.decode.values() if fault.kind)
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(lines) == 1 and re.match(rf"warning: {failed + 1} of \d+ images lost \(missing_file 1, ", lines[0])
    assert "Traceback" not in result.stderr


def test_more_lost_than_allowed_stops_the_cache_in_one_line(cached):
    """The default limit (5 %) with a fifth of the images lost: only the index job reruns (its parameter changed)."""
    workdir, _, data = cached
    result = build_cache_of(workdir, data, check=False)
    assert result.returncode != 0
    errors = {line for line in result.stderr.splitlines() if line.startswith("error: ")}  # the same, from each size
    assert (
        len(errors) == 1 and "are lost" in min(errors) and "more than cache.max_failure_fraction = 0.05" in min(errors)
    )
    assert "Traceback" not in result.stderr


# a worker process that dies


def _dies_on_three(n: int) -> int:
    if n == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # a codec's crash: the process is gone (and says nothing)
    return n * 10


def test_a_job_that_kills_its_worker_is_the_only_one_lost():
    crashed = []
    results = list(
        map_isolated(_dies_on_three, list(range(8)), workers=2, crashed=lambda job, message: crashed.append(job) or -1)
    )
    assert results == [0, 10, 20, -1, 40, 50, 60, 70] and crashed == [3]


def test_stage_one_records_a_breast_whose_decoder_crashed_and_goes_on(clean, tmp_path, monkeypatch):
    breasts_csv = tmp_path / "breasts.csv"
    from mammoscale.dataset import manifest

    manifest.main(
        clean,
        breasts_csv,
        tmp_path / "excluded.csv",
        tmp_path / "counts.json",
        split_fractions={"train": 0.6, "val": 0.2, "test": 0.2},
        seed=1,
        n_shards=1,
    )
    victim = pd.read_csv(breasts_csv).iloc[2]["breast_id"]
    process = views.process_breast

    def crash_on_victim(root, breast, settings):
        if breast["breast_id"] == victim:
            os.kill(os.getpid(), signal.SIGKILL)
        return process(root, breast, settings)

    monkeypatch.setattr(views, "process_breast", crash_on_victim)  # the worker processes are forked: they see it
    out = tmp_path / "views"
    out.mkdir()
    result = views.build_views(
        clean,
        breasts_csv,
        0,
        out / "s.npy",
        out / "s.csv",
        out / "s.images.csv",
        settings=views.ViewSettings(canonical_size=64),
        workers=2,
    )
    images = pd.read_csv(out / "s.images.csv")
    lost = images[images["status"] == "error"]
    assert lost["breast_id"].tolist() == [victim, victim] and set(lost["error_kind"]) == {"codec_crash"}
    assert result["cached"] == result["breasts"] - 1


# altered cache files


@pytest.fixture
def altered(train_cache, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(train_cache, root)
    return root


def _flip(path: Path, offsets=(-100, -2000, -5000)) -> None:
    data = bytearray(path.read_bytes())
    for at in offsets:
        data[at] ^= 0x5A
    path.write_bytes(bytes(data))


def test_training_refuses_an_altered_tile_and_says_what_to_run(altered, tmp_path):
    _flip(altered / "img64" / "shard0000.npy")
    args = ["cache_root=" + str(altered), "image_size=64", "patch_size=16", "mode=full", "epochs=1"]
    args += ["global_batch=8", "micro_batch=4", "loader_workers=0"]
    done = subprocess.run(
        [sys.executable, "-m", "mammoscale.train", "--out", str(tmp_path / "run"), *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    message = (
        f"does not match its crc32: the file changed after it was written. Rebuild the tiles: {cache.REBUILD_TILES}"
    )
    assert message in done.stderr and "Traceback" not in done.stderr


def test_each_tile_is_checked_once_per_process_on_first_read(altered):
    tiles = cache.open_tiles(altered, 64)
    for i in range(len(tiles)):  # every tile matches its crc32
        tiles[i]
    _flip(altered / "img64" / "shard0000.npy", offsets=(-1,))
    for i in range(len(tiles)):  # checked already: a second epoch pays nothing
        tiles[i]
    fresh = cache.open_tiles(altered, 64)
    with pytest.raises(cache.CacheError, match="does not match its crc32"):
        for i in range(len(fresh)):
            fresh[i]


def test_the_index_is_built_from_the_shards_real_bytes(altered, tmp_path):
    _flip(altered / "img64" / "shard0001.npy")
    shards = [altered / "img64" / f"shard000{k}" for k in (0, 1)]
    with pytest.raises(
        PreprocessError, match=rf"shard0001.npy: sha256 .* the file changed since. .*{cache.REBUILD_TILES}"
    ):
        tiles.gather_index(
            [s.with_suffix(".csv") for s in shards], tmp_path / "index.csv", [s.with_suffix(".npy") for s in shards]
        )


def test_stage_two_refuses_altered_views(altered, tmp_path):
    _flip(altered / "views" / "shard0000.npy")
    with pytest.raises(PreprocessError, match=rf"do not match their crc32: .*{cache.REBUILD_VIEWS}"):
        tiles.build_tiles(
            altered / "views" / "shard0000.npy",
            altered / "views" / "shard0000.csv",
            tmp_path / "t.npy",
            tmp_path / "t.csv",
            image_size=64,
        )


# degenerate images


@pytest.mark.parametrize("policy", ["exclude", "blank"])
def test_a_constant_image_is_excluded_or_a_black_counted_fallback_never_a_white_tile(corpus, policy):
    """An all-zero MONOCHROME1 image is white after inversion: cached as it is, a solid white "breast"."""
    image_id = next(i for i, fault in corpus.decode.items() if fault.name == "constant-monochrome1")
    table = pd.read_csv(corpus.root / files.TRAIN_CSV, dtype=str)
    row = table[table["image_id"] == image_id].iloc[0]
    breast = {
        "breast_id": "x",
        "patient_id": row["patient_id"],
        "laterality": row["laterality"],
        "cc_image_id": image_id,
        "mlo_image_id": image_id,
    }
    made, rows = views.process_breast(
        corpus.root, breast, views.ViewSettings(canonical_size=64, constant_images=policy)
    )
    if policy == "exclude":
        assert made is None and {r["error_kind"] for r in rows} == {"constant_image"}
    else:
        assert made is not None and not any(view.any() for view in made)
        assert all(r["status"] == "ok" and r["roi_fallback"] and r["constant"] for r in rows)
