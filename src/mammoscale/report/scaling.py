"""Scaling across ranks and nodes: the same cell on hardware profiles that differ only in ranks, as series.

A *series* is one variant's cell (image size, patch size) on every profile of ``grid.hardware`` whose ranks compute
on the same device type (:func:`device_type`), where there are two such profiles at least. Its points go by ranks,
then nodes; the first is its smallest run. Per point:

- ``speedup``: its throughput over the smallest run's, with a bootstrap interval of the ratio of their timing windows
  (:func:`mammoscale.stats.ratio_ci`; none for the smallest run, 1 by definition);
- ``ideal_img_s``: linear scaling from the smallest run, its throughput x the ranks' ratio;
- ``efficiency``: speed-up / the ranks' ratio (1 is linear), its interval the speed-up's over the same ratio;
- ``time_to_train_h``: ``train.epochs`` epochs over the data source's training examples at the measured throughput,
  as the CheXNet post presents its result (32 nodes trained 10 epochs 47x faster than one). With the same epochs and
  examples at every point, its speed-up over the smallest run is ``speedup``.

A point without a number (not run, failed, OOM) keeps its row and status, its numbers empty; a series whose smallest
run has none has no speed-ups. Torch-free; the figure is matplotlib's.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from mammoscale import files, records, stats
from mammoscale.plan.launch import cpus_per_rank, ranks
from mammoscale.report import plots, tables
from mammoscale.report.html import esc, interval, table

NO_SERIES = (
    "no scaling series: a series is one cell on two or more hardware profiles of one device type that differ in "
    "ranks or nodes; list such profiles in grid.hardware (docs/multi-node.md, 'Scaling across ranks and nodes')"
)
NODE_MARKERS = ("o", "s", "^", "D", "v", "P")
"""A point's marker by its nodes (1, 2, 3...): the same ranks on one node and on two stay told apart."""
TIME_COLUMNS = ("epochs", "train_examples", "time_to_train_h")
""":data:`mammoscale.files.SCALING_TABLE`'s columns that the training's length decides (:func:`scaling_table`)."""


def on_gpu(profile: dict) -> bool:
    """Whether a profile's ranks compute on GPUs (the plan's rule: GPUs, and no ``device: cpu``)."""
    return profile.get("gpus_per_node", 0) > 0 and profile.get("device", "auto") != "cpu"


def device_type(profile: dict) -> str:
    """What one rank of a profile computes on, as a series names it: a GPU's model, memory and peak (``gpu_model``,
    ``device_memory_gib``, ``peak_tflops``), or a CPU rank's share of its node's CPUs; either with the profile's own
    ``precision``. Profiles that agree on it and differ in ranks or nodes are one device scaled out."""
    if on_gpu(profile):
        gib, peak = profile.get("device_memory_gib"), profile.get("peak_tflops")
        parts = [
            profile.get("gpu_model") or "GPU",
            *([f"{gib:g} GiB"] if gib else []),
            *([f"{peak:g} TFLOP/s"] if peak else []),
        ]
    else:
        cpus = cpus_per_rank(profile)
        parts = [f"CPU rank of {cpus} CPU{'s' if cpus > 1 else ''}"]
    return " ".join([*parts, *([profile["precision"]] if profile.get("precision") else [])])


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _patch(value) -> int | None:
    return None if value is None or pd.isna(value) or value == "" else int(value)


def points(runs: pd.DataFrame, profiles: dict) -> pd.DataFrame:
    """Every point of every scaling series of ``runs`` (runs.csv; ``profiles``: its cells' hardware profiles), series
    in grid order, points by ranks then nodes: :data:`mammoscale.files.SCALING_TABLE`'s columns but
    :data:`TIME_COLUMNS`."""
    groups: dict[tuple, list[dict]] = {}
    for _, row in runs.iterrows():
        profile = profiles.get(row["hardware"])
        if profile is None:
            continue
        key = (row["variant"], int(row["image_size"]), _patch(row["patch_size"]), device_type(profile))
        groups.setdefault(key, []).append({"row": row, "ranks": ranks(profile), "nodes": profile["nodes"]})
    found = []
    for (variant, size, patch, device), members in groups.items():
        if len({member["row"]["hardware"] for member in members}) < 2:
            continue
        members.sort(key=lambda member: (member["ranks"], member["nodes"]))
        found += _series(f"{variant}/{files.cell_label(size, patch)} on {device}", device, members)
    table = pd.DataFrame(found, columns=[c for c in files.SCALING_TABLE.columns if c not in TIME_COLUMNS])
    text = [name for name, kind in files.SCALING_TABLE.dtypes.items() if kind == "str"]
    return table.apply(lambda column: column if column.name in text else pd.to_numeric(column))


def _series(name: str, device: str, members: list[dict]) -> list[dict]:
    """One series' points, each against the first (the smallest run)."""
    base = members[0]
    base_img_s = _measured(base["row"])
    rows = []
    for member in members:
        row = member["row"]
        img_s = _measured(row)
        ratio = member["ranks"] / base["ranks"]
        speedup = img_s / base_img_s if img_s is not None and base_img_s is not None else None
        low, high = (None, None)
        if speedup is not None and member is not base:
            low, high = stats.ratio_ci(*(tables._windows(m["row"].get(tables.WINDOWS)) for m in (member, base)))
        rows.append(
            {
                "series": name,
                "variant": row["variant"],
                "image_size": int(row["image_size"]),
                "patch_size": _patch(row["patch_size"]),
                "device": device,
                "hardware": row["hardware"],
                "nodes": member["nodes"],
                "ranks": member["ranks"],
                "global_batch": _number(row.get("global_batch")),
                "status": row["status"],
                "throughput_img_s": img_s,
                "throughput_ci_low_img_s": _number(row.get("throughput_ci_low_img_s")) if img_s else None,
                "throughput_ci_high_img_s": _number(row.get("throughput_ci_high_img_s")) if img_s else None,
                "ideal_img_s": base_img_s * ratio if base_img_s is not None else None,
                "speedup": speedup,
                "speedup_ci_low": low,
                "speedup_ci_high": high,
                "efficiency": speedup / ratio if speedup is not None else None,
                "efficiency_ci_low": low / ratio if low is not None else None,
                "efficiency_ci_high": high / ratio if high is not None else None,
            }
        )
    return rows


def _measured(row) -> float | None:
    """A cell's images/s where it ran (``ok``) and gave one; None else."""
    value = _number(row.get("throughput_img_s"))
    return value if row["status"] == records.OK and value is not None and value > 0 else None


def time_to_train_h(throughput_img_s, *, epochs: int, train_examples: int):
    """Hours to train ``epochs`` epochs of ``train_examples`` each at ``throughput_img_s`` (a number or a column)."""
    return epochs * train_examples / throughput_img_s / 3600


def scaling_table(runs: pd.DataFrame, profiles: dict, *, epochs: int, train_examples: int) -> pd.DataFrame:
    """``scaling.csv``: :func:`points` and, at each, the time to train ``epochs`` epochs of ``train_examples``."""
    table = points(runs, profiles).assign(epochs=epochs, train_examples=train_examples)
    table["time_to_train_h"] = time_to_train_h(table["throughput_img_s"], epochs=epochs, train_examples=train_examples)
    return table[list(files.SCALING_TABLE.columns)]


def write_table(runs_csv, out_csv, *, profiles: dict, epochs: int, train_examples: int) -> pd.DataFrame:
    """``scaling.csv`` from ``runs.csv``."""
    table = scaling_table(files.read_runs(runs_csv), profiles, epochs=epochs, train_examples=train_examples)
    files.SCALING_TABLE.write(table, out_csv)
    return table


def read_table(path: Path | str) -> pd.DataFrame:
    return files.SCALING_TABLE.read(path)


# the figure


def figure(runs: pd.DataFrame, profiles: dict) -> plt.Figure:
    """Throughput against ranks on log2 axes, a colour per series: each point with its interval (marker: its nodes)
    and its efficiency written beside it, the ideal (linear from the smallest run) dashed, and a point without a number
    written at the foot of its ranks."""
    table = points(runs, profiles)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    if table.empty:
        plots.note(ax, textwrap.fill(NO_SERIES, 60))
        return fig
    names = list(dict.fromkeys(table["series"]))
    palette = dict(zip(names, sns.color_palette("colorblind", max(3, len(names)))))
    for index, name in enumerate(names):
        series = table[table["series"] == name]
        colour = palette[name]
        ideal = series.dropna(subset=["ideal_img_s"])
        if not ideal.empty:
            ax.plot(ideal["ranks"], ideal["ideal_img_s"], linestyle="--", linewidth=0.9, color=colour, alpha=0.7)
        ran = series.dropna(subset=["throughput_img_s"])
        ax.plot(ran["ranks"], ran["throughput_img_s"], linewidth=0.8, color=colour, alpha=0.5)
        for _, point in ran.iterrows():
            ax.errorbar(
                point["ranks"],
                point["throughput_img_s"],
                yerr=plots.interval(point),
                marker=_marker(int(point["nodes"])),
                color=colour,
                **plots.ERROR_BARS,
            )
            if pd.notna(point["efficiency"]):
                ax.annotate(
                    f"{point['efficiency']:.0%}",
                    (point["ranks"], point["throughput_img_s"]),
                    xytext=(5, 3 if int(point["nodes"]) == 1 else -10),
                    textcoords="offset points",
                    fontsize=7,
                    color=colour,
                )
        shift = 2 ** (0.12 * (index - (len(names) - 1) / 2))  # side by side where several series have no number
        for _, point in series[series["throughput_img_s"].isna()].iterrows():
            plots.status_mark(ax, point["ranks"] * shift, point["status"], colour=colour)
    _log2(ax, sorted(set(table["ranks"])))
    ax.set_xlabel("ranks")
    ax.set_ylabel("images/s")
    ax.set_title("Throughput against ranks; dashed: linear from the smallest run; %: efficiency", fontsize=9)
    handles = [Line2D([], [], color=palette[name], label=name) for name in names]
    nodes = sorted(set(table["nodes"].astype(int)))
    handles += [
        Line2D([], [], marker=_marker(n), linestyle="", color="#555555", label=f"{n} node{'s' if n > 1 else ''}")
        for n in nodes
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper left")
    return fig


def _marker(nodes: int) -> str:
    return NODE_MARKERS[(nodes - 1) % len(NODE_MARKERS)]


def _log2(ax, ticks: list[int]) -> None:
    """Both axes log2, written as plain numbers; the x ticks at the ranks that ran."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    plain = FuncFormatter(lambda value, _: f"{value:,.4g}")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(NullFormatter())
    low, high = ax.get_xlim()
    ax.set_xlim(min(low, ticks[0] / 1.4), max(high, ticks[-1] * 1.4))
    ax.margins(y=0.2)


# the report's section

SECTION_COLUMNS = {
    "series": "series",
    "hardware": "hardware",
    "nodes": "nodes",
    "ranks": "ranks",
    "global_batch": "global batch",
    "status": "status",
    "throughput_img_s": "images/s",
    "throughput_ci": "images/s, 95% interval",
    "ideal_img_s": "ideal images/s",
    "speedup": "speed-up",
    "speedup_ci": "speed-up, 95% interval",
    "efficiency_pct": "efficiency (%)",
    "time_to_train_h": "time to train (h)",
}


def section(scaling: pd.DataFrame | None, shown: str = "") -> str:
    """The report's section: each series of ``scaling`` (scaling.csv) in a sentence, the figure (``shown``: its HTML)
    and the table."""
    if scaling is None:
        return shown + "<p>No scaling table yet: the rule scaling_table writes results/tables/scaling.csv.</p>"
    if scaling.empty:
        return shown + f"<p>{esc(NO_SERIES[:1].upper() + NO_SERIES[1:])}.</p>"
    lines = []
    for name, series in scaling.groupby("series", sort=False):
        smallest, largest = series.iloc[0], series.iloc[-1]
        if pd.isna(largest["speedup"]):
            lines.append(f"{name}: no speed-up yet (its smallest or largest run has no throughput).")
            continue
        spread = interval(100 * largest["efficiency_ci_low"], 100 * largest["efficiency_ci_high"], ".0f", missing="")
        lines.append(
            f"{name}: {_ranks(largest)} train {int(largest['epochs'])} epochs of {int(largest['train_examples']):,} "
            f"examples in {largest['time_to_train_h']:.3g} h, {largest['speedup']:.3g}x faster than {_ranks(smallest)} "
            f"({smallest['time_to_train_h']:.3g} h): efficiency {100 * largest['efficiency']:.0f} %"
            + (f", 95% interval {spread} %." if spread else " (no interval: too few timing windows).")
        )
    rows = scaling.assign(
        throughput_ci=_intervals(scaling, "throughput_ci_low_img_s", "throughput_ci_high_img_s"),
        speedup_ci=_intervals(scaling, "speedup_ci_low", "speedup_ci_high"),
        efficiency_pct=100 * scaling["efficiency"].astype(float),
        status=[tables.status_label(status) for status in scaling["status"]],
    )
    lines.append(
        "Time to train: the data source's training examples (as the plan counts them), train.epochs times, "
        "at each point's measured images/s."
    )
    return shown + "".join(f"<p>{esc(line)}</p>" for line in lines) + table(rows, SECTION_COLUMNS)


def _intervals(frame: pd.DataFrame, low: str, high: str) -> list:
    return [interval(lo, hi, missing=None) for lo, hi in zip(frame[low], frame[high])]


def _ranks(point) -> str:
    """``8 ranks on 2 nodes``."""
    ranks, nodes = int(point["ranks"]), int(point["nodes"])
    return f"{ranks} rank{'s' if ranks > 1 else ''} on {nodes} node{'s' if nodes > 1 else ''}"
