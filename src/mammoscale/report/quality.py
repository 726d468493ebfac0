"""Model quality compared: each pair of variants scored on the same validation breasts (``quality.csv``).

A scored cell (full mode, ``ok``) leaves its probability for every validation breast in
``predictions.csv``. Two variants at the same hardware, image size and patch size saw the same
breasts (a CNN, without a patch size, the same as every vision transformer at its image size: it is compared
with each), so their difference is judged *paired*: patients are resampled, both models scored on
each resample (:func:`mammoscale.stats.paired`). A difference whose interval holds 0 is
``indistinguishable``, and the report never calls either of the two the better one.

A cell of several labels (``chest-findings``) leaves a probability per validation image and finding; two
such cells are compared on their mean AUROC over the findings (:func:`mammoscale.stats.paired_labels`), its
``breasts`` columns then counting images.

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

from mammoscale import files, records, stats, tasks
from mammoscale.report.html import interval

log = logging.getLogger(__name__)

INDISTINGUISHABLE = "indistinguishable"
NOT_COMPARED = "not compared"
BREAST = ["patient_id", "laterality"]
IMAGE_FINDING = ["patient_id", "image_id", "finding"]
PLACE = ["hardware", "image_size", "patch_size"]


def better(variant: str) -> str:
    """The verdict of a pair whose interval leaves 0 out, ``variant`` ahead."""
    return f"{variant} better"


def scored(runs: pd.DataFrame) -> pd.DataFrame:
    """The cells that ran to ``ok`` with a validation AUC."""
    if "val_auc" not in runs:
        return runs.iloc[0:0]
    return runs[(runs["status"] == records.OK) & runs["val_auc"].notna()]


def task_of(row) -> tasks.Task:
    """A row of runs.csv's task: its record's ``config.task`` (a record from before tasks: ``breast-cancer``)."""
    name = row.get("config.task")
    return tasks.task(name if isinstance(name, str) and name else tasks.BREAST_CANCER.name)


def predictions(row) -> tuple[pd.DataFrame | None, str | None]:
    """A scored cell's ``predictions.csv``, or None and why it cannot be used."""
    path = Path(row["run_dir"]) / files.PREDICTIONS
    rerun = f"rerun the cell: {records.rerun_cell(row['run_dir'])}"
    if not path.is_file():
        return None, f"{path} is missing; {rerun}"
    task = task_of(row)
    try:
        frame = files.prediction_table(task.multilabel).read(path)
        count, auc = _scored(task, frame)
    except (ValueError, KeyError) as exc:
        return None, f"{path} cannot be read ({exc}); {rerun}"
    if (
        count != _int(row.get("val_images" if task.multilabel else "val_breasts"), count)
        or auc is None
        or not math.isclose(auc, float(row["val_auc"]), abs_tol=1e-6)
    ):
        return None, f"{path} is not what the cell scored ({count} {task.unit}s, AUC {auc}); {rerun}"
    return frame, None


def _scored(task: tasks.Task, frame: pd.DataFrame) -> tuple[int, float | None]:
    """What a cell's predictions score: breasts or images, and the AUC (the mean over findings with both classes)."""
    if not task.multilabel:
        return len(frame), stats.roc_auc(frame["label"], frame["probability"])
    images, labels, probabilities = files.finding_matrices(frame, task.labels)
    aucs = [stats.roc_auc(labels[:, k], probabilities[:, k]) for k in range(labels.shape[1])]
    aucs = [auc for auc in aucs if auc is not None]
    return len(images), float(np.mean(aucs)) if aucs else None


def _int(value, default: int) -> int:
    return default if value is None or pd.isna(value) else int(value)


def comparisons(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per pair of scored variants at the same place and per metric (AUC, pF1)."""
    rows = []
    cells = scored(runs)
    read = {index: predictions(row) for index, row in cells.iterrows()}  # each file once, however many pairs
    for place, first, second in pairs(cells):
        rows += _pair(place, first, second, [read[first.name], read[second.name]])
    table = files.QUALITY_TABLE.frame(rows)
    return table.assign(patch_size=table["patch_size"].astype("Int64"))  # empty for two CNNs, not 16.0 for the rest


def pairs(cells: pd.DataFrame):
    """Each pair of scored cells that saw the same validation set, with its place: the same hardware and image size,
    and the same patch size where both have one. A cell without a patch size (a CNN's) is paired with each vision
    transformer at its image size (the place: the transformer's) and with the other CNNs there (no patch size)."""
    for (hardware, size), at in cells.groupby(["hardware", "image_size"], sort=False):
        for (_, first), (_, second) in itertools.combinations(at.iterrows(), 2):
            patches = {int(p) for p in (first["patch_size"], second["patch_size"]) if not files.no_patch(p)}
            if len(patches) < 2:
                place = {"hardware": hardware, "image_size": size, "patch_size": min(patches, default=None)}
                yield place, first, second


def _pair(place: dict, first, second, loaded: list) -> list[dict]:
    """One pair's rows; ``loaded``: each cell's predictions and why they cannot be used (:func:`predictions`)."""
    names = {"variant_a": first["variant"], "variant_b": second["variant"]}
    task = task_of(first)
    problem = "; ".join(reason for _, reason in loaded if reason)
    if not problem:
        (a, _), (b, _) = loaded
        both = a.merge(b, on=IMAGE_FINDING if task.multilabel else BREAST, suffixes=("_a", "_b"))
        if len(both) != len(a) or len(both) != len(b) or (both["label_a"] != both["label_b"]).any():
            n = len(task.labels)  # rows per breast or image
            problem = f"not the same validation {task.unit}s ({len(a) // n} and {len(b) // n}, {len(both) // n} shared)"
    if problem:
        log.warning("%s vs %s at %s: %s", *names.values(), place, problem)
        return [
            {**place, **names, "metric": metric, "breasts": None, "verdict": NOT_COMPARED, "detail": problem}
            for metric in (("auc",) if task.multilabel else stats.METRICS)
        ]
    rows = []
    results, positives = _paired(task, both)
    for result in results:
        rows.append(
            {
                **place,
                **names,
                "metric": result.metric,
                "a": result.a,
                "b": result.b,
                "difference": result.difference,
                "ci_low": result.ci_low,
                "ci_high": result.ci_high,
                "p_value": result.p_value,
                "breasts": result.breasts,
                "positive_breasts": positives,
                "verdict": _verdict(result, names),
                "detail": f"paired bootstrap over {both['patient_id'].nunique()} patients, {stats.RESAMPLES} resamples",
            }
        )
    return rows


def _paired(task: tasks.Task, both: pd.DataFrame) -> tuple[list[stats.Comparison], int]:
    """Two cells' predictions merged (``_a``, ``_b``) compared, per metric; and the positive breasts (images with a
    finding) they share."""
    if not task.multilabel:
        args = (both["patient_id"], both["label_a"], both["probability_a"], both["probability_b"])
        return [stats.paired(metric, *args) for metric in stats.METRICS], int(both["label_a"].sum())
    both = both.rename(columns={"label_a": "label"})
    images, labels, a = files.finding_matrices(both.rename(columns={"probability_a": "probability"}), task.labels)
    _, _, b = files.finding_matrices(both.rename(columns={"probability_b": "probability"}), task.labels)
    return [stats.paired_labels(images["patient_id"], labels, a, b)], int(labels.any(axis=1).sum())


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
        task = task_of(row)
        count, positive = (
            ("val_images", "val_positive_images") if task.multilabel else ("val_breasts", "val_positive_breasts")
        )
        breasts = "" if pd.isna(row.get(count)) else f" on {int(row[count])} {task.unit}s"
        positive = "" if pd.isna(row.get(positive)) else f" ({int(row[positive])} positive)"
        name = files.cell_name(row["hardware"], row["variant"], row["image_size"], row["patch_size"])
        lines.append(
            f"Validation {'mean AUROC over findings' if task.multilabel else 'AUC'} of {name}: "
            f"{float(row['val_auc']):.3f} {interval(row.get('val_auc_ci_low'), row.get('val_auc_ci_high'), '.3f')}"
            f"{breasts}{positive}, {stats.CONFIDENCE:.0%} interval over patients{_over_seeds(row)}."
        )
    auc = table[table["metric"] == "auc"] if not table.empty else table
    patchless = set(runs.loc[runs["patch_size"].isna(), "variant"]) if "patch_size" in runs else set()
    for _, row in auc.iterrows():
        where = _where(row, patchless)
        if row["verdict"] == NOT_COMPARED:
            lines.append(f"{row['variant_a']} vs {row['variant_b']} ({where}): not compared: {row['detail']}.")
            continue
        lines.append(
            f"{row['variant_a']} vs {row['variant_b']} ({where}): AUC difference {row['difference']:+.3f} "
            f"{interval(row['ci_low'], row['ci_high'], '.3f')}, p = {row['p_value']:.2f} "
            "(paired bootstrap over patients): "
            f"{row['verdict']}."
        )
    for _, group in auc.groupby(PLACE, sort=False, dropna=False):
        winners = {
            row["verdict"].removesuffix(" better") for _, row in group.iterrows() if row["verdict"].endswith(" better")
        }
        variants = set(group["variant_a"]) | set(group["variant_b"])
        for winner in winners:
            if all(_beats(group, winner, other) for other in variants - {winner}):
                lines.append(
                    f"Best validation AUC at {_place(group.iloc[0], patchless, variants)}: {winner}, "
                    "told apart from every other variant."
                )
    return lines


def _where(row, patchless: set) -> str:
    """What a pair compared: ``local-cpu, img384_p32``; where one side has no patch size (a CNN), each side's cell
    (``local-cpu, img384_p32 vs img384, ...``)."""
    sides = [
        files.cell_label(row["image_size"], None if variant in patchless else row["patch_size"])
        for variant in (row["variant_a"], row["variant_b"])
    ]
    if sides[0] == sides[1]:
        return f"{row['hardware']}, {sides[0]}"
    return f"{row['hardware']}, {sides[0]} vs {sides[1]}, the same validation set at the same image size"


def _place(row, patchless: set, variants: set) -> str:
    """A place of comparisons: ``local-cpu, img384_p32``, or ``local-cpu, img384 (patch 32 for the vision
    transformers)`` where a CNN is compared there too."""
    if files.no_patch(row["patch_size"]) or not variants & patchless:
        return f"{row['hardware']}, {files.cell_label(row['image_size'], row['patch_size'])}"
    patch = int(row["patch_size"])
    return f"{row['hardware']}, {files.size_label(row['image_size'])} (patch {patch} for the vision transformers)"


def _beats(group: pd.DataFrame, winner: str, other: str) -> bool:
    pair = group[
        ((group["variant_a"] == winner) & (group["variant_b"] == other))
        | ((group["variant_a"] == other) & (group["variant_b"] == winner))
    ]
    return not pair.empty and pair["verdict"].iloc[0] == better(winner)
