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
import time
from pathlib import Path

import pandas as pd
import pytest
from faults import make_corpus

from mammoscale import cache, files, synthetic
from mammoscale.preprocess import tiles, views
from mammoscale.preprocess.tiles import PreprocessError
from mammoscale.processes import map_isolated

from test_workflow import build_cache_of, copy_workflow, planned_jobs, snakemake


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


def _train(cache_root: Path, out: Path) -> subprocess.CompletedProcess:
    """One small cell on ``cache_root`` from the command line, as a workflow job runs it."""
    args = ["cache_root=" + str(cache_root), "image_size=64", "patch_size=16", "mode=full", "epochs=1"]
    args += ["global_batch=8", "micro_batch=4", "loader_workers=0"]
    command = [sys.executable, "-m", "mammoscale.train", "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True)


def test_training_refuses_an_altered_tile_and_says_what_to_run(altered, tmp_path):
    _flip(altered / "img64" / "shard0000.npy")
    done = _train(altered, tmp_path / "run")
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
            [s.with_suffix(".csv") for s in shards],
            tmp_path / "index.csv",
            [s.with_suffix(".npy") for s in shards],
            tmp_path / "index.json",
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


# the cache after the fact: damaged or deleted files, the commands that repair them, changed DICOMs


DATA = "rsna"
"""The RSNA-layout directory of :func:`built`, inside its workflow directory: data.root is relative to it, so a
copy of both is the same study to Snakemake."""


@pytest.fixture(scope="module")
def built(clean, tmp_path_factory) -> Path:
    """A workflow directory whose cache (img64, img128) was built by ``snakemake cache`` from an RSNA-layout copy."""
    workdir = copy_workflow(tmp_path_factory.mktemp("built") / "wf")
    shutil.copytree(clean, workdir / DATA)
    build_cache_of(workdir, Path(DATA))
    return workdir


@pytest.fixture
def study(built, tmp_path) -> tuple[Path, Path]:
    """A copy of ``built`` of the test's own, data and all: (workflow directory, data root)."""
    shutil.copytree(built, tmp_path / "wf", symlinks=True)
    return tmp_path / "wf", tmp_path / "wf" / DATA


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """``snakemake <args>`` with the test profile over the study's data, as the fixture built it."""
    return snakemake(
        workdir, *args, "--configfile", "config/test.yaml", "--config", f"data={{source: rsna, root: {DATA}}}"
    )


def _cache_is_whole(workdir: Path) -> None:
    for size in (64, 128):
        read = cache.open_tiles(workdir / "results" / "cache", size, verify=True)
        assert len(read) and all(read[i].shape == (size, size) for i in range(len(read)))


def _cut_mid_line(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) * 2 // 3])


def _remove_rows(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-3]))


DAMAGE = {
    "flipped tile shard": ("img64/shard0000.npy", _flip, cache.REBUILD_TILES),
    "deleted tile shard": ("img64/shard0001.npy", Path.unlink, cache.REBUILD_TILES),
    "flipped views shard": ("views/shard0000.npy", _flip, cache.REBUILD_VIEWS),
    "index cut mid-line": ("img64/index.csv", _cut_mid_line, cache.REBUILD_INDEX),
    "index short of rows": ("img64/index.csv", _remove_rows, cache.REBUILD_INDEX),
    "index check deleted": ("img64/index.json", Path.unlink, cache.REBUILD_INDEX),
    "index deleted": ("img64/index.csv", Path.unlink, cache.BUILD),
}


def _message(root: Path, name: str) -> str:
    """What a user is told about the damage: by training (or the contact sheet) or, for views, by stage 2."""
    try:
        if name.startswith("views/"):
            tiles.build_tiles(
                root / name, (root / name).with_suffix(".csv"), root / "t.npy", root / "t.csv", image_size=64
            )
        else:
            read = cache.open_tiles(root, 64)
            for i in range(len(read)):
                read[i]
    except (cache.CacheError, PreprocessError) as error:
        return str(error)
    raise AssertionError(f"damage to {name} went unnoticed")


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_the_command_an_error_prints_repairs_what_it_names(study, damage):
    """Each command printed for a damaged cache file, run as printed (with the user's --configfile and --config),
    rebuilds it: ``snakemake cache`` alone leaves a deleted intermediate file missing under a newer index."""
    workdir, data = study
    root = workdir / "results" / "cache"
    name, harm, command = DAMAGE[damage]
    harm(root / name)
    message = _message(root, name)
    printed = [c for c in (cache.REBUILD_TILES, cache.REBUILD_VIEWS, cache.REBUILD_INDEX, cache.BUILD) if c in message]
    assert printed and max(printed, key=len) == command, message
    assert message.count("\n") == 0 and message.endswith(command)
    args = command.split()
    assert args[0] == "snakemake"
    planned = planned_jobs(_snakemake(workdir, "-n", *args[1:]))
    assert "manifest" not in planned and ("--forcerun" not in args or args[-1] in planned), planned
    _snakemake(workdir, "-c2", *args[1:])
    _cache_is_whole(workdir)


def test_training_refuses_an_index_cut_short_in_one_line(study, tmp_path):
    workdir, _ = study
    root = workdir / "results" / "cache"
    _cut_mid_line(root / "img64" / "index.csv")
    done = _train(root, tmp_path / "run")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "was cut short or edited" in errors[0] and errors[0].endswith(cache.REBUILD_INDEX)


def test_the_index_holds_each_splits_breasts_of_the_manifest_and_no_other(study, tmp_path):
    workdir, _ = study
    results, root = workdir / "results", workdir / "results" / "cache" / "img64"
    shards = sorted(root.glob("shard*.csv"))
    table = files.TILE_TABLE.read(shards[0])
    dropped = table.iloc[0]
    files.TILE_TABLE.write(table.iloc[1:], shards[0])  # a breast gone from a shard's table (and so from the index)

    def gather():
        tiles.gather_index(
            shards,
            tmp_path / "index.csv",
            [s.with_suffix(".npy") for s in shards],
            tmp_path / "index.json",
            breasts_csv=results / "manifest" / "breasts.csv",
            decode_errors_csv=results / "qc" / "decode_errors.csv",
        )

    with pytest.raises(
        PreprocessError, match=rf"the {dropped['split']} split .* \(1 missing, .*{dropped['breast_id']}"
    ):
        gather()
    files.TILE_TABLE.write(pd.concat([table, table.iloc[[0]].assign(breast_id="999_L")]), shards[0])
    with pytest.raises(
        PreprocessError, match=r"1 not the manifest's, e.g. \['999_L'\].*" + re.escape(cache.REBUILD_VIEWS)
    ):
        gather()


def test_a_replaced_dicom_reruns_its_shard_and_what_depends_on_it_only(study):
    """Replaced by a copy with an older modification time (a re-download that kept the archive's): only the size
    and time differ from what the shard read, and only that shard's jobs and those after them rerun."""
    workdir, data = study
    breasts = files.BREAST_TABLE.read(workdir / "results" / "manifest" / "breasts.csv")
    victim = breasts[breasts["shard"] == 1].iloc[0]
    path = files.image_path(data, victim["patient_id"], victim["cc_image_id"])
    before = path.stat()
    path.write_bytes(path.read_bytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns - 10**12))
    planned = _snakemake(workdir, "-n", "cache")
    assert planned_jobs(planned) == {
        "cache_views": 1,
        "cache_tiles": 2,
        "preprocess_summary": 1,
        "cache_index": 2,
        "contact_sheet": 2,
        "cache": 1,
    }
    outputs = " ".join(line for line in planned.stdout.splitlines() if "output:" in line)
    assert "views/shard0001.npy" in outputs and "shard0000" not in outputs
    _snakemake(workdir, "-c2", "cache")
    assert "Nothing to be done" in (done := _snakemake(workdir, "-n", "cache")).stdout + done.stderr
    path.unlink()  # a file gone: the manifest decides again (its breast is excluded), and all after it
    assert planned_jobs(_snakemake(workdir, "-n", "cache"))["manifest"] == 1


# a stage-1 job killed, or out of disk


@pytest.fixture
def shard_zero(clean, tmp_path) -> Path:
    """The manifest of ``clean`` in two shards: its breasts.csv."""
    from mammoscale.dataset import manifest

    breasts = tmp_path / "breasts.csv"
    split = {"train": 0.6, "val": 0.2, "test": 0.2}
    manifest.main(clean, breasts, tmp_path / "x.csv", tmp_path / "c.json", split_fractions=split, seed=1, n_shards=2)
    return breasts


STAGE_ONE = """
import sys, time
from mammoscale.logs import configure
from mammoscale.preprocess import views
configure(sys.argv[5])
process = views.process_breast
def slow(root, breast, settings):
    time.sleep(float(sys.argv[4]))
    return process(root, breast, settings)
views.process_breast = slow  # the forked workers see it
out = sys.argv[3]
views.build_views(sys.argv[1], sys.argv[2], 0, out + "/s.npy", out + "/s.csv", out + "/s.images.csv",
                  settings=views.ViewSettings(canonical_size=64), workers=2)
"""


def _stage_one(clean: Path, breasts: Path, out: Path, *, pause: float) -> subprocess.Popen:
    command = [sys.executable, "-c", STAGE_ONE, str(clean), str(breasts), str(out), str(pause), str(out / "log")]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_stage_one_takes_its_workers_along_and_the_next_run_sweeps_its_temporary_file(
    clean, shard_zero, tmp_path
):
    out = tmp_path / "views"
    out.mkdir()
    job = _stage_one(clean, shard_zero, out, pause=0.5)
    deadline = time.monotonic() + 60
    while not (list(out.glob(".s.npy.*.tmp")) and len(_children(job.pid)) == 2):
        assert time.monotonic() < deadline and job.poll() is None, "stage 1 never got under way"
        time.sleep(0.05)
    workers = _children(job.pid)
    job.kill()  # SIGKILL, as the OOM killer does: no cleanup runs in the parent
    job.wait()
    time.sleep(1.0)
    assert not [w for w in workers if _alive(w)], "a worker outlived the stage-1 process that started it"
    left = list(out.glob(".s.npy.*.tmp"))
    assert len(left) == 1  # nothing removed it: the next run of the same shard does
    done = _stage_one(clean, shard_zero, out, pause=0)
    assert done.wait(timeout=300) == 0, done.stderr.read()
    assert not list(out.glob(".*.tmp")) and (out / "s.npy").is_file()
    assert f"removed {left[0]}" in (out / "log").read_text()


@pytest.fixture
def full_disk(tmp_path):
    """A 32 KiB file system of its own (tmpfs): the views of one shard do not fit."""
    where = tmp_path / "full"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"a small file system to fill needs mount (root): {mounted.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", "--lazy", str(where)], check=True)  # lazy: a process left by a failure cannot block it


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_behind(clean, shard_zero, full_disk):
    job = _stage_one(clean, shard_zero, full_disk, pause=0)
    stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == 1 and "Traceback" not in stderr
    assert stderr.splitlines() == [
        f"error: no space left on device writing {full_disk / 's.npy'} "
        f"({shutil.disk_usage(full_disk).free / 2**20:,.1f} MiB left there): free space, or write elsewhere"
    ]
    assert [p.name for p in full_disk.iterdir()] == ["log"]
