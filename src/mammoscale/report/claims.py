"""The published claims as data, and a plain verdict for each against this run.

The claims are those of the Flash Attention study (``paper.md``, section 1; its Figures 2 and 4):
flash speed-up ranges per patch size, the memory ratio at 384 px / patch 16, which cells fit in
80 GB for each variant (as measured, and as the memory model predicts before anything runs), and the
hardware ordering of Figure 2. Each is judged on the reference
hardware's cells and only on the cells the claim is about (the study's image sizes), so a grid
of other sizes says ``not run`` rather than a verdict about something else. A variant without attention (a
CNN) is in no claim: its cells change no verdict, and a reference cell of its says ``not run``.

A verdict is one of ``reproduced``, ``not reproduced``, ``inconclusive`` or ``not run``. A measured
number is judged with its uncertainty (:mod:`mammoscale.stats`): a speed-up is reproduced when its
bootstrap interval lies within the published range, not reproduced when it lies wholly outside,
and inconclusive when it straddles an edge or too few timing windows gave no interval. The row
also says what was measured, with its intervals, and over how many cells, so a reader can weigh a
verdict resting on two cells.
"""

from __future__ import annotations

import pandas as pd

from mammoscale import stats
from mammoscale.files import cell_label, size_label
from mammoscale.plan.families import NO_ATTENTION
from mammoscale.plan.memory import GiB
from mammoscale.records import OK, OOM, PREDICTED
from mammoscale.report.html import interval
from mammoscale.report.tables import flags

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN = "reproduced", "not reproduced", "inconclusive", "not run"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN)
COLUMNS = ("claim", "published", "measured", "verdict", "detail")
"""The claims table's columns (:func:`evaluate`)."""
PAPER_IMAGE_SIZES = (384, 512, 1024, 2048)
PAPER_PATCH_SIZES = (8, 16, 32)
# flash / baseline throughput on 8x A100 80GB; patch 32 is "0-2.3x": no gain at the two smallest sizes
SPEEDUP_RANGES = {8: (3.0, 4.2), 16: (2.8, 4.0), 32: (1.0, 2.3)}
MEMORY_CELL, MEMORY_RATIO = (384, 16), 2.3
BASELINE_OOM = {(2048, 16), (2048, 8)}  # the baseline ran at 2048 with patch 32 only; flash ran every cell
HARDWARE_ORDER = ("xe8545", "r750xa", "xe9680")  # Figure 2: runtime falls in this order (512 px, patch 16)
REFERENCE_CELL = (512, 16)


def _range(values) -> str:
    low, high = min(values), max(values)
    return f"{low:.2f}x" if low == high else f"{low:.2f}-{high:.2f}x"


def _cells(frame: pd.DataFrame) -> str:
    return ", ".join(cell_label(s, p) for s, p in zip(frame["image_size"], frame["patch_size"])) or "none"


def _too_few(measured: pd.DataFrame) -> str:
    """Why a speed-up has no interval: too few windows, or a record from before windows were timed."""
    counts = measured.reindex(columns=["windows_flash", "windows_baseline"]).astype(float).min(axis=1)
    if (counts.fillna(0) == 0).any():
        return "a record without timing windows (written before they were timed): rerun its cells"
    return f"too few timing windows for an interval ({int(counts.min())}, at least {stats.MIN_WINDOWS})"


def _judge_ratios(measured: pd.DataFrame, lowest: float, highest: float, tolerance: float) -> dict:
    """Each image size's speed-up with its bootstrap interval against the published range (+- tolerance): every
    interval inside is ``reproduced``, one wholly outside ``not reproduced``, otherwise (an interval across an
    edge, or too few windows for one) ``inconclusive``."""
    ratios = measured["throughput_ratio"].astype(float)
    lows, highs = measured["throughput_ratio_ci_low"].astype(float), measured["throughput_ratio_ci_high"].astype(float)
    outside = (highs < lowest) | (lows > highest)
    inside = (lows >= lowest) & (highs <= highest)
    each = "; ".join(
        f"{cell_label(s, p)} {r:.2f}x {interval(lo, hi)}"
        for s, p, r, lo, hi in zip(measured["image_size"], measured["patch_size"], ratios, lows, highs)
    )
    if outside.any():
        verdict, why = NOT_REPRODUCED, f"an interval wholly outside the published range +-{tolerance:.0%}"
    elif inside.all():
        verdict, why = REPRODUCED, f"every interval within the published range +-{tolerance:.0%}"
    elif lows.isna().any():
        verdict, why = INCONCLUSIVE, _too_few(measured)
    else:
        verdict, why = INCONCLUSIVE, f"an interval across an edge of the published range +-{tolerance:.0%}"
    unstable = measured[flags(measured["unstable"])] if "unstable" in measured else []
    shaky = f"; unstable timing at {_cells(unstable)}" if len(unstable) else ""
    return {
        "measured": _range(ratios),
        "verdict": verdict,
        "detail": f"{len(measured)} of {len(PAPER_IMAGE_SIZES)} image sizes: {each} "
        f"({stats.CONFIDENCE:.0%} bootstrap intervals over timing windows); {why}{shaky}",
    }


def speedup_claims(pairs: pd.DataFrame, *, hardware: str, flash: str, baseline: str, tolerance: float) -> list[dict]:
    chosen = pairs[
        (pairs["hardware"] == hardware)
        & (pairs["flash_variant"] == flash)
        & (pairs["baseline_variant"] == baseline)
        & pairs["image_size"].isin(PAPER_IMAGE_SIZES)
    ]
    rows = []
    for patch, (low, high) in SPEEDUP_RANGES.items():
        at = chosen[chosen["patch_size"] == patch]
        measured = at.dropna(subset=["throughput_ratio"])
        row = {
            "claim": f"flash speed-up over the baseline, patch {patch}",
            "published": f"{low:.1f}-{high:.1f}x" + (" (no gain at 384 and 512)" if patch == 32 else ""),
        }
        if measured.empty:
            statuses = (
                ", ".join(
                    f"{size_label(s)}: {a}/{b}"
                    for s, a, b in zip(at["image_size"], at["flash_status"], at["baseline_status"])
                )
                or "no such cell"
            )
            rows.append(
                {
                    **row,
                    "measured": "-",
                    "verdict": NOT_RUN,
                    "detail": f"no image size of the study with both variants ok (flash/baseline: {statuses})",
                }
            )
            continue
        rows.append({**row, **_judge_ratios(measured, low * (1 - tolerance), high * (1 + tolerance), tolerance)})
    return rows


def memory_claim(pairs: pd.DataFrame, *, hardware: str, flash: str, baseline: str, tolerance: float) -> dict:
    size, patch = MEMORY_CELL
    at = pairs[
        (pairs["hardware"] == hardware)
        & (pairs["flash_variant"] == flash)
        & (pairs["baseline_variant"] == baseline)
        & (pairs["image_size"] == size)
        & (pairs["patch_size"] == patch)
    ]
    row = {"claim": f"peak memory, baseline / flash, {cell_label(size, patch)}", "published": f"{MEMORY_RATIO:.1f}x"}
    if at.empty or pd.isna(at["memory_ratio"].iloc[0]):
        state = (
            "not in the grid"
            if at.empty
            else f"flash {at['flash_status'].iloc[0]}, baseline {at['baseline_status'].iloc[0]}"
        )
        return {**row, "measured": "-", "verdict": NOT_RUN, "detail": f"{cell_label(size, patch)}: {state}"}
    ratio = float(at["memory_ratio"].iloc[0])
    close = abs(ratio / MEMORY_RATIO - 1) <= tolerance
    return {
        **row,
        "measured": f"{ratio:.2f}x",
        "verdict": REPRODUCED if close else NOT_REPRODUCED,
        "detail": f"{'within' if close else 'outside'} +-{tolerance:.0%} of {MEMORY_RATIO}x",
    }


PUBLISHED_FITS = {
    "flash": "every cell fits (2048 with patch 8, 16, 32)",
    "baseline": f"all but {' and '.join(cell_label(s, p) for s, p in sorted(BASELINE_OOM))} (OOM)",
}


def _study_cells(frame: pd.DataFrame, hardware: str, variant: str) -> pd.DataFrame:
    """The rows of ``frame`` (runs.csv or plan.csv) at the study's image and patch sizes for one variant."""
    return frame[
        (frame["hardware"] == hardware)
        & (frame["variant"] == variant)
        & frame["image_size"].isin(PAPER_IMAGE_SIZES)
        & frame["patch_size"].isin(PAPER_PATCH_SIZES)
    ]


def fit_claims(runs: pd.DataFrame, *, hardware: str, flash: str, baseline: str) -> list[dict]:
    rows = []
    for name, label in ((flash, "flash"), (baseline, "baseline")):
        published = PUBLISHED_FITS[label]
        cells = _study_cells(runs, hardware, name)
        cells = cells[cells["status"].isin([OK, OOM]) & (cells["oom_basis"] != PREDICTED)]
        row = {"claim": f"which cells fit in memory, {label} ({name})", "published": published}
        if cells.empty:
            rows.append(
                {**row, "measured": "-", "verdict": NOT_RUN, "detail": "no cell of the study's sizes ran to ok or OOM"}
            )
            continue
        published_oom = [
            label == "baseline" and (s, p) in BASELINE_OOM for s, p in zip(cells["image_size"], cells["patch_size"])
        ]
        wrong = cells[(cells["status"] == OOM) != published_oom]
        fits = int((cells["status"] == OK).sum())
        measured = f"{fits} of {len(cells)} fit"
        total = len(PAPER_IMAGE_SIZES) * len(PAPER_PATCH_SIZES)
        if wrong.empty:
            rows.append(
                {
                    **row,
                    "measured": measured,
                    "verdict": REPRODUCED,
                    "detail": f"{len(cells)} of {total} cells of the study ran; each as published",
                }
            )
        else:
            rows.append(
                {
                    **row,
                    "measured": measured,
                    "verdict": NOT_REPRODUCED,
                    "detail": "differs at "
                    + ", ".join(
                        f"{cell_label(s, p)} ({status})"
                        for s, p, status in zip(wrong["image_size"], wrong["patch_size"], wrong["status"])
                    ),
                }
            )
    return rows


def predicted_fit_claims(plan: pd.DataFrame, *, hardware: str, flash: str, baseline: str) -> list[dict]:
    """The memory model's answer to the same question, before anything runs: which of the study's cells fit
    (``plan.csv``). A disagreement with the paper is a finding, stated with the predicted bytes."""
    rows = []
    for name, label in ((flash, "flash"), (baseline, "baseline")):
        published = PUBLISHED_FITS[label]
        cells = _study_cells(plan, hardware, name)
        row = {"claim": f"which cells fit in memory, {label} ({name}), predicted", "published": published}
        if cells.empty or cells["memory_limit_bytes"].isna().all():
            detail = "no cell of the study's sizes planned" if cells.empty else f"{hardware} has no device_memory_gib"
            rows.append({**row, "measured": "-", "verdict": NOT_RUN, "detail": detail})
            continue
        published_oom = [
            label == "baseline" and (s, p) in BASELINE_OOM for s, p in zip(cells["image_size"], cells["patch_size"])
        ]
        wrong = cells[(~cells["fits"].astype(bool)) != published_oom]
        measured = f"{int(cells['fits'].astype(bool).sum())} of {len(cells)} fit"
        if wrong.empty:
            rows.append(
                {**row, "measured": measured, "verdict": REPRODUCED, "detail": f"{len(cells)} cells; each as published"}
            )
            continue
        rows.append(
            {
                **row,
                "measured": measured,
                "verdict": NOT_REPRODUCED,
                "detail": "; ".join(_predicted(cell, cells) for cell in wrong.itertuples()),
            }
        )
    return rows


def _predicted(cell, cells: pd.DataFrame) -> str:
    """One cell's prediction against the paper, with its numbers, and the cells of as many tokens."""
    peak, limit = cell.predicted_peak_bytes / GiB, cell.memory_limit_bytes / GiB
    where = f"{cell_label(cell.image_size, cell.patch_size)} ({cell.seq_len:,} tokens)"
    if cell.fits:
        said = f"{where}: {peak:.1f} GiB at micro-batch {cell.micro_batch} fits {limit:.0f} GiB, published OOM"
    else:
        said = f"{where}: {peak:.0f} GiB even at micro-batch 1, over {limit:.0f} GiB, published as run"
    twins = cells[(cells["seq_len"] == cell.seq_len) & (cells["image_size"] != cell.image_size)]
    for twin in twins.itertuples():
        published = "OOM" if (twin.image_size, twin.patch_size) in BASELINE_OOM else "run"
        said += (
            f" ({cell_label(twin.image_size, twin.patch_size)} has as many tokens, published {published}; "
            f"predicted {twin.predicted_peak_bytes / GiB:.0f} GiB)"
        )
    return said


def hardware_claim(runs: pd.DataFrame, *, flash: str) -> dict:
    size, patch = REFERENCE_CELL
    at = runs[(runs["variant"] == flash) & (runs["image_size"] == size) & (runs["patch_size"] == patch)]
    at = at.set_index("hardware")
    row = {
        "claim": f"hardware ordering (Figure 2, {cell_label(size, patch)}, {flash})",
        "published": "images/s rise XE8545 < R750xa < XE9680",
    }
    absent = [hw for hw in HARDWARE_ORDER if hw not in at.index or at.loc[hw, "status"] != OK]
    if absent:
        states = ", ".join(f"{hw}: {at.loc[hw, 'status'] if hw in at.index else 'not in the grid'}" for hw in absent)
        return {**row, "measured": "-", "verdict": NOT_RUN, "detail": states}
    speeds = [float(at.loc[hw, "throughput_img_s"]) for hw in HARDWARE_ORDER]
    bounds = [
        (_float(at.loc[hw].get("throughput_ci_low_img_s")), _float(at.loc[hw].get("throughput_ci_high_img_s")))
        for hw in HARDWARE_ORDER
    ]
    rising = all(a < b for a, b in zip(speeds, speeds[1:]))
    # an ordering is settled where the intervals of neighbours do not overlap
    apart = all(None not in (a[1], b[0]) and (a[1] < b[0] or b[1] < a[0]) for a, b in zip(bounds, bounds[1:]))
    if apart:
        verdict = REPRODUCED if rising else NOT_REPRODUCED
    else:
        verdict = INCONCLUSIVE
    return {
        **row,
        "measured": " < ".join(f"{s:.1f}" for s in speeds)
        if rising
        else ", ".join(f"{hw} {s:.1f}" for hw, s in zip(HARDWARE_ORDER, speeds)),
        "verdict": verdict,
        "detail": "images/s of each profile with its interval: "
        + ", ".join(f"{hw} {s:.1f} {interval(*b)}" for hw, s, b in zip(HARDWARE_ORDER, speeds, bounds))
        + ("" if apart else "; neighbouring intervals overlap (or too few timing windows): the order is not settled"),
    }


def _float(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def evaluate(
    runs: pd.DataFrame,
    pairs: pd.DataFrame,
    *,
    hardware: str,
    flash: str,
    baseline: str | None,
    tolerance: float,
    plan: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every claim with ``published``, ``measured``, ``verdict`` and ``detail``; with ``plan`` (``plan.csv``),
    the memory model's predictions of which cells fit too."""
    columns = list(COLUMNS)
    if (runs.loc[runs["variant"] == flash, "role"] == NO_ATTENTION).any():
        detail = (
            f"the reference variant {flash} has no attention (a CNN): the claims are judged on a flash variant's "
            "cells; set figures.reference to one"
        )
        row = {"claim": "the Flash Attention study's claims", "published": "-", "measured": "-", "verdict": NOT_RUN}
        return pd.DataFrame([{**row, "detail": detail}], columns=columns)
    if baseline is None:
        rows = [
            {
                "claim": "flash vs baseline claims",
                "published": "-",
                "measured": "-",
                "verdict": NOT_RUN,
                "detail": "the grid has no baseline variant",
            }
        ]
    else:
        options = {"hardware": hardware, "flash": flash, "baseline": baseline}
        rows = [
            *speedup_claims(pairs, **options, tolerance=tolerance),
            memory_claim(pairs, **options, tolerance=tolerance),
            *fit_claims(runs, **options),
            *(predicted_fit_claims(plan, **options) if plan is not None else []),
        ]
    rows.append(hardware_claim(runs, flash=flash))
    return pd.DataFrame(rows, columns=columns)
