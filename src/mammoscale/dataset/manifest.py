"""From an RSNA-layout directory to one row per breast: the unit the study trains on.

The study pairs the CC and MLO views of each breast into one tile, so the manifest decides,
once and reproducibly, which images make up each breast, which breasts cannot be used and
why, which split each patient belongs to, and which shard each breast is cached in.

Rules (also in docs/pipeline.md):

- Only CC and MLO views are used; the other views (AT, LM, ML, LMO, ...) of a breast used are
  counted.
- A breast with several CC (or MLO) images uses the one with the smallest image_id. The CSV
  carries no acquisition time, so this is arbitrary but fixed, and independent of row order.
  The others are ``not_chosen`` rows of ``excluded.csv``.
- Excluded, with a reason, into ``excluded.csv``: rows whose ids are not integers (so no
  CSV value can make a path leave ``data.root``), duplicated image ids (every copy), unknown
  laterality, a label other than 0/1, a missing CC or MLO file; then every image of a breast
  with no CC and no MLO (``no_standard_view``), without a CC or an MLO, or whose images
  disagree on the label.
- Every row of ``train.csv`` is accounted for, once: ``rows`` = ``images_used`` + the rows of
  ``excluded.csv`` + ``other_views_not_used`` (checked on every build).
- Split by patient (a patient's breasts share a split), stratified by the patient's label
  (any positive breast), seeded; the counts per stratum follow the fractions by largest
  remainder.
- Shards: a patient's breasts go to the shard of its id modulo the number of shards
  (:func:`mammoscale.dataset.sources.shard_of`), so that the files a shard reads are known from
  ``train.csv`` alone and a changed file reruns its shard only; with ids spread as the RSNA set's
  are, every shard gets a similar share of the work.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from mammoscale import dicom, files
from mammoscale.dataset import sources
from mammoscale.errors import UserError
from mammoscale.files import SPLITS

log = logging.getLogger(__name__)

OPTIONAL_COLUMNS = ("site_id", "machine_id")
USED_VIEWS = ("CC", "MLO")


class ManifestError(UserError, ValueError):
    """train.csv (or the directory around it) cannot be used at all; the message says why."""


# reading the dataset


def read_train_csv(root: Path | str, *, required: tuple[str, ...] = files.RSNA_REQUIRED) -> pd.DataFrame:
    """Read ``root/train.csv`` as strings (values are validated row by row, not coerced)."""
    csv = Path(root) / files.TRAIN_CSV
    if not csv.is_file():
        raise ManifestError(
            f"{csv} not found: data.root must be a directory in the RSNA layout ({files.TRAIN_CSV} + {files.IMAGE})"
        )
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{csv} is not a readable CSV: {exc}") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ManifestError(f"{csv} lacks column(s) {', '.join(missing)}; it has {', '.join(table.columns) or 'none'}")
    if table.empty:
        raise ManifestError(f"{csv} has a header but no rows: no image is listed")
    return table


# the manifest


def build(
    root: Path | str,
    *,
    split_fractions: dict[str, float],
    seed: int,
    n_shards: int,
    check_files: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Return (breasts, excluded, counts) for the RSNA-layout directory ``root``."""
    root = Path(root)
    fractions = check_fractions(split_fractions)
    if n_shards < 1:
        raise ManifestError(f"the number of shards must be >= 1, got {n_shards}")
    table = _normalised(read_train_csv(root))
    n_rows = len(table)
    excluded: list[dict] = []
    table = _valid_rows(table, excluded)
    if check_files:  # the CC and MLO images, which are decoded; other views are not read
        standard = table["view"].isin(USED_VIEWS).to_numpy()
        exists = np.array(  # a directory or a FIFO in a file's place is there: stage 1 says what it is, as lost
            [
                not used or not isinstance(dicom.file_problem(files.image_path(root, p, i)), dicom.MissingFileError)
                for p, i, used in zip(table["patient_id"], table["image_id"], standard, strict=True)
            ],
            dtype=bool,
        )
        _exclude(excluded, table[~exists], "missing_file", f"{files.IMAGE} does not exist")
        table = table[exists]

    breasts, breast_excluded, other_views = _pair_views(table)
    excluded.extend(breast_excluded)
    breasts = assign_splits(breasts, fractions, seed=seed)
    breasts["shard"] = sources.shard_of(breasts["patient_id"].to_numpy(np.int64), n_shards)
    excluded_frame = files.EXCLUDED_TABLE.frame(excluded)
    counts = _counts(breasts, excluded_frame, other_views, rows=n_rows, n_shards=n_shards)
    if counts["rows_accounted"] != n_rows:  # every row is used, excluded or an other view of a used breast
        raise RuntimeError(f"the manifest accounts for {counts['rows_accounted']} of {n_rows} rows of train.csv")
    log.info(
        "%d breasts of %d patients (%d positive); excluded: %s; other views not used: %s",
        counts["breasts"],
        counts["patients"],
        counts["positive_breasts"],
        counts["excluded_by_reason"] or "none",
        counts["other_views_not_used"] or "none",
    )
    return breasts[list(files.BREAST_TABLE.columns)], excluded_frame, counts


def _normalised(table: pd.DataFrame) -> pd.DataFrame:
    """Ids and codes stripped and upper-cased; the optional columns present."""
    for column in OPTIONAL_COLUMNS:
        if column not in table.columns:
            table[column] = ""
    return table.assign(
        patient_id=table["patient_id"].str.strip(),
        image_id=table["image_id"].str.strip(),
        laterality=table["laterality"].str.strip().str.upper(),
        view=table["view"].str.strip().str.upper(),
        cancer=table["cancer"].str.strip(),
    )


def _exclude(excluded: list[dict], rows: pd.DataFrame, reason: str, detail: str) -> None:
    for r in rows.itertuples(index=False):
        excluded.append(
            {
                "patient_id": r.patient_id,
                "laterality": r.laterality,
                "image_id": r.image_id,
                "view": r.view,
                "reason": reason,
                "detail": detail,
            }
        )


def _valid_rows(table: pd.DataFrame, excluded: list[dict]) -> pd.DataFrame:
    """The rows with integer ids, a unique image id, a known laterality and a 0/1 label; the rest excluded."""
    bad_id = ~(table["patient_id"].str.fullmatch(r"[0-9]+") & table["image_id"].str.fullmatch(r"[0-9]+"))
    checks = [
        (lambda t: bad_id.loc[t.index], "invalid_id", "patient_id and image_id must be non-negative integers"),
        (lambda t: t["image_id"].duplicated(keep=False), "duplicate_image_id", "image_id appears in more than one row"),
        (lambda t: ~t["laterality"].isin(["L", "R"]), "unknown_laterality", "laterality must be L or R"),
        (lambda t: ~t["cancer"].isin(["0", "1"]), "invalid_label", "cancer must be 0 or 1"),
    ]
    for bad, reason, detail in checks:
        mask = bad(table)
        _exclude(excluded, table[mask], reason, detail)
        table = table[~mask]
    return table


def _counts(
    breasts: pd.DataFrame, excluded: pd.DataFrame, other_views: pd.DataFrame, *, rows: int, n_shards: int
) -> dict:
    return {
        "rows": int(rows),
        "rows_accounted": int(2 * len(breasts) + len(excluded) + len(other_views)),
        "images_used": int(2 * len(breasts)),
        "breasts": int(len(breasts)),
        "patients": int(breasts["patient_id"].nunique()),
        "positive_breasts": int(breasts["label"].sum()),
        "other_views_not_used": {str(k): int(v) for k, v in other_views["view"].value_counts().sort_index().items()},
        "excluded_by_reason": {str(k): int(v) for k, v in excluded["reason"].value_counts().sort_index().items()},
        "breasts_by_split": {s: int((breasts["split"] == s).sum()) for s in SPLITS},
        "positive_by_split": {s: int(breasts.loc[breasts["split"] == s, "label"].sum()) for s in SPLITS},
        "breasts_by_shard": [int(v) for v in np.bincount(breasts["shard"], minlength=n_shards)],
    }


def _pair_views(table: pd.DataFrame) -> tuple[pd.DataFrame, list[dict], pd.DataFrame]:
    """One row per breast with both views (smallest image_id of each); an excluded row for every image of
    the breasts that cannot be used, and for every CC or MLO image not chosen; the other views of the
    breasts used."""
    table = table.assign(
        image_number=table["image_id"].astype(np.int64), patient_number=table["patient_id"].astype(np.int64)
    )
    table = table.sort_values(["patient_number", "laterality", "view", "image_number"])
    rows, excluded, other_views = [], [], []
    for (patient, laterality), images in table.groupby(["patient_number", "laterality"], sort=True):
        views = {v: images[images["view"] == v] for v in USED_VIEWS}
        missing = [v for v in USED_VIEWS if views[v].empty]
        reason = None
        if len(missing) == len(USED_VIEWS):
            reason, detail = "no_standard_view", f"the breast has no {' or '.join(USED_VIEWS)} image"
        elif missing:
            reason, detail = f"missing_{missing[0].lower()}", f"the breast has no usable {missing[0]} image"
        elif images["cancer"].nunique() > 1:
            reason, detail = "conflicting_labels", "the breast's images disagree on cancer"
        if reason:
            _exclude(excluded, images, reason, detail)
            continue
        cc, mlo = views["CC"].iloc[0], views["MLO"].iloc[0]
        for view, chosen in (("CC", cc), ("MLO", mlo)):
            _exclude(
                excluded, views[view].iloc[1:], "not_chosen", f"another {view} image ({chosen['image_id']}) is used"
            )
        other_views.append(images[~images["view"].isin(USED_VIEWS)])
        rows.append(
            {
                "breast_id": f"{patient}_{laterality}",
                "patient_id": int(patient),
                "laterality": laterality,
                "cc_image_id": int(cc["image_id"]),
                "mlo_image_id": int(mlo["image_id"]),
                "label": int(cc["cancer"]),
                "site_id": cc["site_id"],
                "machine_id": cc["machine_id"],
            }
        )
    columns = [c for c in files.BREAST_TABLE.columns if c not in ("split", "shard")]
    others = pd.concat(other_views) if other_views else table.iloc[:0]
    return pd.DataFrame(rows, columns=columns), excluded, others


def assign_splits(breasts: pd.DataFrame, fractions: dict[str, float], *, seed: int) -> pd.DataFrame:
    """Give each patient one split, stratified by whether any of the patient's breasts is positive."""
    patient_label = breasts.groupby("patient_id")["label"].max().sort_index()
    rng = np.random.default_rng(seed)
    split_of: dict[int, str] = {}
    for label in (0, 1):
        patients = patient_label.index[patient_label == label].to_numpy()
        patients = patients[rng.permutation(len(patients))]
        counts = _largest_remainder(len(patients), fractions)
        start = 0
        for split, n in counts.items():
            split_of.update((int(p), split) for p in patients[start : start + n])
            start += n
    return breasts.assign(split=breasts["patient_id"].map(split_of))


def _largest_remainder(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to ``n`` as close to ``n * fraction`` as possible (ties to the earlier split)."""
    exact = {s: n * f for s, f in fractions.items()}
    counts = {s: math.floor(v) for s, v in exact.items()}
    by_remainder = sorted(fractions, key=lambda s: (-(exact[s] - counts[s]), list(fractions).index(s)))
    for s in by_remainder[: n - sum(counts.values())]:
        counts[s] += 1
    return counts


def check_fractions(fractions: dict[str, float]) -> dict[str, float]:
    """The split fractions, in :data:`~mammoscale.files.SPLITS` order, once they name each split and sum to 1
    (to 1e-6); the plan refuses a config with the same rule before any job (:mod:`mammoscale.plan.study`)."""
    if set(fractions) != set(SPLITS):
        raise ManifestError(f"split fractions must name exactly {', '.join(SPLITS)}; got {', '.join(fractions)}")
    if any(f < 0 for f in fractions.values()) or not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-6):
        raise ManifestError(f"split fractions must be >= 0 and sum to 1; got {fractions}")
    return {s: float(fractions[s]) for s in SPLITS}


def main(
    root: Path | str,
    breasts_csv: Path | str,
    excluded_csv: Path | str,
    counts_json: Path | str,
    *,
    split_fractions: dict[str, float],
    seed: int,
    n_shards: int,
) -> dict:
    """Write breasts.csv, excluded.csv and the counts; the Snakemake rule ``manifest`` calls this."""
    breasts, excluded, counts = build(root, split_fractions=split_fractions, seed=seed, n_shards=n_shards)
    if breasts.empty:
        raise ManifestError(f"no usable breast in {root}: excluded by reason {counts['excluded_by_reason']}")
    files.BREAST_TABLE.write(breasts, breasts_csv)
    files.EXCLUDED_TABLE.write(excluded, excluded_csv)
    files.write_json(counts, counts_json)
    return counts
