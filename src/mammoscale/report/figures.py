"""The study's figures, drawn from the tables, for one cell, a partial grid or the full paper grid.

Each figure is a function of the tables (``runs.csv``, ``speedups.csv``, ``pipeline.csv``) and
the few options that say what to draw (the reference cell, the hardware profiles' limits): it
returns a matplotlib figure, and :func:`mammoscale.report.plots.save` writes it as PNG (for the
reports) and as a vector copy. A cell that did not give a number is never silently absent: OOM,
failed, skipped and not-yet-run cells are written where their bar or point would be.

Here: :func:`draw` and the study's own Figures 2, 3 and 4; :mod:`~mammoscale.report.curves`
draws memory and efficiency against sequence length, :mod:`~mammoscale.report.panels` the data
pipeline and model quality, :mod:`~mammoscale.report.plots` the common conventions.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from mammoscale.files import cell_label, size_label
from mammoscale.plan import vit
from mammoscale.records import MISSING, OK
from mammoscale.report import curves, panels, plots, scaling, tables
from mammoscale.report.captions import FIGURES
from mammoscale.report.tables import status_label


def hardware_figure(runs: pd.DataFrame, reference: dict, profiles: dict) -> plt.Figure:
    at = runs[
        (runs["variant"] == reference["variant"])
        & (runs["image_size"] == reference["image_size"])
        & tables.at_patch(runs, reference["patch_size"])
    ]
    timed = at[plots.ok(at, "train_time_s") & (at["mode"] == "full")]
    panels = ["throughput"] + (["time"] if not timed.empty else [])
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.4 * len(panels) + 1.2, 3.4), layout="constrained", squeeze=False
    )
    cell = f"{cell_label(reference['image_size'], reference['patch_size'])}, {reference['variant']}"
    if at.empty:
        plots.note(axes[0][0], f"the reference cell ({cell}) is not in the grid:\nset figures.reference")
        return fig
    hardware = list(dict.fromkeys(at["hardware"]))
    labels = [f"{hw}\n{plots.ranks(at[at['hardware'] == hw].iloc[0], profiles.get(hw))}" for hw in hardware]
    colour = sns.color_palette("colorblind")[0]
    for ax, panel in zip(axes[0], panels):
        column, scale, unit = (
            ("throughput_img_s", 1.0, "images/s")
            if panel == "throughput"
            else ("train_time_s", 1 / 60, "time to train (min)")
        )
        for x, hw in enumerate(hardware):
            row = at[at["hardware"] == hw].iloc[0]
            if row["status"] == OK and pd.notna(row[column]):
                value = float(row[column]) * scale
                error = plots.interval(row) if panel == "throughput" else None
                ax.bar(x, value, color=colour, width=0.6, yerr=error, error_kw=plots.ERROR_BARS)
                ax.annotate(
                    f"{value:.3g}",
                    (x, value),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
            else:
                plots.status_mark(ax, x, row["status"] if row["status"] != OK else MISSING, basis=row["oom_basis"])
        ax.set_xticks(range(len(hardware)), labels, fontsize=8)
        ax.set_xlim(-0.8, len(hardware) - 0.2)
        ax.set_ylabel(unit)
        ax.margins(y=0.15)
    axes[0][0].set_title(f"Throughput, {cell}", fontsize=9)
    if len(panels) == 2:
        axes[0][1].set_title("Time to train (measured, full mode)", fontsize=9)
    return fig


def patch_figure(runs: pd.DataFrame, reference: dict, variants) -> plt.Figure:
    hardware = reference["hardware"]
    at = runs[(runs["hardware"] == hardware) & (runs["image_size"] == reference["image_size"])]
    fig, ax = plt.subplots(figsize=(5.2, 3.6), layout="constrained")
    if at.empty:
        plots.note(ax, f"no cell at image size {reference['image_size']} on {hardware}: set figures.reference")
        return fig
    vits, cnns = at[tables.patched(at)], at[~tables.patched(at)]
    if vits.empty:
        plots.note(
            ax,
            f"no cell with a patch size at {size_label(reference['image_size'])} on {hardware}:\n"
            f"{', '.join(dict.fromkeys(cnns['variant']))} (a CNN) has none",
        )
        return fig
    patches = sorted(vits["patch_size"].unique(), reverse=True)
    palette = plots.colours(variants)
    for variant in [v for v in variants if v in set(cnns["variant"])]:
        _level(ax, cnns[cnns["variant"] == variant].iloc[0], palette[variant])
    for variant in [v for v in variants if v in set(vits["variant"])]:
        rows = vits[vits["variant"] == variant].set_index("patch_size")
        xs = [i for i, p in enumerate(patches) if p in rows.index and rows.loc[p, "status"] == OK]
        ys = [float(rows.loc[patches[i], "throughput_img_s"]) for i in xs]
        ax.plot(xs, ys, marker="o", color=palette[variant], label=variant)
        for x, y in zip(xs, ys):
            error = plots.interval(rows.loc[patches[x]])
            if error is not None:
                ax.errorbar(x, y, yerr=error, color=palette[variant], **plots.ERROR_BARS)
        for i, p in enumerate(patches):
            if p in rows.index and rows.loc[p, "status"] != OK:
                offset = (list(variants).index(variant) - (len(variants) - 1) / 2) * 0.12
                plots.status_mark(
                    ax, i + offset, rows.loc[p, "status"], basis=rows.loc[p, "oom_basis"], colour=palette[variant]
                )
    ax.set_xticks(
        range(len(patches)),
        [f"patch {p}\n{vit.patches(reference['image_size'], p):,} patches" for p in patches],
        fontsize=8,
    )
    plots.log_if_wide(ax, at["throughput_img_s"].dropna().astype(float))
    ax.set_ylabel("images/s")
    ax.set_xlim(-0.5, len(patches) - 0.5)
    ax.set_title(f"Throughput vs patch size, {size_label(reference['image_size'])}, {hardware}", fontsize=9)
    ax.legend(title="variant", fontsize=8, title_fontsize=8)
    return fig


def _level(ax, row, colour) -> None:
    """A cell without a patch size (a CNN's) across a figure whose x is the patch size: a dashed level at its
    throughput, its interval shaded; its status in the legend where it has no number."""
    label = f"{row['variant']} (no patch size)"
    if row["status"] != OK or pd.isna(row["throughput_img_s"]):
        status = row["status"] if row["status"] != OK else MISSING
        ax.plot([], [], linestyle="--", color=colour, label=f"{label}: {status_label(status, row['oom_basis'])}")
        return
    ax.axhline(float(row["throughput_img_s"]), linestyle="--", color=colour, linewidth=1.2, label=label)
    error = plots.interval(row)
    if error is not None:
        value = float(row["throughput_img_s"])
        ax.axhspan(value - error[0][0], value + error[1][0], color=colour, alpha=0.15, linewidth=0)


def flash_figure(runs: pd.DataFrame, pairs: pd.DataFrame, reference: dict, variants) -> plt.Figure:
    hardware = reference["hardware"]
    at = runs[(runs["hardware"] == hardware) & tables.with_attention(runs)]  # a CNN is in no flash/baseline pair
    patches = sorted(at["patch_size"].unique())
    fig, axes = plt.subplots(
        1,
        max(1, len(patches)),
        figsize=(max(6.0, 2.2 + 2.6 * len(patches)), 3.9),
        layout="constrained",
        sharey=True,
        squeeze=False,
    )
    if at.empty:
        plots.note(axes[0][0], f"no cell with attention on {hardware}")
        return fig
    present = [v for v in variants if v in set(at["variant"])]
    values = at.loc[plots.ok(at, "throughput_img_s"), "throughput_img_s"].astype(float)
    wide = len(values) > 0 and values.max() / values.min() > 20
    for ax, patch in zip(axes[0], patches):
        _flash_panel(
            ax,
            at[at["patch_size"] == patch],
            pairs,
            present,
            plots.colours(variants),
            legend=ax is axes[0][0],
            wide=wide,
        )
    axes[0][0].set_ylabel("images/s")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(
        f"Flash vs baseline on {hardware}\nover each baseline bar: the flash speed-up (flash images/s / its images/s)",
        fontsize=9,
    )
    return fig


def _flash_panel(
    ax, here: pd.DataFrame, pairs: pd.DataFrame, present: list, palette: dict, *, legend: bool, wide: bool
) -> None:
    """One patch size: a bar per variant and image size, the speed-up over each baseline written on its bar."""
    sizes = sorted(here["image_size"].unique())
    width = min(0.8 / len(present), 0.4)
    for j, variant in enumerate(present):
        rows = here[here["variant"] == variant].set_index("image_size")
        for i, size in enumerate(sizes):
            x = i + (j - (len(present) - 1) / 2) * width
            if size not in rows.index:
                continue
            row = rows.loc[size]
            if row["status"] != OK:
                plots.status_mark(
                    ax, x, row["status"], basis=row["oom_basis"], colour=plots.STATUS_COLOUR.get(row["status"])
                )
                continue
            height = float(row["throughput_img_s"])
            ax.bar(
                x,
                height,
                width=width * 0.95,
                color=palette[variant],
                label=variant if (i == 0 and legend) else None,
                yerr=plots.interval(row),
                error_kw=plots.ERROR_BARS,
            )
            ratio = pairs.loc[
                (pairs["hardware"] == row["hardware"])
                & (pairs["image_size"] == size)
                & (pairs["patch_size"] == row["patch_size"])
                & (pairs["baseline_variant"] == variant),
                "throughput_ratio",
            ].dropna()
            if len(ratio):
                ax.annotate(
                    f"{ratio.iloc[0]:.1f}x",
                    (x, height),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
    if wide:
        plots.log_y(ax)
    ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
    ax.set_xlim(-0.6 if len(sizes) > 1 else -0.9, len(sizes) - (0.4 if len(sizes) > 1 else 0.1))
    ax.set_xlabel("image size (px)")
    ax.set_title(f"patch {here['patch_size'].iloc[0]}", fontsize=9)
    ax.margins(y=0.25)
    if wide:
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 3)


def draw(
    name: str,
    *,
    runs: pd.DataFrame,
    pairs: pd.DataFrame | None,
    pipeline: pd.DataFrame | None,
    reference: dict,
    variants,
    profiles: dict,
) -> plt.Figure:
    """The figure ``name`` (one of :data:`~mammoscale.report.captions.FIGURES`)."""
    plots.setup()
    variants = list(variants)
    drawers = {
        "fig2_hardware": lambda: hardware_figure(runs, reference, profiles),
        "fig3_patch_size": lambda: patch_figure(runs, reference, variants),
        "fig4_flash_vs_baseline": lambda: flash_figure(runs, pairs, reference, variants),
        "memory": lambda: curves.memory_figure(runs, variants, profiles),
        "efficiency": lambda: curves.efficiency_figure(runs, variants, profiles),
        "data_pipeline": lambda: panels.pipeline_figure(runs, pipeline, variants),
        "quality": lambda: panels.quality_figure(runs, reference, variants),
        "scaling": lambda: scaling.figure(runs, profiles),
    }
    if name not in drawers:
        raise ValueError(f"no figure {name!r}; figures: {', '.join(FIGURES)}")
    return drawers[name]()
