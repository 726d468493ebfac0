"""The synthetic RSNA-layout dataset: layout, every variation (read back from headers), geometry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from mammoscale import dicom, files, synthetic
from mammoscale.synthetic import phantom

SHAPE = (256, 192)


def box(text: str) -> tuple[int, int, int, int]:
    return tuple(int(v) for v in text.split())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthetic.generate(
        tmp_path_factory.mktemp("syn") / "data", n_patients=14, image_shape=SHAPE, seed=7, cancer_rate=0.1, workers=2
    )


@pytest.fixture(scope="module")
def table(dataset) -> pd.DataFrame:
    return pd.read_csv(dataset / "train.csv")


@pytest.fixture(scope="module")
def truth(dataset) -> pd.DataFrame:
    return pd.read_csv(dataset / "synthetic_truth.csv")


@pytest.fixture(scope="module")
def headers(dataset, table) -> pd.DataFrame:
    rows = []
    for r in table.itertuples():
        ds = pydicom.dcmread(dataset / "train_images" / str(r.patient_id) / f"{r.image_id}.dcm")
        window = ds.get("WindowCenter")
        rows.append(
            {
                "image_id": r.image_id,
                "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
                "bits_stored": int(ds.BitsStored),
                "bits_allocated": int(ds.BitsAllocated),
                "photometric": ds.PhotometricInterpretation,
                "window_values": 0
                if window is None
                else (len(window) if isinstance(window, pydicom.multival.MultiValue) else 1),
                "voi_function": ds.get("VOILUTFunction", ""),
                "voi_lut": "VOILUTSequence" in ds,
                "rescale": "RescaleSlope" in ds,
                "modality": ds.Modality,
                "laterality": ds.ImageLaterality,
                "view": ds.ViewPosition,
                "patient_id": ds.PatientID,
                "shape": (ds.Rows, ds.Columns),
            }
        )
    return pd.DataFrame(rows)


# layout and table


def test_rsna_layout_and_columns(dataset, table):
    assert list(table.columns) == list(files.RSNA_COLUMNS)
    assert table["image_id"].is_unique
    for r in table.itertuples():
        assert (dataset / "train_images" / str(r.patient_id) / f"{r.image_id}.dcm").is_file()
    on_disk = sorted(dataset.glob("train_images/*/*.dcm"))
    assert len(on_disk) == len(table), "every file is listed and every listed file exists"
    assert not list(dataset.rglob("*.partial"))
    assert table["patient_id"].nunique() == 14
    assert set(table["laterality"]) == {"L", "R"}
    assert table["site_id"].isin([1, 2]).all()


def test_headers_agree_with_the_table(table, headers):
    merged = table.merge(headers, on="image_id", suffixes=("", "_header"))
    assert (merged["modality"] == "MG").all()
    assert (merged["laterality"] == merged["laterality_header"]).all()
    assert (merged["view"] == merged["view_header"]).all()
    assert (merged["patient_id"].astype(str) == merged["patient_id_header"]).all()
    assert (merged["bits_allocated"] == 16).all()
    assert set(merged["shape"]) == {SHAPE}


def test_every_variation_is_present_in_the_headers(headers):
    syntaxes = set(headers["transfer_syntax"])
    assert syntaxes == {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.4.80",
    }
    assert set(headers["bits_stored"]) == {12, 14, 16}
    assert set(headers["photometric"]) == {"MONOCHROME1", "MONOCHROME2"}
    assert {1, 2} <= set(headers["window_values"]), "single and multi-valued windows"
    assert (headers["window_values"] == 0).any(), "files with no window at all"
    assert {"LINEAR", "SIGMOID", "LINEAR_EXACT"} <= set(headers["voi_function"])
    assert headers["voi_lut"].any()
    assert headers["rescale"].any() and not headers["rescale"].all()
    no_voi = headers[(headers["window_values"] == 0) & ~headers["voi_lut"]]
    assert len(no_voi) > 0


def test_views_and_breast_exceptions(table):
    views = set(table["view"])
    assert {"CC", "MLO"} <= views
    assert views & set(synthetic.EXTRA_VIEWS), "extra non-standard views"
    per_breast = table.groupby(["patient_id", "laterality"])["view"].agg(list)
    has_cc = per_breast.map(lambda v: "CC" in v)
    has_mlo = per_breast.map(lambda v: "MLO" in v)
    assert (has_cc ^ has_mlo).any(), "a breast with only one of CC/MLO"
    assert per_breast.map(lambda v: v.count("CC") == 2).any(), "a breast with two CC images"
    assert (has_cc & has_mlo).mean() > 0.8, "most breasts are complete"


def test_cancer_is_per_breast_and_prevalence_is_configurable(table):
    per_breast = table.groupby(["patient_id", "laterality"])["cancer"].agg(["min", "max"])
    assert (per_breast["min"] == per_breast["max"]).all(), "all images of a breast share the label"
    assert per_breast["max"].sum() == round(0.1 * 28)
    for rate, expected in ((0.02, 1), (0.25, 10)):
        frame, _ = synthetic.plan(n_patients=20, seed=3, cancer_rate=rate)
        assert frame.groupby(["patient_id", "laterality"])["cancer"].max().sum() == expected


def test_real_value_shapes_of_the_other_columns(table):
    site2 = table[table["site_id"] == 2]
    assert site2["BIRADS"].isna().all() and site2["density"].isna().all()
    assert set(table["density"].dropna()) <= set("ABCD")
    assert (table.loc[table["cancer"] == 1, "biopsy"] == 1).all()
    assert not table.loc[table["cancer"] == 1, "difficult_negative_case"].any()


# determinism


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = synthetic.generate(tmp_path / "a", n_patients=3, image_shape=(96, 72), seed=11, workers=1)
    b = synthetic.generate(tmp_path / "b", n_patients=3, image_shape=(96, 72), seed=11, workers=2)
    c = synthetic.generate(tmp_path / "c", n_patients=3, image_shape=(96, 72), seed=12, workers=1)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


# what the pixels show


def decoded(dataset: Path, row) -> np.ndarray:
    return dicom.decode(dataset / "train_images" / str(row.patient_id) / f"{row.image_id}.dcm", output="float32")


def test_tissue_sits_on_the_chest_wall_side_of_its_laterality(dataset, truth):
    for row in truth.itertuples():
        image = decoded(dataset, row)
        tissue = image > 0.2
        tissue[: SHAPE[0] // 8] = False  # ignore the label and top-edge artefacts
        tissue[:, :3] = tissue[:, -3:] = False
        cols = np.nonzero(tissue)[1]
        centre = cols.mean() / SHAPE[1]
        assert (centre > 0.5) == (row.laterality == "R"), (row.image_id, row.laterality, centre)
        r0, c0, r1, c1 = box(row.breast_box)
        assert (c0 == 0) == (row.laterality == "L") and (c1 == SHAPE[1]) == (row.laterality == "R")


def test_mlo_views_have_a_bright_pectoral_wedge(dataset, truth):
    for row in truth[truth["view"].isin(["CC", "MLO"])].itertuples():
        image = decoded(dataset, row)
        image = image[:, ::-1] if row.laterality == "R" else image  # chest wall on the left
        corner = image[SHAPE[0] // 10 : SHAPE[0] // 5, 5 : SHAPE[1] // 12].mean()
        middle = image[SHAPE[0] // 2 - 5 : SHAPE[0] // 2 + 5, SHAPE[1] // 6 : SHAPE[1] // 4].mean()
        if row.view == "MLO":
            assert corner > middle + 0.1, row.image_id
        else:
            assert corner < middle + 0.05, row.image_id


def test_burned_in_label_is_white_and_away_from_the_breast(dataset, truth):
    for row in truth.itertuples():
        image = decoded(dataset, row)
        r0, c0, r1, c1 = box(row.label_box)
        white = image.max()  # full white after this file's VOI (a sigmoid never reaches 1)
        assert (image[r0:r1, c0:c1] >= white - 1e-3).sum() >= 10, "label pixels are burned in at full white"
        br0, bc0, br1, bc1 = box(row.breast_box)
        overlap_cols = max(0, min(c1, bc1) - max(c0, bc0))
        overlap_rows = max(0, min(r1, br1) - max(r0, br0))
        assert overlap_cols * overlap_rows == 0 or overlap_cols < 3, row.image_id


def test_edge_artefacts_touch_the_borders(dataset, truth):
    kinds = set(truth["artefact"])
    assert kinds == {"none", "frame", "edge"}
    for row in truth.itertuples():
        image = decoded(dataset, row)
        top = image[:2].mean()
        if row.artefact == "frame":
            assert top > 0.8 and image[-2:].mean() > 0.8
        if row.artefact == "edge":
            assert top > 0.8 and image[-2:].mean() < 0.5
        if row.artefact == "none":
            assert image[-2:].mean() < 0.5


def test_lesions_are_in_every_view_of_a_positive_breast_and_nowhere_else(dataset, table, truth):
    merged = truth.merge(table[["image_id", "cancer"]], on="image_id")
    assert merged["cancer"].sum() > 0
    for row in merged.itertuples():
        has_lesion = isinstance(row.lesion_row, float) and not np.isnan(row.lesion_row)
        assert has_lesion == bool(row.cancer), row.image_id
        if not has_lesion:
            continue
        image = decoded(dataset, row)
        r, c, radius = int(row.lesion_row), int(row.lesion_col), row.lesion_radius
        core = image[r - 1 : r + 2, c - 1 : c + 2].mean()
        ring = np.concatenate(
            [image[r - 1 : r + 2, int(c + 2.5 * radius)], image[r - 1 : r + 2, int(c - 2.5 * radius)]]
        )
        assert core > ring.mean() + 0.15, (row.image_id, core, ring.mean())


# arguments and command line


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="n_patients"):
        synthetic.generate(tmp_path / "x", n_patients=0)
    with pytest.raises(ValueError, match="image_shape"):
        synthetic.generate(tmp_path / "x", n_patients=1, image_shape=(32, 32))
    with pytest.raises(ValueError, match="cancer_rate"):
        synthetic.generate(tmp_path / "x", n_patients=1, cancer_rate=1.5)
    with pytest.raises(ValueError, match="artefact"):
        phantom.draw_view(
            (64, 64),
            phantom.random_breast(np.random.default_rng(0), cancer=False),
            view="CC",
            laterality="L",
            artefact="smudge",
            rng=np.random.default_rng(0),
        )


def test_an_existing_dataset_is_kept_unless_overwrite(tmp_path):
    root = synthetic.generate(tmp_path / "d", n_patients=1, image_shape=(64, 64), seed=1)
    with pytest.raises(FileExistsError, match="overwrite"):
        synthetic.generate(root, n_patients=1, image_shape=(64, 64), seed=2)
    synthetic.generate(root, n_patients=2, image_shape=(64, 64), seed=2, overwrite=True)
    assert len(list(root.glob("train_images/*/*.dcm"))) == len(pd.read_csv(root / "train.csv"))


def test_cli_writes_a_dataset_and_rejects_bad_shapes(tmp_path, capsys):
    assert synthetic.cli([str(tmp_path / "cli"), "--patients", "1", "--shape", "96x80"]) == 0
    assert (tmp_path / "cli" / "train.csv").is_file()
    with pytest.raises(SystemExit) as exit_info:
        synthetic.cli([str(tmp_path / "cli2"), "--shape", "big"])
    assert exit_info.value.code == 2
    assert "ROWSxCOLUMNS" in capsys.readouterr().err


def test_transfer_syntaxes_can_be_narrowed():
    _, specs = synthetic.plan(n_patients=4, seed=0, cancer_rate=0.1, transfer_syntaxes=("1.2.840.10008.1.2.4.90",))
    assert {s.transfer_syntax for s in specs} == {"1.2.840.10008.1.2.4.90"}
    with pytest.raises(ValueError, match="transfer_syntaxes"):
        synthetic.plan(n_patients=4, seed=0, cancer_rate=0.1, transfer_syntaxes=("1.2.3",))
