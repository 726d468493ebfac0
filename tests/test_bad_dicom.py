"""Bad input, round 2: a deflated decompression bomb, impossible Rows/Columns in stage 1, an unexpected failure on one
image, images a header makes constant or meaningless, something other than a file at a path, a Rust codec's panic.

Every file is made here with pydicom (and zlib); nothing of the codecs is mocked. What could hang or take a
gigabyte runs in a subprocess, under a timeout, with its memory measured.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from faults import _noise_in_the_middle, deflated_bomb
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless

from mammoscale import dicom, files, synthetic
from mammoscale.dataset import manifest
from mammoscale.preprocess import levels, summary, views

from conftest import dataset_from_stored, ramp

INVALID_DS = pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning")
"""pydicom warns as a test writes NaN or inf into a DS attribute: what the test means to do."""


def _python(script: str, *args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """``script`` run by this interpreter in a fresh process: its output, or a failed test if it hangs."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


# a deflated decompression bomb

PEAK = """
    import json, resource, sys
    from pathlib import Path
    from mammoscale import dicom

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        dicom.decode(sys.argv[1])
        kind, message = None, ""
    except dicom.DicomError as exc:
        kind, message = exc.kind, exc.message
    shape = dicom.header_shape(Path(sys.argv[1]))
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # KiB on Linux
    print(json.dumps({"kind": kind, "message": message, "shape": shape, "grown_mib": grown}))
"""


@pytest.mark.parametrize(
    "bits, declared, message",
    [
        (16, None, "16000 x 16000 pixels is over the limit"),
        (8, None, "16000 x 16000 pixels is over the limit"),
        (16, (64, 48), r"inflates to more than 16,783,\d+ bytes, when its Rows x Columns \(64 x 48\) take 6,144"),
    ],
    ids=["16-bit", "8-bit", "header-lies"],
)
def test_a_deflated_bomb_is_refused_before_it_inflates(write_dicom, bits, declared, message):
    """16,000 x 16,000 zeros deflate to half a megabyte; pydicom alone inflates them whole (a gigabyte) on
    reading. A header that tells the truth is refused at the header; one that lies, at its own size plus a margin."""
    bomb = deflated_bomb(write_dicom(ramp()), bits=bits, declared=declared)
    assert bomb.stat().st_size < 600_000
    done = _python(PEAK, str(bomb))
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["kind"] == "too_large" and got["grown_mib"] < 64, got  # pydicom alone: 420 to 910 MiB
    assert re.search(message, got["message"]), got["message"]
    assert got["shape"] == (None if declared is None else list(declared))


def test_a_deflated_image_decodes_as_its_native_version(tmp_path):
    stored = np.random.default_rng(2).integers(0, 4096, (96, 80))
    ds = dataset_from_stored(stored, photometric="MONOCHROME1", WindowCenter="2000", WindowWidth="3000")
    native, deflated = tmp_path / "native.dcm", tmp_path / "deflated.dcm"
    ds.save_as(native, enforce_file_format=True)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(deflated, enforce_file_format=True)
    assert deflated.stat().st_size < native.stat().st_size  # deflated indeed
    plain, inflated = dicom.decode_with_report(native, output="float32"), dicom.decode_with_report(deflated)
    np.testing.assert_array_equal(dicom.decode(deflated, output="float32"), plain.image)
    assert inflated.report.transfer_syntax == DeflatedExplicitVRLittleEndian
    assert inflated.report.shape == plain.report.shape == (96, 80) and inflated.report.voi == "window:LINEAR"
    assert dicom.header_shape(deflated) == (96, 80)
    assert dicom.read_dataset(deflated).filename == str(deflated)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_deflated_file_cut_short_is_truncated(tmp_path, keep):
    ds = dataset_from_stored(np.random.default_rng(3).integers(0, 4096, (64, 64)))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "cut.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(dicom.TruncatedError, match="deflated dataset ends before its end"):
        dicom.decode(path)


# Rows or Columns that cannot be, and any other failure of one image, in stage 1


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    """A synthetic native set of 3 patients and its breasts.csv (one shard): the manifest, and where it is."""
    root = tmp_path_factory.mktemp("bad") / "rsna"
    synthetic.generate(
        root, n_patients=3, image_shape=(256, 192), seed=4, transfer_syntaxes=(str(ExplicitVRLittleEndian),)
    )
    out = root.parent / "manifest"
    out.mkdir()
    split = {"train": 0.6, "val": 0.2, "test": 0.2}
    manifest.main(
        root, out / "breasts.csv", out / "excluded.csv", out / "counts.json", split_fractions=split, seed=1, n_shards=1
    )
    return root, out


def _stage_one(root: Path, manifest_dir: Path, out: Path, *, workers: int = 1) -> tuple[dict, pd.DataFrame, dict]:
    """Stage 1 over the shard, and the preprocess summary of it: (stage 1's counts, the image table, the summary)."""
    out.mkdir()
    counts = views.build_views(
        root,
        manifest_dir / "breasts.csv",
        0,
        out / "s.npy",
        out / "s.csv",
        out / "s.images.csv",
        settings=views.ViewSettings(canonical_size=64),
        workers=workers,
    )
    gathered = summary.summarise(
        [out / "s.images.csv"], manifest_dir / "excluded.csv", out / "errors.csv", out / "summary.json"
    )
    return counts, pd.read_csv(out / "s.images.csv", dtype=str, keep_default_na=False), gathered


def _image_of(root: Path, manifest_dir: Path, k: int) -> tuple[str, Path]:
    """The k-th breast's id and its CC image's path."""
    breast = pd.read_csv(manifest_dir / "breasts.csv", dtype=str).iloc[k]
    return breast["breast_id"], files.image_path(root, breast["patient_id"], breast["cc_image_id"])


@pytest.mark.parametrize("keyword", ["Rows", "Columns"])
def test_zero_rows_or_columns_is_an_invalid_header_in_stage_one_and_the_rest_is_cached(shard, tmp_path, keyword):
    """Stage 1 reads the header's shape first to choose a resolution level: a 0 there divided by zero and took
    the whole shard down."""
    clean, manifest_dir = shard
    root = tmp_path / "rsna"
    shutil.copytree(clean, root)
    victim, path = _image_of(root, manifest_dir, 1)
    ds = pydicom.dcmread(path)
    setattr(ds, keyword, 0)
    ds.save_as(path, enforce_file_format=True)
    assert dicom.header_shape(path) is None
    counts, images, gathered = _stage_one(root, manifest_dir, tmp_path / "views")
    lost = images[images["status"] == "error"]
    assert lost["breast_id"].tolist() == [victim] and lost["error_kind"].tolist() == ["invalid_header"]
    assert "Rows x Columns is" in lost["message"].item()
    assert counts["cached"] == counts["breasts"] - 1 >= 3
    assert gathered["errors_by_kind"] == {"invalid_header": 1}


def test_header_shape_says_nothing_of_a_shape_that_cannot_be_decoded(write_dicom):
    path = write_dicom(ramp(32, 64))
    assert dicom.header_shape(path) == (32, 64)
    assert dicom.header_shape(path, max_pixels=2047) is None
    with pytest.raises(dicom.TooLargeError):
        dicom.decode(path, max_pixels=2047)


def test_an_unexpected_failure_on_one_image_is_that_images_internal_error(shard, tmp_path, monkeypatch, caplog):
    """Anything raised that is not a DicomError (a bug met on one image) costs that image, not the shard."""
    root, manifest_dir = shard
    victim, path = _image_of(root, manifest_dir, 2)
    decode_view = levels.decode_view

    def fails_on_the_victim(view_path, *args, **kwargs):
        if Path(view_path) == path:
            raise KeyError("no such key")
        return decode_view(view_path, *args, **kwargs)

    monkeypatch.setattr(levels, "decode_view", fails_on_the_victim)
    with caplog.at_level(logging.WARNING, logger="mammoscale"):
        counts, images, gathered = _stage_one(root, manifest_dir, tmp_path / "views", workers=0)
    lost = images[images["status"] == "error"]
    assert lost["breast_id"].tolist() == [victim] and lost["error_kind"].tolist() == ["internal_error"]
    assert lost["view"].item() == "CC"
    assert lost["message"].item() == (
        f"KeyError: 'no such key' (at {Path(__file__).name}:{fails_on_the_victim.__code__.co_firstlineno + 2})"
    )
    assert counts["cached"] == counts["breasts"] - 1 >= 3
    assert gathered["errors_by_kind"] == {"internal_error": 1} and gathered["failed_images"] == 1
    errors = pd.read_csv(tmp_path / "views" / "errors.csv", dtype=str)
    assert errors["error_kind"].tolist() == ["internal_error"]
    logged = [r for r in caplog.records if "KeyError" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None and logged[0].levelno == logging.WARNING
    assert "internal_error" in dicom.ERROR_KINDS


def test_internal_error_says_what_and_where_on_one_line():
    try:
        {}["a\nkey"]
    except KeyError as exc:
        error = dicom.InternalError.of("x.dcm", exc)
    assert error.kind == "internal_error" and "\n" not in error.message
    assert error.message.startswith("KeyError: 'a\\nkey' (at test_bad_dicom.py:")
    try:
        pydicom.dcmread(io.BytesIO(b"not DICOM"))
    except Exception as exc:  # raised inside a library: its file, from the package down
        where = dicom.InternalError.of("x.dcm", exc).message
    assert re.fullmatch(r"InvalidDicomError: File is missing .* \(at pydicom/filereader\.py:\d+\)", where), where


# a header that makes the image meaningless (non-finite numbers) or constant (after the modality LUT or the VOI)


@pytest.mark.parametrize(
    "attributes, named",
    [
        ({"WindowCenter": "NaN", "WindowWidth": "400"}, "WindowCenter is nan"),
        ({"WindowCenter": "2000", "WindowWidth": "inf"}, "WindowWidth is inf"),
        ({"WindowCenter": "-inf", "WindowWidth": "400", "VOILUTFunction": "SIGMOID"}, "WindowCenter is -inf"),
        ({"RescaleSlope": "NaN"}, "RescaleSlope is nan"),
        ({"RescaleSlope": "inf"}, "RescaleSlope is inf"),
        ({"RescaleIntercept": "-inf"}, "RescaleIntercept is -inf"),
        ({"RescaleSlope": "1e308", "RescaleIntercept": "1e308"}, "overflow"),
    ],
    ids=["center-nan", "width-inf", "sigmoid-center-inf", "slope-nan", "slope-inf", "intercept-inf", "overflow"],
)
@pytest.mark.parametrize("reject_constant", [False, True])
@INVALID_DS
def test_non_finite_window_or_rescale_is_an_invalid_header(write_dicom, attributes, named, reject_constant):
    """Before, each decoded "ok" to a single grey level: a black or grey view, cached."""
    path = write_dicom(ramp(), **attributes)
    with pytest.raises(dicom.InvalidHeaderError, match=named):
        dicom.decode_with_report(path, reject_constant=reject_constant)


@INVALID_DS
def test_a_non_finite_window_that_is_not_used_is_no_error(write_dicom):
    path = write_dicom(ramp(), WindowCenter="NaN", WindowWidth="400")
    assert dicom.decode_with_report(path, voi="minmax").report.voi == "minmax"


@pytest.mark.parametrize(
    "attributes, why",
    [
        (
            {"RescaleSlope": "0", "RescaleIntercept": "-50"},
            r"every value is -50 after the modality LUT \(RescaleSlope 0",
        ),
        (
            {"RescaleSlope": "0", "WindowCenter": "100", "WindowWidth": "50"},
            r"every value is 0 after the modality LUT \(RescaleSlope 0",
        ),
        (
            {"WindowCenter": "90000", "WindowWidth": "10"},
            r"every pixel is grey level 0 after the VOI \(window:LINEAR\)",
        ),
        (
            {"WindowCenter": "-90000", "WindowWidth": "10", "PhotometricInterpretation": "MONOCHROME1"},
            r"every pixel is grey level 0 after the VOI",
        ),
    ],
    ids=["slope-0", "slope-0-window", "window-above", "window-below-monochrome1"],
)
def test_an_image_constant_after_the_modality_lut_or_the_voi_is_a_constant_image(write_dicom, attributes, why):
    """A RescaleSlope of 0 was read as 1 (the ramp came out); a window far from every value gave a black view."""
    path = write_dicom(ramp(), **attributes)
    with pytest.raises(dicom.ConstantImageError, match=why + ".*: no image"):
        dicom.decode_with_report(path, reject_constant=True)
    got = dicom.decode_with_report(path)
    assert got.report.constant and len(np.unique(got.image)) == 1
    assert any(note.startswith("constant image: every") for note in got.report.notes)
    plain = write_dicom(ramp())
    assert not dicom.decode_with_report(plain, reject_constant=True).report.constant


def test_a_window_that_shows_some_pixels_is_not_constant(write_dicom):
    path = write_dicom(ramp(), WindowCenter="4000", WindowWidth="100")  # the ramp's top in the window
    got = dicom.decode_with_report(path, reject_constant=True)
    assert not got.report.constant and got.image.max() == 255 and got.image.min() == 0


@pytest.mark.parametrize("policy", ["exclude", "blank"])
def test_stage_one_excludes_or_blanks_a_slope_zero_image_as_a_constant_one(shard, tmp_path, policy):
    clean, manifest_dir = shard
    _, path = _image_of(clean, manifest_dir, 0)
    victim = tmp_path / path.name
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = "0", "7"
    ds.save_as(victim, enforce_file_format=True)
    settings = views.ViewSettings(canonical_size=64, constant_images=policy)
    if policy == "exclude":
        with pytest.raises(dicom.ConstantImageError):
            levels.decode_view(victim, "L", settings)
    else:
        decoded, located, image = levels.decode_view(victim, "L", settings)
        assert decoded.report.constant and not image.any() and located.roi.fallback


# something other than a file where a file should be

WHAT_IS_THERE = """
    import json, sys
    from pathlib import Path
    from mammoscale import dicom

    found = {}
    for name in sys.argv[1:]:
        path = Path(name)
        problem = dicom.file_problem(path)
        try:
            dicom.decode(path)
            decoded = None
        except dicom.DicomError as exc:
            decoded = [exc.kind, exc.message]
        found[path.name] = {
            "problem": problem and [problem.kind, problem.message],
            "decoded": decoded,
            "shape": dicom.header_shape(path),
        }
    print(json.dumps(found))
"""


def test_a_directory_a_fifo_a_socket_or_a_device_is_named_and_never_opened(tmp_path, write_dicom):
    """Opening a named pipe blocks until something writes to it: a stage-1 worker would wait forever. The read runs
    in a subprocess under a timeout, so that a blocking open fails the test instead of hanging it."""
    (tmp_path / "directory.dcm").mkdir()
    os.mkfifo(tmp_path / "fifo.dcm")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "socket.dcm"))
    (tmp_path / "dangling.dcm").symlink_to(tmp_path / "gone.dcm")
    good = write_dicom(ramp(), name="good.dcm")
    names = ["directory.dcm", "fifo.dcm", "socket.dcm", "dangling.dcm", "absent.dcm"]
    try:
        done = _python(WHAT_IS_THERE, *(str(tmp_path / n) for n in names), "/dev/null", str(good), timeout=60)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    expected = {
        "directory.dcm": ["unreadable", "is a directory, not a file"],
        "fifo.dcm": ["unreadable", "is a named pipe (FIFO), not a file"],
        "socket.dcm": ["unreadable", "is a socket, not a file"],
        "null": ["unreadable", "is a character device, not a file"],
        "dangling.dcm": ["missing_file", f"is a symbolic link to {tmp_path / 'gone.dcm'}, which does not exist"],
        "absent.dcm": ["missing_file", "no such file"],
    }
    for name, error in expected.items():
        assert found[name] == {"problem": error, "decoded": error, "shape": None}, name
    assert found["good.dcm"] == {"problem": None, "decoded": None, "shape": [32, 64]}


# a Rust codec's panic

PANIC = """
    import os, sys
    from mammoscale import dicom, logs

    if sys.argv[2] == "log":
        logs.configure()  # log records on standard error, as a command without a log file shows them
    for _ in range(2):
        try:
            dicom.decode(sys.argv[1])
        except dicom.DicomError as exc:
            print(exc.kind)
    print(os.environ["RUST_BACKTRACE"])
"""


@pytest.mark.parametrize("logging_to", ["nowhere", "log"])
def test_a_rust_codec_panic_costs_at_most_a_line_of_the_terminal(tmp_path, logging_to):
    """pylibjpeg-rle panics on a damaged segment; with RUST_BACKTRACE=1 in the user's environment Rust's panic hook
    printed some sixty lines of backtrace per file. Now its words are one INFO line of the log, per panic."""
    ds = dataset_from_stored(ramp(512, 384), transfer_syntax=RLELossless)
    path = tmp_path / "rle.dcm"
    ds.save_as(path, enforce_file_format=True)
    path.write_bytes(_noise_in_the_middle(bytearray(path.read_bytes())))
    done = _python(PANIC, str(path), logging_to, env={**os.environ, "RUST_BACKTRACE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["corrupt_pixel_data", "corrupt_pixel_data", "1"]  # the user's variable is kept
    lines = done.stderr.splitlines()
    assert "stack backtrace" not in done.stderr
    if logging_to == "log":
        assert len(lines) == 2 and all("INFO" in line and "panicked at" in line for line in lines), lines
    else:
        assert lines == []
