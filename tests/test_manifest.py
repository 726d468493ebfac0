"""The manifest: one row per breast, every exclusion with a reason, patient-level stratified splits."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from mammoscale.dataset import manifest
from mammoscale.files import BREAST_TABLE, image_path

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def write_dataset(root, rows, *, files=True):
    """A train.csv of ``rows`` (dicts) and, unless told otherwise, an empty file per listed image."""
    root.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(root / "train.csv", index=False)
    if files:
        for r in rows:
            path = image_path(root, str(r["patient_id"]), str(r["image_id"]))
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"")
    return root


def breast(patient, side, cancer=0, views=("CC", "MLO"), first_id=None):
    first_id = first_id or patient * 10 + (0 if side == "L" else 5)
    return [
        {
            "site_id": 1,
            "patient_id": patient,
            "image_id": first_id + k,
            "laterality": side,
            "view": v,
            "cancer": cancer,
            "machine_id": 49,
        }
        for k, v in enumerate(views)
    ]


def build(root, **kwargs):
    options = {"split_fractions": FRACTIONS, "seed": 0, "n_shards": 2} | kwargs
    return manifest.build(root, **options)


def test_one_row_per_complete_breast(tmp_path):
    rows = breast(1, "L") + breast(1, "R", cancer=1) + breast(2, "L")
    breasts, excluded, counts = build(write_dataset(tmp_path, rows))
    assert list(breasts.columns) == list(BREAST_TABLE.columns)
    assert breasts["breast_id"].tolist() == ["1_L", "1_R", "2_L"]
    assert breasts.loc[breasts["breast_id"] == "1_R", ["cc_image_id", "mlo_image_id", "label"]].values.tolist() == [
        [15, 16, 1]
    ]
    assert excluded.empty and counts["breasts"] == 3 and counts["positive_breasts"] == 1


def test_other_views_are_counted_not_used(tmp_path):
    rows = breast(1, "L", views=("CC", "MLO", "AT", "LMO")) + breast(1, "R", views=("CC", "ML", "MLO"))
    breasts, excluded, counts = build(write_dataset(tmp_path, rows))
    assert len(breasts) == 2 and excluded.empty
    assert counts["other_views_not_used"] == {"AT": 1, "LMO": 1, "ML": 1}


def test_several_cc_images_choose_the_smallest_id_whatever_the_row_order(tmp_path):
    rows = breast(1, "L", views=("CC", "CC", "MLO", "MLO"), first_id=500)
    rows[0]["image_id"], rows[1]["image_id"] = 900, 300
    rows[2]["image_id"], rows[3]["image_id"] = 700, 650
    first, _, _ = build(write_dataset(tmp_path / "a", rows))
    second, _, _ = build(write_dataset(tmp_path / "b", rows[::-1]))
    assert first[["cc_image_id", "mlo_image_id"]].values.tolist() == [[300, 650]]
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"image_id": "../../../etc/passwd"}, "invalid_id"),
        ({"patient_id": "12/../13"}, "invalid_id"),
        ({"image_id": "1e3"}, "invalid_id"),
        ({"image_id": "²"}, "invalid_id"),
        ({"laterality": "B"}, "unknown_laterality"),
        ({"cancer": "yes"}, "invalid_label"),
    ],
    ids=["traversal", "patient-traversal", "float", "unicode-digit", "laterality", "label"],
)
def test_bad_rows_are_excluded_with_a_reason_and_take_their_breast_down(tmp_path, change, reason):
    rows = breast(1, "L") + breast(2, "L")
    rows[0].update(change)
    breasts, excluded, counts = build(write_dataset(tmp_path, rows, files=True))
    assert reason in set(excluded["reason"])
    assert breasts["breast_id"].tolist() == ["2_L"]
    assert counts["excluded_by_reason"][reason] == 1
    assert not (tmp_path.parent / "etc").exists()


def test_duplicated_image_ids_exclude_every_copy(tmp_path):
    rows = breast(1, "L") + breast(2, "L")
    rows[2]["image_id"] = rows[0]["image_id"]
    breasts, excluded, _ = build(write_dataset(tmp_path, rows))
    assert (excluded["reason"] == "duplicate_image_id").sum() == 2
    assert breasts.empty or set(breasts["breast_id"]).isdisjoint({"1_L", "2_L"})


def test_missing_files_and_incomplete_breasts(tmp_path):
    rows = breast(1, "L") + breast(2, "L", views=("CC",)) + breast(3, "R", views=("MLO",)) + breast(4, "L")
    root = write_dataset(tmp_path, rows)
    image_path(root, "4", str(rows[-1]["image_id"])).unlink()
    breasts, excluded, counts = build(root)
    assert breasts["breast_id"].tolist() == ["1_L"]
    reasons = sorted(zip(excluded["reason"], excluded["patient_id"].astype(str), strict=True))
    # patient 4 loses its MLO file, and then its breast lacks an MLO
    assert reasons == [("missing_cc", "3"), ("missing_file", "4"), ("missing_mlo", "2"), ("missing_mlo", "4")]
    assert counts["excluded_by_reason"] == {"missing_cc": 1, "missing_file": 1, "missing_mlo": 2}


def test_a_directory_or_a_fifo_in_a_files_place_is_not_missing_it_goes_on_to_say_what_it_is(tmp_path):
    rows = breast(1, "L") + breast(2, "L")
    root = write_dataset(tmp_path, rows)
    for row, make in zip(rows[1::2], (lambda p: p.mkdir(), os.mkfifo), strict=True):
        path = image_path(root, str(row["patient_id"]), str(row["image_id"]))
        path.unlink()
        make(path)
    breasts, excluded, _ = build(root)
    assert breasts["breast_id"].tolist() == ["1_L", "2_L"] and excluded.empty  # stage 1 records them as unreadable


def test_conflicting_labels_within_a_breast_are_excluded(tmp_path):
    rows = breast(1, "L") + breast(2, "L")
    rows[1]["cancer"] = 1
    breasts, excluded, _ = build(write_dataset(tmp_path, rows))
    assert breasts["breast_id"].tolist() == ["2_L"]
    assert excluded["reason"].tolist() == ["conflicting_labels"] * 2  # every image of the breast
    assert excluded["image_id"].tolist() == ["10", "11"]


def test_every_row_of_train_csv_is_accounted_for_once(tmp_path):
    rows = (
        breast(1, "L", views=("CC", "CC", "MLO", "AT"))  # used; a CC not chosen; an other view
        + breast(1, "R", views=("AT", "LM"))  # no standard view at all
        + breast(2, "L", views=("CC", "ML"))  # no MLO: both images excluded
        + breast(3, "R", views=("CC", "MLO", "MLO", "MLO"))  # two MLOs not chosen
    )
    rows.append({**rows[0], "image_id": "x1"})  # an invalid id
    breasts, excluded, counts = build(write_dataset(tmp_path, rows))
    assert breasts["breast_id"].tolist() == ["1_L", "3_R"]
    by_reason = excluded.groupby("reason")["image_id"].apply(sorted).to_dict()
    assert by_reason == {
        "invalid_id": ["x1"],
        "missing_mlo": ["20", "21"],
        "no_standard_view": ["15", "16"],
        "not_chosen": ["11", "37", "38"],
    }
    assert excluded.loc[excluded["reason"] == "not_chosen", "detail"].tolist()[0] == "another CC image (10) is used"
    assert counts["other_views_not_used"] == {"AT": 1}
    assert counts["images_used"] + len(excluded) + 1 == counts["rows"] == counts["rows_accounted"] == len(rows)


def test_a_header_only_train_csv_says_it_has_no_rows(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "train.csv").write_text("site_id,patient_id,image_id,laterality,view,cancer,machine_id\n")
    with pytest.raises(manifest.ManifestError, match=r"train.csv has a header but no rows: no image is listed$"):
        build(tmp_path)


def test_split_is_by_patient_stratified_and_seeded(tmp_path):
    rows = []
    for p in range(1, 101):
        rows += breast(p, "L", cancer=int(p % 10 == 0)) + breast(p, "R")
    root = write_dataset(tmp_path, rows)
    breasts, _, counts = build(root, seed=3)
    assert breasts.groupby("patient_id")["split"].nunique().max() == 1, "no patient in two splits"
    per_patient = breasts.groupby("patient_id")["split"].first().value_counts()
    assert per_patient.to_dict() == {"train": 60, "val": 20, "test": 20}
    assert counts["positive_by_split"] == {"train": 6, "val": 2, "test": 2}
    again, _, _ = build(root, seed=3)
    other, _, _ = build(root, seed=4)
    pd.testing.assert_frame_equal(breasts, again)
    assert not breasts["split"].equals(other["split"])


def test_a_patients_breasts_go_to_the_shard_of_its_id(tmp_path):
    rows = [r for p in range(1, 6) for r in breast(p, "L")] + [r for p in (2, 3) for r in breast(p, "R")]
    breasts, _, counts = build(write_dataset(tmp_path, rows), n_shards=3)
    shards = {"1_L": 1, "2_L": 2, "2_R": 2, "3_L": 0, "3_R": 0, "4_L": 1, "5_L": 2}  # the id modulo 3
    assert dict(zip(breasts["breast_id"], breasts["shard"], strict=True)) == shards
    assert counts["breasts_by_shard"] == [2, 2, 3]


@pytest.mark.parametrize(
    "fractions, message",
    [({"train": 0.5, "val": 0.2, "test": 0.2}, "sum to 1"), ({"train": 0.8, "test": 0.2}, "exactly")],
)
def test_bad_fractions(tmp_path, fractions, message):
    with pytest.raises(manifest.ManifestError, match=message):
        build(write_dataset(tmp_path, breast(1, "L")), split_fractions=fractions)


def test_missing_column_is_a_clear_error(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "view"} for r in breast(1, "L")]
    with pytest.raises(manifest.ManifestError, match="lacks column.*view"):
        build(write_dataset(tmp_path, rows))


def test_main_refuses_a_set_with_no_usable_breast(tmp_path):
    root = write_dataset(tmp_path, breast(1, "L", views=("CC",)))
    with pytest.raises(manifest.ManifestError, match="no usable breast.*missing_mlo"):
        manifest.main(
            root,
            tmp_path / "b.csv",
            tmp_path / "e.csv",
            tmp_path / "c.json",
            split_fractions=FRACTIONS,
            seed=0,
            n_shards=1,
        )
