"""Decode QC over a dataset: one row per train.csv row, broken files reported by kind, never dropped."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from mammoscale import synthetic
from mammoscale.dataset import audit
from mammoscale.dataset.manifest import ManifestError


@pytest.fixture
def broken_dataset(tmp_path):
    root = synthetic.generate(tmp_path / "data", n_patients=3, image_shape=(96, 80), seed=5)
    table = pd.read_csv(root / "train.csv")
    first, second, third = (
        root / "train_images" / str(r.patient_id) / f"{r.image_id}.dcm" for r in table.iloc[:3].itertuples()
    )
    first.write_bytes(b"garbage" * 40)
    second.unlink()
    third.write_bytes(third.read_bytes()[:150])
    extra = table.iloc[[3]].copy()
    extra["image_id"] = "../../../etc/passwd"
    unlisted = root / "train_images" / str(table.iloc[4].patient_id) / "123.dcm"
    shutil.copy(root / "train_images" / str(table.iloc[4].patient_id) / f"{table.iloc[4].image_id}.dcm", unlisted)
    pd.concat([table, extra]).to_csv(root / "train.csv", index=False)
    return root, len(table) + 1


def test_every_row_is_reported_and_errors_are_typed(broken_dataset):
    root, n_rows = broken_dataset
    summary, counts = audit.summarise_dataset(root, workers=2)
    assert len(summary) == n_rows == counts["images"]
    assert counts["errors_by_kind"] == {"not_dicom": 1, "truncated": 1, "missing_file": 1, "invalid_id": 1}
    assert counts["decoded"] == n_rows - 4
    assert counts["unlisted_files"] == 1
    bad_id = summary[summary["error_kind"] == "invalid_id"].iloc[0]
    assert bad_id["path"] == "" and "integers" in bad_id["message"]
    ok = summary[summary["status"] == "ok"]
    assert (ok["rows"].astype(int) == 96).all() and (ok["columns"].astype(int) == 80).all()
    assert set(ok["photometric"]) == {"MONOCHROME1", "MONOCHROME2"}


def test_serial_and_parallel_agree(broken_dataset):
    root, _ = broken_dataset
    serial, _ = audit.summarise_dataset(root, workers=1)
    parallel, _ = audit.summarise_dataset(root, workers=2)
    pd.testing.assert_frame_equal(serial, parallel)


def test_main_writes_the_table_and_counts(broken_dataset, tmp_path):
    root, n_rows = broken_dataset
    counts = audit.main(root, tmp_path / "qc" / "s.csv", tmp_path / "qc" / "s.json", workers=1, max_pixels=10**8)
    assert len(pd.read_csv(tmp_path / "qc" / "s.csv")) == n_rows
    assert json.loads((tmp_path / "qc" / "s.json").read_text())["errors"] == counts["errors"] == 4


def test_pixel_limit_is_passed_through(tmp_path):
    root = synthetic.generate(tmp_path / "d", n_patients=1, image_shape=(96, 80), seed=1)
    summary, counts = audit.summarise_dataset(root, max_pixels=96 * 80 - 1)
    assert set(summary["error_kind"]) == {"too_large"} and counts["decoded"] == 0


@pytest.mark.parametrize(
    "content, message",
    [(None, "not found"), ("a,b\n1,2\n", "lacks column"), ("", "not a readable CSV")],
    ids=["missing", "columns", "empty"],
)
def test_unusable_train_csv_is_a_clear_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "train.csv").write_text(content)
    with pytest.raises(ManifestError, match=message):
        audit.summarise_dataset(tmp_path)


def test_an_unexpected_failure_is_that_images_internal_error_and_the_audit_goes_on(broken_dataset, monkeypatch):
    root, n_rows = broken_dataset
    decode = audit.dicom.decode_with_report
    row = pd.read_csv(root / "train.csv", dtype=str).iloc[5]  # a file the fixture left whole
    victim = root / "train_images" / row["patient_id"] / f"{row['image_id']}.dcm"

    def fails_on_victim(path, **kwargs):
        if path == victim:
            raise KeyError("x")
        return decode(path, **kwargs)

    monkeypatch.setattr(audit.dicom, "decode_with_report", fails_on_victim)
    summary, counts = audit.summarise_dataset(root, workers=0)
    found = summary[summary["path"] == str(victim.relative_to(root))].iloc[0]
    assert found["error_kind"] == "internal_error" and found["message"].startswith("KeyError: 'x' (at ")
    assert counts["errors_by_kind"]["internal_error"] == 1 and counts["images"] == n_rows
