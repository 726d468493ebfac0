"""From NIH's ChestX-ray14 directory to one row per image: the unit the CheXNet study trains on.

The directory (``data.root``) holds ``Data_Entry_2017.csv``, the official ``train_val_list.txt``
and ``test_list.txt``, and the PNGs in ``images_001/images`` ... ``images_012/images`` (as
Kaggle's copy unpacks) or in one flat ``images`` (files.CHEST_PART, CHEST_FLAT).

Rules (also in docs/chexnet.md):

- Refused whole, one line each (:class:`~mammoscale.dataset.manifest.ManifestError`): a missing
  CSV, list or image directory; a CSV without ``Image Index``, ``Finding Labels`` or ``Patient
  ID``; a finding name that is not one of the fourteen (or ``No Finding``); an image in a list
  but not in the CSV, or in both lists; a patient with images in both lists (they split by
  patient).
- Excluded, with a reason, into ``excluded.csv``: an Image Index that is not a plain ``.png`` file
  name or a Patient ID that is not an integer (``invalid_id``: no CSV value names a path outside
  ``data.root``), an Image Index in several rows (``duplicate_image``, every copy), ``No Finding``
  with a finding or no label at all (``invalid_labels``), an image in neither list
  (``not_listed``), a file found in none of the image directories (``missing_file``) or in
  several (``duplicate_file``).
- Every row is accounted for, once: ``rows`` = ``images`` + the rows of ``excluded.csv``.
- The test split is ``test_list.txt``; ``train_val_list.txt`` is split into train and val by
  patient, stratified by the patient having any finding, seeded, with ``manifest.split``'s train
  and val fractions renormalised (:func:`train_val_fractions`; its test fraction is the list's).
- Shards: a patient's images go to the shard of its id modulo the number of shards
  (:func:`mammoscale.dataset.sources.shard_of`), as the RSNA manifest's breasts do.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mammoscale import files, tasks
from mammoscale.dataset import sources
from mammoscale.dataset.manifest import ManifestError, assign_splits, check_fractions
from mammoscale.files import SPLITS
from mammoscale.tasks import FINDINGS, NO_FINDING

log = logging.getLogger(__name__)

NIH_TRAIN_VAL_IMAGES = 86_524
"""The images of NIH's ``train_val_list.txt`` (of 112,120; the other 25,596 are ``test_list.txt``'s)."""
IMAGE_NAME = re.compile(r"[A-Za-z0-9_.-]+\.png", re.IGNORECASE)
"""An Image Index the study reads: a plain PNG file name (NIH's are ``00000001_000.png``)."""
LISTS = {"train_val": files.CHEST_TRAIN_VAL, "test": files.CHEST_TEST}
IMAGE_DIRS = f"{files.fill(files.CHEST_PART, part='*')}/ or {files.CHEST_FLAT}/"
LAYOUT = f"{files.CHEST_ENTRIES}, {files.CHEST_TRAIN_VAL}, {files.CHEST_TEST} and the PNGs in {IMAGE_DIRS}"


# the directory


def check_root(root: Path | str) -> None:
    """``root`` is a ChestX-ray14 directory: its CSV and both lists are there (its images are looked for later)."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(
            f"data.root {root} does not exist: set it to NIH's ChestX-ray14 directory ({LAYOUT}), or data.source to "
            "synthetic-chestxray14"
        )
    missing = [name for name in (files.CHEST_ENTRIES, *LISTS.values()) if not (root / name).is_file()]
    if missing:
        raise ManifestError(
            f"{', '.join(missing)} not found in {root}: data.root must be the ChestX-ray14 directory ({LAYOUT}) "
            "itself, not one above or beside it"
        )


def read_entries(root: Path | str) -> pd.DataFrame:
    """``Data_Entry_2017.csv`` as strings, its empty trailing column dropped, the required columns there."""
    path = Path(root) / files.CHEST_ENTRIES
    try:  # index_col=False: a line that ends with one comma more than its header is not shifted
        table = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} is not a readable CSV: {exc}") from None
    table = table.loc[:, [c for c in table.columns if not c.startswith("Unnamed:") and c.strip()]]
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in files.CHEST_REQUIRED if c not in table.columns]
    if missing:
        raise ManifestError(
            f"{path} lacks column(s) {', '.join(missing)}; it has {', '.join(table.columns) or 'none'} (NIH's header: "
            f"{','.join(files.CHEST_COLUMNS)})"
        )
    if table.empty:
        raise ManifestError(f"{path} has a header but no rows: no image is listed")
    return table


def read_list(root: Path | str, name: str) -> list[str]:
    """One of the official lists: its image names, one a line, blank lines skipped."""
    path = Path(root) / name
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path} is not a text list of image names ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def find_images(root: Path | str) -> dict[str, list[os.DirEntry]]:
    """Every ``.png`` of the image directories, by file name: where each is (several places for a duplicated name).

    Raises when there is no image directory at all: data.root is then not the directory the CSV describes.
    """
    root = Path(root)
    directories = sorted(root.glob(files.fill(files.CHEST_PART, part="*"))) + [root / files.CHEST_FLAT]
    directories = [d for d in directories if d.is_dir()]
    if not directories:
        raise ManifestError(f"{root} has no image directory ({IMAGE_DIRS}): unpack NIH's images_*.tar.gz there")
    found: dict[str, list[os.DirEntry]] = {}
    for directory in directories:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.lower().endswith(".png") and entry.is_file():
                    found.setdefault(entry.name, []).append(entry)
    return found


def relative(root: Path | str, entry: os.DirEntry) -> str:
    """An image's path under ``root`` (``images_001/images/00000001_000.png``): its directory's, computed once a
    directory (a ``relpath`` a file was half the time of fingerprinting NIH's 112,120 PNGs), and its name."""
    return f"{_relative_directory(str(root), os.path.dirname(entry.path))}/{entry.name}"


@functools.lru_cache(maxsize=64)
def _relative_directory(root: str, directory: str) -> str:
    return os.path.relpath(directory, root)


def fingerprints(root: Path | str, n_shards: int) -> sources.Sources:
    """Each shard's fingerprint of the PNGs it reads, and the absent ones', as :func:`sources.fingerprints` does for
    the RSNA layout: a replaced, moved or touched PNG reruns its shard; one that appears or goes reruns the manifest."""
    digests = [hashlib.sha256() for _ in range(n_shards)]
    absent = hashlib.sha256()
    try:
        found = find_images(root)
    except ManifestError:  # no image directory: the manifest says so
        found = {}
    listed = []  # without its columns, or unreadable: the manifest says what is wrong with the CSV
    try:
        with open(Path(root) / files.CHEST_ENTRIES, newline="") as handle:
            rows = csv.reader(handle)
            header = [c.strip() for c in next(rows, [])]
            if "Image Index" in header and "Patient ID" in header:
                i, p = header.index("Image Index"), header.index("Patient ID")
                listed = [(row[i].strip(), row[p].strip()) for row in rows if len(row) > max(i, p)]
    except (UnicodeDecodeError, csv.Error):
        listed = []
    for image, patient in listed:
        where = found.get(image, [])
        if len(where) == 1:
            info = where[0].stat()
            line = f"{relative(root, where[0])} {info.st_size} {info.st_mtime_ns}\n"
        else:
            line = f"{image} {len(where)}\n"
            absent.update(line.encode())
        if patient.isascii() and patient.isdigit() and len(patient) <= 18:
            digests[sources.shard_of(int(patient), n_shards)].update(line.encode())
    shards = {files.shard_name(k): d.hexdigest()[:16] for k, d in enumerate(digests)}
    return sources.Sources(shards, absent.hexdigest()[:16], len(listed))


# what the plan asks


def check_data(config: dict) -> None:
    """Before any job: a real source's ``data.root`` holds its CSV and lists (:func:`check_root`); the synthetic
    source's image count per patient is a range; the split leaves train_val_list.txt somewhere to go."""
    train_val_fractions(config["manifest"]["split"])
    if tasks.source(config["data"]["source"]).synthetic:
        low, high = config["synthetic_chestxray14"]["images_per_patient"]
        if low > high:
            raise ManifestError(
                f"synthetic_chestxray14.images_per_patient [{low}, {high}]: the lowest is above the highest; write "
                f"[{high}, {low}]"
            )
        return
    check_root(config["data"]["root"])


def nominal_train_images(config: dict) -> int:
    """The training images of a ChestX-ray14 source before its manifest exists (the plan's cost): the images of
    train_val_list.txt (NIH's, or the synthetic set's: its mean images a patient, ``manifest.split.test`` of the
    patients held out) times the training share of them (:func:`train_val_fractions`)."""
    split = config["manifest"]["split"]
    if tasks.source(config["data"]["source"]).synthetic:
        own = config["synthetic_chestxray14"]
        train_val = own["n_patients"] * sum(own["images_per_patient"]) / 2 * (1 - split["test"])
    else:
        train_val = NIH_TRAIN_VAL_IMAGES
    return max(1, round(train_val * train_val_fractions(split)["train"]))


# the manifest


def train_val_fractions(split: dict[str, float]) -> dict[str, float]:
    """``manifest.split``'s train and val fractions renormalised over ``train_val_list.txt`` (test: the list's)."""
    total = split["train"] + split["val"]
    if total <= 0:
        raise ManifestError(
            "manifest.split gives train and val 0: the ChestX-ray14 layout's test split is test_list.txt, and "
            f"{files.CHEST_TRAIN_VAL} is split between train and val by their fractions: make one of them > 0"
        )
    return {"train": split["train"] / total, "val": split["val"] / total, "test": 0.0}


def build(
    root: Path | str, *, split_fractions: dict[str, float], seed: int, n_shards: int
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Return (images, excluded, counts) for the ChestX-ray14 directory ``root``."""
    root = Path(root)
    fractions = train_val_fractions(check_fractions(split_fractions))
    if n_shards < 1:
        raise ManifestError(f"the number of shards must be >= 1, got {n_shards}")
    check_root(root)
    table = _normalised(read_entries(root))
    lists = {split: read_list(root, name) for split, name in LISTS.items()}
    _check_lists(root, table, lists)
    n_rows, excluded = len(table), []
    table = _valid_rows(table, excluded, lists)
    table = _with_files(root, table, excluded)
    _check_patients(table)
    images = _assign(table, fractions, seed=seed, n_shards=n_shards)
    excluded_frame = files.CHEST_EXCLUDED_TABLE.frame(excluded)
    counts = _counts(images, excluded_frame, rows=n_rows, n_shards=n_shards)
    if counts["rows_accounted"] != n_rows:  # every row is kept or excluded
        raise RuntimeError(f"the manifest accounts for {counts['rows_accounted']} of {n_rows} rows")
    log.info(
        "%d images of %d patients (%d with a finding); excluded: %s",
        counts["images"],
        counts["patients"],
        counts["images_with_findings"],
        counts["excluded_by_reason"] or "none",
    )
    return images, excluded_frame, counts


def _normalised(table: pd.DataFrame) -> pd.DataFrame:
    """Ids stripped; each row's findings as a set; the optional columns present."""
    out = pd.DataFrame(
        {
            "image_id": table["Image Index"].str.strip(),
            "patient_id": table["Patient ID"].str.strip(),
            "follow_up": table.get("Follow-up #", pd.Series("", index=table.index)).str.strip(),
            "view_position": table.get("View Position", pd.Series("", index=table.index)).str.strip(),
            "labels": [{name.strip() for name in value.split("|")} - {""} for value in table["Finding Labels"]],
        }
    )
    known = {*FINDINGS, NO_FINDING}
    unknown = out["labels"].map(lambda names: sorted(names - known))
    bad = unknown.map(bool)
    if bad.any():
        names = sorted({name for names in unknown[bad] for name in names})
        raise ManifestError(
            f"{files.CHEST_ENTRIES}: Finding Labels of {int(bad.sum())} row(s) name {', '.join(map(repr, names[:5]))}"
            f"{' ...' if len(names) > 5 else ''} (e.g. {out.loc[bad, 'image_id'].iloc[0]}), not one of the fourteen "
            f"findings ({', '.join(FINDINGS)}) or {NO_FINDING!r}: write them as NIH does, joined by |"
        )
    return out


def _check_lists(root: Path, table: pd.DataFrame, lists: dict[str, list[str]]) -> None:
    """Every listed image is a row of the CSV; no image is in both lists."""
    rows = set(table["image_id"])
    for split, listed in lists.items():
        absent = sorted(set(listed) - rows)
        if absent:
            raise ManifestError(
                f"{root / LISTS[split]} lists {len(absent)} image(s) that {files.CHEST_ENTRIES} does not have (e.g. "
                f"{', '.join(absent[:3])}): the lists and the CSV must come from the same release"
            )
    both = sorted(set(lists["train_val"]) & set(lists["test"]))
    if both:
        raise ManifestError(
            f"{len(both)} image(s) are in both {files.CHEST_TRAIN_VAL} and {files.CHEST_TEST} (e.g. "
            f"{', '.join(both[:3])}): an image is either trained on or held out; use NIH's lists"
        )


def _exclude(excluded: list[dict], rows: pd.DataFrame, reason: str, detail: str) -> None:
    excluded.extend(
        {"image_id": r.image_id, "patient_id": r.patient_id, "reason": reason, "detail": detail}
        for r in rows.itertuples(index=False)
    )


PATIENT = "[0-9]{1,18}"
"""A Patient ID the study takes: an integer an int64 holds (NIH's are five digits)."""


def _valid_rows(table: pd.DataFrame, excluded: list[dict], lists: dict[str, list[str]]) -> pd.DataFrame:
    """The rows with a PNG name and an integer patient, a unique name, consistent labels, in a list; the rest
    excluded."""
    listed = set(lists["train_val"]) | set(lists["test"])
    checks = [
        (
            lambda t: ~(t["image_id"].map(IMAGE_NAME.fullmatch).astype(bool) & t["patient_id"].str.fullmatch(PATIENT)),
            "invalid_id",
            "Image Index must be a .png file name and Patient ID an integer (of at most 18 digits)",
        ),
        (lambda t: t["image_id"].duplicated(keep=False), "duplicate_image", "Image Index appears in more than one row"),
        (
            lambda t: t["labels"].map(lambda names: not names or (NO_FINDING in names and len(names) > 1)),
            "invalid_labels",
            f"Finding Labels is empty, or {NO_FINDING!r} with a finding",
        ),
        (
            lambda t: ~t["image_id"].isin(listed),
            "not_listed",
            f"in neither {files.CHEST_TRAIN_VAL} nor {files.CHEST_TEST}",
        ),
    ]
    for bad, reason, detail in checks:
        mask = bad(table).astype(bool)
        _exclude(excluded, table[mask], reason, detail)
        table = table[~mask]
    return table.assign(split=np.where(table["image_id"].isin(set(lists["test"])), "test", "train_val"))


def _with_files(root: Path, table: pd.DataFrame, excluded: list[dict]) -> pd.DataFrame:
    """Each row's PNG, relative to ``root``; a row whose file is in no image directory, or in several, excluded."""
    found = find_images(root)
    places = table["image_id"].map(lambda name: found.get(name, []))
    missing, several = places.map(len) == 0, places.map(len) > 1
    _exclude(excluded, table[missing], "missing_file", f"in none of {IMAGE_DIRS}")
    _exclude(excluded, table[several], "duplicate_file", "the same file name in several image directories")
    keep = ~(missing | several)
    return table[keep].assign(path=[relative(root, where[0]) for where in places[keep]])


def _check_patients(table: pd.DataFrame) -> None:
    both = table.groupby("patient_id")["split"].nunique()
    both = sorted(both.index[both > 1], key=int)
    if both:
        raise ManifestError(
            f"{len(both)} patient(s) have images in both {files.CHEST_TRAIN_VAL} and {files.CHEST_TEST} (e.g. "
            f"{', '.join(both[:3])}): the lists must split by patient, as NIH's do, or the test split sees patients "
            "it was trained on"
        )


def _assign(table: pd.DataFrame, fractions: dict[str, float], *, seed: int, n_shards: int) -> pd.DataFrame:
    """The manifest's rows: findings as 0/1 columns, ``label`` (any finding), the split and the shard."""
    findings = {name: table["labels"].map(lambda names, n=name: int(n in names)).astype(np.int64) for name in FINDINGS}
    images = table.assign(patient_id=table["patient_id"].astype(np.int64), **findings)
    images["label"] = images[list(FINDINGS)].max(axis=1) if len(images) else pd.Series(dtype=np.int64)
    train_val = images["split"] == "train_val"
    if train_val.any():
        images.loc[train_val, "split"] = assign_splits(images[train_val], fractions, seed=seed)["split"]
    images["shard"] = sources.shard_of(images["patient_id"].to_numpy(np.int64), n_shards)
    images = images.sort_values("image_id", kind="stable").reset_index(drop=True)
    return images[list(files.CHEST_IMAGE_TABLE.columns)]


def _counts(images: pd.DataFrame, excluded: pd.DataFrame, *, rows: int, n_shards: int) -> dict:
    by_split = {s: images[images["split"] == s] for s in SPLITS}
    return {
        "rows": int(rows),
        "rows_accounted": int(len(images) + len(excluded)),
        "images": int(len(images)),
        "patients": int(images["patient_id"].nunique()),
        "images_with_findings": int(images["label"].sum()),
        "findings": {name: int(images[name].sum()) for name in FINDINGS},
        "excluded_by_reason": {str(k): int(v) for k, v in excluded["reason"].value_counts().sort_index().items()},
        "images_by_split": {s: int(len(frame)) for s, frame in by_split.items()},
        "patients_by_split": {s: int(frame["patient_id"].nunique()) for s, frame in by_split.items()},
        "positive_by_split": {s: int(frame["label"].sum()) for s, frame in by_split.items()},
        "images_by_shard": [int(v) for v in np.bincount(images["shard"], minlength=n_shards)],
    }


def main(
    root: Path | str,
    images_csv: Path | str,
    excluded_csv: Path | str,
    counts_json: Path | str,
    *,
    split_fractions: dict[str, float],
    seed: int,
    n_shards: int,
) -> dict:
    """Write images.csv, excluded.csv and the counts; the Snakemake rule ``chestxray14_manifest`` calls this."""
    images, excluded, counts = build(root, split_fractions=split_fractions, seed=seed, n_shards=n_shards)
    if images.empty:
        raise ManifestError(f"no usable image in {root}: excluded by reason {counts['excluded_by_reason']}")
    files.CHEST_IMAGE_TABLE.write(images, images_csv)
    files.CHEST_EXCLUDED_TABLE.write(excluded, excluded_csv)
    files.write_json(counts, counts_json)
    return counts
