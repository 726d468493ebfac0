"""Model quality compared: each pair of variants scored on the same validation breasts (``quality.csv``).

A scored cell (full mode, ``ok``) leaves its probability for every validation breast in
``predictions.csv``. Two variants at the same hardware, image size and patch size saw the same
breasts, so their difference is judged *paired*: patients are resampled, both models scored on
each resample (:func:`mammoscale.stats.paired`). A difference whose interval holds 0 is
``indistinguishable``, and the report never calls either of the two the better one.

A ``predictions.csv`` that disagrees with its record (other breasts, another AUC) is not used: the
row says why, and how to rerun the cell.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from mammoscale import files, records, stats
from mammoscale.report.html import interval

log = logging.getLogger(__name__)

INDISTINGUISHABLE = "indistinguishable"
NOT_COMPARED = "not compared"
BREAST = ["patient_id", "laterality"]
PLACE = ["hardware", "image_size", "patch_size"]


def better(variant: str) -> str:
    """The verdict of a pair whose interval leaves 0 out, ``variant`` ahead."""
    return f"{variant} better"


def scored(runs: pd.DataFrame) -> pd.DataFrame:
    """The cells that ran to ``ok`` with a validation AUC."""
    if "val_auc" not in runs:
        return runs.iloc[0:0]
    return runs[(runs["status"] == records.OK) & runs["val_auc"].notna()]


def predictions(row) -> tuple[pd.DataFrame | None, str | None]:
    """A scored cell's ``predictions.csv``, or None and why it cannot be used."""
    path = Path(row["run_dir"]) / files.PREDICTIONS
    rerun = f"rerun the cell: {records.rerun_cell(row['run_dir'])}"
    if not path.is_file():
        return None, f"{path} is missing; {rerun}"
    try:
        frame = files.PREDICTION_TABLE.read(path)
    except (ValueError, KeyError) as exc:
        return None, f"{path} cannot be read ({exc}); {rerun}"
    auc = stats.roc_auc(frame["label"], frame["probability"])
    if (
        len(frame) != _int(row.get("val_breasts"), len(frame))
        or auc is None
        or not math.isclose(auc, float(row["val_auc"]), abs_tol=1e-6)
    ):
        return None, f"{path} is not what the cell scored ({len(frame)} breasts, AUC {auc}); {rerun}"
    return frame, None


def _int(value, default: int) -> int:
    return default if value is None or pd.isna(value) else int(value)


def comparisons(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per pair of scored variants at the same place and per metric (AUC, pF1)."""
    rows = []
    cells = scored(runs)
    read = {index: predictions(row) for index, row in cells.iterrows()}  # each file once, however many pairs
    for place, group in cells.groupby(PLACE, sort=False):
        for (i, first), (j, second) in itertools.combinations(group.iterrows(), 2):
            rows += _pair(dict(zip(PLACE, place)), first, second, [read[i], read[j]])
    return files.QUALITY_TABLE.frame(rows)


def _pair(place: dict, first, second, loaded: list) -> list[dict]:
    """One pair's rows; ``loaded``: each cell's predictions and why they cannot be used (:func:`predictions`)."""
    names = {"variant_a": first["variant"], "variant_b": second["variant"]}
    problem = "; ".join(reason for _, reason in loaded if reason)
    if not problem:
        (a, _), (b, _) = loaded
        both = a.merge(b, on=BREAST, suffixes=("_a", "_b"))
        if len(both) != len(a) or len(both) != len(b) or (both["label_a"] != both["label_b"]).any():
            problem = f"not the same validation breasts ({len(a)} and {len(b)}, {len(both)} shared)"
    if problem:
        log.warning("%s vs %s at %s: %s", *names.values(), place, problem)
        return [
            {**place, **names, "metric": metric, "breasts": None, "verdict": NOT_COMPARED, "detail": problem}
            for metric in stats.METRICS
        ]
    rows = []
    for metric in stats.METRICS:
        result = stats.paired(metric, both["patient_id"], both["label_a"], both["probability_a"], both["probability_b"])
        rows.append(
            {
                **place,
                **names,
                "metric": metric,
                "a": result.a,
                "b": result.b,
                "difference": result.difference,
                "ci_low": result.ci_low,
                "ci_high": result.ci_high,
                "p_value": result.p_value,
                "breasts": result.breasts,
                "positive_breasts": int(both["label_a"].sum()),
                "verdict": _verdict(result, names),
                "detail": f"paired bootstrap over {both['patient_id'].nunique()} patients, {stats.RESAMPLES} resamples",
            }
        )
    return rows


def _verdict(result: stats.Comparison, names: dict) -> str:
    if result.distinguishable is None:
        return NOT_COMPARED
    if not result.distinguishable:
        return INDISTINGUISHABLE
    return better(names["variant_a"] if result.ci_low > 0 else names["variant_b"])  # the interval's side, not the point


def seed_summary(record: dict, directory: Path, seeds: int) -> dict:
    """A quality cell's AUC and pF1 over its ``seeds`` (``train.seeds``: the cell's own seed, then the next ones,
    each a record in ``seeds/<seed>/``): the values of those that scored, their mean and standard deviation."""
    if seeds <= 1 or record.get("mode") != "full" or record.get("status") != records.OK:
        return {}
    base = int(record["config"]["seed"])
    found = [record] + [
        records.read_cell_record(directory / files.fill(files.SEED_DIR, seed=base + k)) for k in range(1, seeds)
    ]
    done = [r for r in found if r and r.get("status") == records.OK]
    summary = {"seeds_scored": len(done)}
    for metric in ("val_auc", "val_pf1"):
        values = [float(r[metric]) for r in done if r.get(metric) is not None]
        summary[f"{metric}_seeds"] = json.dumps(values)
        summary[f"{metric}_seeds_mean"] = float(np.mean(values)) if values else None
        summary[f"{metric}_seeds_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return summary


def _over_seeds(row) -> str:
    """``; over 3 seeds: mean 0.712, sd 0.021`` for a cell trained with several seeds, else nothing."""
    scored = row.get("seeds_scored")
    if scored is None or pd.isna(scored) or int(scored) < 2:
        return ""
    return (
        f"; over {int(scored)} seeds: mean {float(row['val_auc_seeds_mean']):.3f}, "
        f"sd {float(row['val_auc_seeds_sd']):.3f}"
    )


def sentences(runs: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """The report's lines on model quality: each scored cell's AUC with its interval, then each paired comparison;
    a cell is called best only when it is told apart from every other scored at its place."""
    cells = scored(runs)
    lines = []
    for _, row in cells.iterrows():
        breasts = "" if pd.isna(row.get("val_breasts")) else f" on {int(row['val_breasts'])} breasts"
        positive = "" if pd.isna(row.get("val_positive_breasts")) else f" ({int(row['val_positive_breasts'])} positive)"
        name = files.cell_name(row["hardware"], row["variant"], row["image_size"], row["patch_size"])
        lines.append(
            f"Validation AUC of {name}: "
            f"{float(row['val_auc']):.3f} {interval(row.get('val_auc_ci_low'), row.get('val_auc_ci_high'), '.3f')}"
            f"{breasts}{positive}, {stats.CONFIDENCE:.0%} interval over patients{_over_seeds(row)}."
        )
    auc = table[table["metric"] == "auc"] if not table.empty else table
    for _, row in auc.iterrows():
        where = f"{row['hardware']}, {files.cell_label(row['image_size'], row['patch_size'])}"
        if row["verdict"] == NOT_COMPARED:
            lines.append(f"{row['variant_a']} vs {row['variant_b']} ({where}): not compared: {row['detail']}.")
            continue
        lines.append(
            f"{row['variant_a']} vs {row['variant_b']} ({where}): AUC difference {row['difference']:+.3f} "
            f"{interval(row['ci_low'], row['ci_high'], '.3f')}, p = {row['p_value']:.2f} "
            "(paired bootstrap over patients): "
            f"{row['verdict']}."
        )
    for _, group in auc.groupby(PLACE, sort=False):
        winners = {
            row["verdict"].removesuffix(" better") for _, row in group.iterrows() if row["verdict"].endswith(" better")
        }
        variants = set(group["variant_a"]) | set(group["variant_b"])
        for winner in winners:
            if all(_beats(group, winner, other) for other in variants - {winner}):
                lines.append(
                    f"Best validation AUC at {group['hardware'].iloc[0]}, "
                    f"{files.cell_label(group['image_size'].iloc[0], group['patch_size'].iloc[0])}: {winner}, "
                    "told apart from every other variant."
                )
    return lines


def _beats(group: pd.DataFrame, winner: str, other: str) -> bool:
    pair = group[
        ((group["variant_a"] == winner) & (group["variant_b"] == other))
        | ((group["variant_a"] == other) & (group["variant_b"] == winner))
    ]
    return not pair.empty and pair["verdict"].iloc[0] == better(winner)
