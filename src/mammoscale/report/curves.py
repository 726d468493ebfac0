"""Memory and compute efficiency against sequence length: one panel per hardware, a line per variant and patch.

Out-of-memory cells are crosses on the device's memory line; cells without a number are counted in
the panel's corner.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from mammoscale.report import plots
from mammoscale.report.tables import STATUS_LABEL

OOM_EDGE = "#b2182b"


def memory_figure(runs: pd.DataFrame, variants, profiles: dict) -> plt.Figure:
    return _by_seq_len(
        runs,
        variants,
        profiles,
        value=lambda ok: ok["peak_mem_bytes"].astype(float) / plots.GB,
        ylabel="peak memory (GB, log)",
        title="Peak memory vs sequence length",
        limit=True,
    )


def efficiency_figure(runs: pd.DataFrame, variants, profiles: dict) -> plt.Figure:
    """MFU where every finished cell has one (its profile gives a peak), else achieved TFLOP/s."""
    ok = runs[runs["status"] == "ok"]
    if not ok.empty and ok["mfu"].notna().all():
        return _by_seq_len(
            runs,
            variants,
            profiles,
            value=lambda rows: rows["mfu"].astype(float) * 100,
            ylabel="MFU (% of peak bf16, log)",
            title="Model FLOPs utilisation vs sequence length",
            limit=False,
        )
    return _by_seq_len(
        runs,
        variants,
        profiles,
        value=lambda rows: rows["achieved_tflops"].astype(float),
        ylabel="achieved TFLOP/s (log)",
        title="Achieved TFLOP/s vs sequence length",
        limit=False,
    )


def _by_seq_len(
    runs: pd.DataFrame, variants, profiles: dict, *, value, ylabel: str, title: str, limit: bool
) -> plt.Figure:
    """One panel per hardware: ``value(rows)`` against sequence length, a line per variant and patch size."""
    hardware = list(dict.fromkeys(runs["hardware"]))
    columns = min(3, max(1, len(hardware)))
    rows_n = math.ceil(len(hardware) / columns) if hardware else 1
    fig, axes = plt.subplots(
        rows_n, columns, figsize=(1.8 + 3.6 * columns, 3.4 * rows_n), layout="constrained", squeeze=False
    )
    palette = plots.colours(variants)
    patches = sorted(runs["patch_size"].unique())
    marker = {p: plots.MARKERS[i % len(plots.MARKERS)] for i, p in enumerate(patches)}
    for ax in axes.flat[len(hardware) :]:
        ax.set_visible(False)
    for ax, hw in zip(axes.flat, hardware):
        limit_line = plots.device_limit(profiles.get(hw)) if limit else (None, "")
        _panel(ax, runs[runs["hardware"] == hw], value, palette, marker, limit_line=limit_line, limit=limit)
        ax.set_ylabel(ylabel)
        ax.set_title(hw, fontsize=9)
    handles = [Line2D([], [], color=palette[v], label=v) for v in variants if v in set(runs["variant"])]
    handles += [Line2D([], [], color="#444444", marker=marker[p], linestyle="", label=f"patch {p}") for p in patches]
    if limit and (runs["status"] == "oom").any():
        handles.append(
            Line2D(
                [],
                [],
                color="#888888",
                marker="X",
                markeredgecolor=OOM_EDGE,
                linestyle="",
                markersize=8,
                label="out of memory",
            )
        )
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def _panel(ax, here: pd.DataFrame, value, palette: dict, marker: dict, *, limit_line: tuple, limit: bool) -> None:
    """One hardware's lines, its OOM crosses on the memory line, and a count of the cells without a number."""
    top, label = limit_line
    ok = here[(here["status"] == "ok")]
    ys = value(ok)
    for (variant, patch), group in ok.assign(y=ys).dropna(subset=["y"]).groupby(["variant", "patch_size"]):
        group = group.sort_values("seq_len")
        ax.plot(group["seq_len"], group["y"], marker=marker[patch], color=palette[variant], markersize=5)
    failed = here[here["status"] == "oom"]
    if limit and not failed.empty:
        ceiling = top or (float(ys.max()) * 1.5 if ys.notna().any() else 1.0)
        for variant, group in failed.groupby("variant"):
            ax.scatter(
                group["seq_len"],
                [ceiling] * len(group),
                marker="X",
                s=60,
                color=palette[variant],
                edgecolors=OOM_EDGE,
                linewidths=1.2,
                zorder=3,
            )
    if top:
        ax.axhline(top, linestyle="--", color="#444444", linewidth=1)
        ax.annotate(
            f"{label}: {top:g} GB",
            (0.02, top),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            va="bottom",
            color="#444444",
        )
    others = here[~here["status"].isin(["ok", "oom"])]
    if not others.empty:
        counts = others["status"].map(STATUS_LABEL).value_counts()
        ax.text(
            0.98,
            0.02,
            "; ".join(f"{n} {s}" for s, n in counts.items()),
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
            color="#555555",
        )
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda tick, _: f"{tick:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if ys.notna().any() or top:
        plots.log_y(ax)
    else:
        plots.note(ax, "no cell on this hardware has a number yet")
    ax.set_xlabel("sequence length (tokens, log)")
