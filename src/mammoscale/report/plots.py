"""The figures' common hand: palette, status marks, log axes, and saving as PNG plus a vector copy.

The palette is seaborn's ``colorblind``; markers, not colour alone, tell patch sizes apart. A
cell without a number is written where its bar or point would be (:func:`status_mark`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from mammoscale import records
from mammoscale.report.tables import status_label

STATUS_COLOUR = {
    records.OOM: "#b2182b",
    records.FAILED: "#b2182b",
    records.SKIPPED: "#555555",
    records.MISSING: "#555555",
}
MARKERS = ["o", "s", "^", "D", "v", "P", "*", "h"]


ERROR_BARS = {"capsize": 2, "elinewidth": 0.8, "ecolor": "#333333"}
"""How an interval is drawn on a bar or a point."""


def interval(
    row, value: str = "throughput_img_s", low: str = "throughput_ci_low_img_s", high: str = "throughput_ci_high_img_s"
):
    """The error bar of ``row``'s ``value``: its bootstrap interval as matplotlib's ``yerr`` ([[below], [above]]), or
    None where the cell has no interval (too few timing windows, or a record from before intervals)."""
    lo, hi, mid = (row.get(key) for key in (low, high, value))
    if any(v is None or pd.isna(v) for v in (lo, hi, mid)):
        return None
    return [[max(0.0, float(mid) - float(lo))], [max(0.0, float(hi) - float(mid))]]


def setup() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.0)


def colours(variants) -> dict:
    """One colour per variant, the same in every figure."""
    return dict(zip(variants, sns.color_palette("colorblind", max(3, len(variants)))))


def note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def status_mark(ax, x, status: str, *, basis=None, colour=None, rotation=90) -> None:
    """The status of a cell without a number, written at the foot of where its bar would stand (``basis``: an
    OOM's, predicted or measured)."""
    ax.text(
        x,
        0.02,
        status_label(status, basis),
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="bottom",
        rotation=rotation,
        fontsize=7,
        color=colour or STATUS_COLOUR.get(status, "#555555"),
        fontweight="bold" if status == records.OOM and basis != records.PREDICTED else "normal",
    )


def ranks(row: pd.Series, profile: dict | None) -> str:
    gpus = profile.get("gpus_per_node", 0) if profile else 0
    nodes = profile.get("nodes", 1) if profile else 1
    if pd.notna(row.get("world_size")):
        world = int(row["world_size"])
    else:
        world = nodes * max(1, gpus)
    unit = "GPU" if gpus else "CPU rank"
    micro = int(row["micro_batch"]) if pd.notna(row.get("micro_batch")) else (profile or {}).get("micro_batch", "?")
    return f"{world} {unit}{'s' if world > 1 else ''} x {micro}"


def ok(frame: pd.DataFrame, column: str) -> pd.Series:
    return (frame["status"] == records.OK) & frame[column].notna()


def plain_log(axis, subs=(1.0, 2.0, 5.0)) -> None:
    """Log ticks at ``subs`` x 10^k written as plain numbers (``200``, ``0.05``), no minor labels."""
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.10g}"))
    axis.set_minor_formatter(NullFormatter())


def log_y(ax) -> None:
    """Log y; ticks at 1, 2, 5 x 10^k, or 1, 2, 3, 5 when the data span less than about a decade."""
    ax.set_yscale("log")
    low, high = ax.dataLim.intervaly
    narrow = low > 0 and high / low < 15
    plain_log(ax.yaxis, (1.0, 2.0, 3.0, 5.0) if narrow else (1.0, 2.0, 5.0))


def log_if_wide(ax, values) -> None:
    values = [v for v in values if v and v > 0]
    if values and max(values) / min(values) > 20:
        log_y(ax)


def device_limit(profile: dict | None) -> tuple[float | None, str]:
    if not profile:
        return None, ""
    if profile.get("device_memory_gib"):
        return float(profile["device_memory_gib"]), "device memory"
    if not profile.get("gpus_per_node") and profile.get("mem_mb"):
        return profile["mem_mb"] / 1024, "job memory (mem_mb)"
    return None, ""


def save(fig: plt.Figure, png: Path | str, vector: Path | str, *, dpi: int) -> None:
    """The PNG (for the reports) and the vector copy (for a paper), then free the figure."""
    for path in (png, vector):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, metadata={"Software": None} if str(path).endswith(".png") else None)
    plt.close(fig)
