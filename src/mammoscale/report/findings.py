"""Each finding's AUROC beside CheXNet's: the per-finding table (``findings.csv``) and its section of the report.

A scored cell of a task of several labels (``chest-findings``) records each finding's AUROC on the validation
images with its bootstrap interval over patients (``val_auc_per_label``, :mod:`mammoscale.train.scores`). The table
puts every such cell's values beside the AUROCs CheXNet published (Rajpurkar et al. 2017, arXiv:1711.05225v3,
Table 2; the packaged :data:`PUBLISHED`) and says whether the published value lies inside the cell's interval. A
``mean`` row per cell holds ``val_auc`` (the mean over the findings it could score) beside CheXNet's mean over the
same findings.

A reference, not a test: CheXNet was scored on its own test images, these cells on this study's validation split
(for synthetic data, other pictures altogether); nothing here calls either one better. Torch-free.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from mammoscale import files, records, stats
from mammoscale.report import quality
from mammoscale.report.html import esc, interval, table

PUBLISHED = "data/chexnet_auroc.csv"
"""CheXNet's table of per-finding test AUROCs (with Wang et al.'s and Yao et al.'s, as it quotes them), in the
package; its ``#`` lines name the source."""
MEAN = "mean"
"""The ``finding`` of a cell's row of its mean AUROC."""
PLACE = ["hardware", "variant", "image_size", "patch_size"]


def published() -> pd.DataFrame:
    """The published AUROCs by finding: columns ``chexnet``, ``wang2017``, ``yao2017``."""
    with resources.files("mammoscale").joinpath(PUBLISHED).open() as handle:
        return pd.read_csv(handle, comment="#").set_index("finding")


def inside(value, low, high) -> bool | None:
    """Whether ``value`` lies within ``[low, high]``; None where either is missing."""
    if any(v is None or pd.isna(v) for v in (value, low, high)):
        return None
    return bool(float(low) <= float(value) <= float(high))


def findings_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finding, and a :data:`MEAN` row, of each scored cell (runs.csv's ``ok`` rows with a validation
    AUC) whose record holds per-label AUROCs: :data:`mammoscale.files.FINDINGS_TABLE`."""
    chexnet = published()["chexnet"]
    rows = []
    for _, row in quality.scored(runs).iterrows():
        record = records.read_cell_record(row["run_dir"]) or {}
        per_label = record.get("val_auc_per_label")
        if not per_label:
            continue
        place = {key: row[key] for key in PLACE} | {"images": record.get("val_images")}
        for finding, entry in per_label.items():
            reference = chexnet.get(finding)
            rows.append(
                {"finding": finding, **place, **entry, "chexnet_auc": reference}
                | {"chexnet_inside": inside(reference, entry["ci_low"], entry["ci_high"])}
            )
        scored = [finding for finding, entry in per_label.items() if entry["auc"] is not None and finding in chexnet]
        reference = float(chexnet[scored].mean()) if scored else None
        low, high = record.get("val_auc_ci_low"), record.get("val_auc_ci_high")
        rows.append(
            {"finding": MEAN, **place, "auc": record.get("val_auc"), "ci_low": low, "ci_high": high}
            | {"positives": record.get("val_positive_images"), "chexnet_auc": reference}
            | {"chexnet_inside": inside(reference, low, high)}
        )
    return files.FINDINGS_TABLE.frame(rows).astype(dict(files.FINDINGS_TABLE.dtypes))


def _side(value, low, high) -> str:
    """Where a published value lies against an interval: inside, above or below it; nothing without one."""
    if inside(value, low, high) is None:
        return ""
    return "inside" if inside(value, low, high) else "above" if float(value) > float(high) else "below"


def _cell(row) -> str:
    """A cell's entry of the section's table: its AUROC, its interval, and where CheXNet's value lies."""
    if pd.isna(row["auc"]):
        return "one class only: not scored"
    side = _side(row["chexnet_auc"], row["ci_low"], row["ci_high"])
    return f"{row['auc']:.3f} {interval(row['ci_low'], row['ci_high'], '.3f')}" + (f"; CheXNet {side}" if side else "")


def findings_section(findings: pd.DataFrame) -> str:
    """The report's section on the findings, from :func:`findings_table`'s frame (or ``findings.csv`` read back):
    a row per finding, a column per scored cell (its AUROC, interval, and whether CheXNet's value lies inside,
    above or below it), CheXNet's published AUROC; the findings each cell left out of its mean. Empty without a
    cell of several labels."""
    if findings.empty:
        return ""
    findings = findings.assign(
        cell=[files.cell_name(*(row[key] for key in PLACE)) for _, row in findings.iterrows()],
        entry=[_cell(row) for _, row in findings.iterrows()],
    )
    order = list(dict.fromkeys([*published().index, *findings["finding"]]))
    order = [name for name in order if name != MEAN] + [MEAN]
    wide = findings.pivot(index="finding", columns="cell", values="entry").reindex(order).dropna(how="all")
    positives = findings.groupby("finding")["positives"].agg(lambda p: "/".join(map(str, sorted(set(p.dropna())))))
    reference = findings.groupby("finding")["chexnet_auc"].first()
    wide = wide.assign(positives=positives, chexnet=reference.map(lambda v: "" if pd.isna(v) else f"{v:.4f}"))
    wide = wide.reset_index()
    cells = list(dict.fromkeys(findings["cell"]))
    columns = {"finding": "finding", "positives": "positive images", **{c: c for c in cells}}
    columns["chexnet"] = "CheXNet (published)"
    left = [
        f"{cell}: {', '.join(group.loc[group['auc'].isna(), 'finding'])}"
        for cell, group in findings.groupby("cell", sort=False)
        if group["auc"].isna().any()
    ]
    return (
        f"<p>Each finding's AUROC on the validation images, with its {stats.CONFIDENCE:.0%} interval over patients "
        "(one set of patient resamples for every finding), beside the test AUROC CheXNet published (Rajpurkar et "
        "al. 2017, arXiv:1711.05225, Table 2). The mean row averages the findings a cell could score; CheXNet's "
        "mean there is over the same findings. CheXNet was scored on its own test images, these cells on this "
        "study's validation split: a reference, not a comparison of the two.</p>"
        + table(wide, columns)
        + (f"<p>Left out of the mean (one class only in validation): {esc('; '.join(left))}.</p>" if left else "")
    )
