"""The study's figures, drawn from the tables, for one cell, a partial grid or the full paper grid.

Each figure is a function of the tables (``runs.csv``, ``speedups.csv``, ``pipeline.csv``) and
the few options that say what to draw (the reference cell, the hardware profiles' limits): it
returns a matplotlib figure, and :func:`mammoscale.report.plots.save` writes it as PNG (for the reports) and as a
vector copy. A cell that did not give a number is never silently absent: OOM, failed, skipped
and not-yet-run cells are written where their bar or point would be.

The drawing conventions (palette, status marks, log axes, saving) are :mod:`~mammoscale.report.plots`'s.
"""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter  # noqa: E402

from mammoscale.plan import vit  # noqa: E402
from mammoscale.report import plots  # noqa: E402
from mammoscale.report.captions import FIGURES  # noqa: E402
from mammoscale.report.tables import STATUS_LABEL  # noqa: E402


def hardware_figure(runs: pd.DataFrame, reference: dict, profiles: dict) -> plt.Figure:
    at = runs[(runs["variant"] == reference["variant"]) & (runs["image_size"] == reference["image_size"])
              & (runs["patch_size"] == reference["patch_size"])]
    timed = at[plots.ok(at, "train_time_s") & (at["mode"] == "full")]
    panels = ["throughput"] + (["time"] if not timed.empty else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 1.2, 3.4), layout="constrained",
                             squeeze=False)
    cell = f"img{reference['image_size']}_p{reference['patch_size']}, {reference['variant']}"
    if at.empty:
        plots.note(axes[0][0], f"the reference cell ({cell}) is not in the grid:\nset figures.reference")
        return fig
    hardware = list(dict.fromkeys(at["hardware"]))
    labels = [f"{hw}\n{plots.ranks(at[at['hardware'] == hw].iloc[0], profiles.get(hw))}" for hw in hardware]
    colour = sns.color_palette("colorblind")[0]
    for ax, panel in zip(axes[0], panels):
        column, scale, unit = (("throughput_img_s", 1.0, "images/s") if panel == "throughput"
                               else ("train_time_s", 1 / 60, "time to train (min)"))
        for x, hw in enumerate(hardware):
            row = at[at["hardware"] == hw].iloc[0]
            if row["status"] == "ok" and pd.notna(row[column]):
                value = float(row[column]) * scale
                ax.bar(x, value, color=colour, width=0.6)
                ax.annotate(f"{value:.3g}", (x, value), ha="center", va="bottom", fontsize=8,
                            xytext=(0, 2), textcoords="offset points")
            else:
                plots.status_mark(ax, x, row["status"] if row["status"] != "ok" else "missing")
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
    patches = sorted(at["patch_size"].unique(), reverse=True)
    palette = plots.colours(variants)
    for variant in [v for v in variants if v in set(at["variant"])]:
        rows = at[at["variant"] == variant].set_index("patch_size")
        xs = [i for i, p in enumerate(patches) if p in rows.index and rows.loc[p, "status"] == "ok"]
        ys = [float(rows.loc[patches[i], "throughput_img_s"]) for i in xs]
        ax.plot(xs, ys, marker="o", color=palette[variant], label=variant)
        for i, p in enumerate(patches):
            if p in rows.index and rows.loc[p, "status"] != "ok":
                offset = (list(variants).index(variant) - (len(variants) - 1) / 2) * 0.12
                plots.status_mark(ax, i + offset, rows.loc[p, "status"], colour=palette[variant])
    ax.set_xticks(range(len(patches)),
                  [f"patch {p}\n{vit.patches(reference['image_size'], p):,} patches" for p in patches], fontsize=8)
    plots.log_if_wide(ax, at["throughput_img_s"].dropna().astype(float))
    ax.set_ylabel("images/s")
    ax.set_xlim(-0.5, len(patches) - 0.5)
    ax.set_title(f"Throughput vs patch size, img{reference['image_size']}, {hardware}", fontsize=9)
    ax.legend(title="variant", fontsize=8, title_fontsize=8)
    return fig


def flash_figure(runs: pd.DataFrame, pairs: pd.DataFrame, reference: dict, variants) -> plt.Figure:
    hardware = reference["hardware"]
    at = runs[runs["hardware"] == hardware]
    patches = sorted(at["patch_size"].unique())
    fig, axes = plt.subplots(1, max(1, len(patches)), figsize=(max(6.0, 2.2 + 2.6 * len(patches)), 3.9),
                             layout="constrained", sharey=True, squeeze=False)
    if at.empty:
        plots.note(axes[0][0], f"no cell on {hardware}")
        return fig
    palette = plots.colours(variants)
    present = [v for v in variants if v in set(at["variant"])]
    width = min(0.8 / len(present), 0.4)
    values = at.loc[plots.ok(at, "throughput_img_s"), "throughput_img_s"].astype(float)
    wide = len(values) > 0 and values.max() / values.min() > 20
    for ax, patch in zip(axes[0], patches):
        here = at[at["patch_size"] == patch]
        sizes = sorted(here["image_size"].unique())
        for j, variant in enumerate(present):
            rows = here[here["variant"] == variant].set_index("image_size")
            for i, size in enumerate(sizes):
                x = i + (j - (len(present) - 1) / 2) * width
                if size not in rows.index:
                    continue
                if rows.loc[size, "status"] == "ok":
                    height = float(rows.loc[size, "throughput_img_s"])
                    ax.bar(x, height, width=width * 0.95, color=palette[variant],
                           label=variant if (i == 0 and ax is axes[0][0]) else None)
                    ratio = pairs.loc[(pairs["hardware"] == hardware) & (pairs["image_size"] == size)
                                      & (pairs["patch_size"] == patch) & (pairs["baseline_variant"] == variant),
                                      "throughput_ratio"].dropna()
                    if len(ratio):
                        ax.annotate(f"{ratio.iloc[0]:.1f}x", (x, height), ha="center", va="bottom", fontsize=7,
                                    rotation=90, xytext=(0, 2), textcoords="offset points")
                else:
                    plots.status_mark(ax, x, rows.loc[size, "status"], colour=plots.STATUS_COLOUR.get(rows.loc[size, "status"]))
        if wide:
            plots.log_y(ax)
        ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
        ax.set_xlim(-0.6 if len(sizes) > 1 else -0.9, len(sizes) - (0.4 if len(sizes) > 1 else 0.1))
        ax.set_xlabel("image size (px)")
        ax.set_title(f"patch {patch}", fontsize=9)
        ax.margins(y=0.25)
        if wide:
            low, high = ax.get_ylim()
            ax.set_ylim(low, high * 3)
    axes[0][0].set_ylabel("images/s")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(f"Flash vs baseline on {hardware}\nover each baseline bar: the flash speed-up (flash images/s / its "
                 "images/s)", fontsize=9)
    return fig


def _by_seq_len(runs: pd.DataFrame, variants, profiles: dict, *, value, ylabel: str, title: str,
               limit: bool) -> plt.Figure:
    """One panel per hardware: ``value(rows)`` against sequence length, a line per variant and patch size."""
    hardware = list(dict.fromkeys(runs["hardware"]))
    columns = min(3, max(1, len(hardware)))
    rows_n = math.ceil(len(hardware) / columns) if hardware else 1
    fig, axes = plt.subplots(rows_n, columns, figsize=(1.8 + 3.6 * columns, 3.4 * rows_n), layout="constrained",
                             squeeze=False)
    palette = plots.colours(variants)
    patches = sorted(runs["patch_size"].unique())
    marker = {p: plots.MARKERS[i % len(plots.MARKERS)] for i, p in enumerate(patches)}
    for ax in axes.flat[len(hardware):]:
        ax.set_visible(False)
    for ax, hw in zip(axes.flat, hardware):
        here = runs[runs["hardware"] == hw]
        top, label = plots.device_limit(profiles.get(hw)) if limit else (None, "")
        ok = here[(here["status"] == "ok")]
        ys = value(ok)
        for (variant, patch), group in ok.assign(y=ys).dropna(subset=["y"]).groupby(["variant", "patch_size"]):
            group = group.sort_values("seq_len")
            ax.plot(group["seq_len"], group["y"], marker=marker[patch], color=palette[variant], markersize=5)
        failed = here[here["status"] == "oom"]
        if limit and not failed.empty:
            ceiling = top or (float(ys.max()) * 1.5 if ys.notna().any() else 1.0)
            for variant, group in failed.groupby("variant"):
                ax.scatter(group["seq_len"], [ceiling] * len(group), marker="X", s=60, color=palette[variant],
                           edgecolors="#b2182b", linewidths=1.2, zorder=3)
        if top:
            ax.axhline(top, linestyle="--", color="#444444", linewidth=1)
            ax.annotate(f"{label}: {top:g} GB", (0.02, top), xycoords=("axes fraction", "data"), fontsize=7,
                        va="bottom", color="#444444")
        others = here[~here["status"].isin(["ok", "oom"])]
        if not others.empty:
            counts = others["status"].map(STATUS_LABEL).value_counts()
            ax.text(0.98, 0.02, "; ".join(f"{n} {s}" for s, n in counts.items()), transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=7, color="#555555")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        if ys.notna().any() or top:
            plots.log_y(ax)
        else:
            plots.note(ax, "no cell on this hardware has a number yet")
        ax.set_xlabel("sequence length (tokens, log)")
        ax.set_ylabel(ylabel)
        ax.set_title(hw, fontsize=9)
    handles = [Line2D([], [], color=palette[v], label=v) for v in variants if v in set(runs["variant"])]
    handles += [Line2D([], [], color="#444444", marker=marker[p], linestyle="", label=f"patch {p}") for p in patches]
    if limit and (runs["status"] == "oom").any():
        handles.append(Line2D([], [], color="#888888", marker="X", markeredgecolor="#b2182b", linestyle="",
                              markersize=8, label="out of memory"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def memory_figure(runs: pd.DataFrame, variants, profiles: dict) -> plt.Figure:
    return _by_seq_len(runs, variants, profiles, value=lambda ok: ok["peak_mem_bytes"].astype(float) / plots.GB,
                      ylabel="peak memory (GB, log)", title="Peak memory vs sequence length", limit=True)


def efficiency_figure(runs: pd.DataFrame, variants, profiles: dict) -> plt.Figure:
    ok = runs[runs["status"] == "ok"]
    if not ok.empty and ok["mfu"].notna().all():
        return _by_seq_len(runs, variants, profiles, value=lambda rows: rows["mfu"].astype(float) * 100,
                          ylabel="MFU (% of peak bf16, log)", title="Model FLOPs utilisation vs sequence length",
                          limit=False)
    return _by_seq_len(runs, variants, profiles, value=lambda rows: rows["achieved_tflops"].astype(float),
                      ylabel="achieved TFLOP/s (log)", title="Achieved TFLOP/s vs sequence length",
                      limit=False)


def pipeline_figure(runs: pd.DataFrame, pipeline: pd.DataFrame, variants) -> plt.Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.8), layout="constrained")
    if pipeline.empty:
        plots.note(left, "no preprocessing benchmarks")
    else:
        stages = list(dict.fromkeys(pipeline["stage"]))
        means = [pipeline.loc[pipeline["stage"] == s, "items_per_s"].mean() for s in stages]
        left.bar(range(len(stages)), means, color=sns.color_palette("colorblind")[0], width=0.6)
        for i, stage in enumerate(stages):
            jobs = pipeline[pipeline["stage"] == stage]
            left.scatter(np.full(len(jobs), i), jobs["items_per_s"], color="#222222", s=10, zorder=3)
            item = jobs["item"].iloc[0]
            left.annotate(f"{means[i]:.3g} {item}s/s\n{len(jobs)} job(s)", (i, jobs["items_per_s"].max()),
                          ha="center", va="bottom",
                          fontsize=7, xytext=(0, 3), textcoords="offset points")
        left.set_xticks(range(len(stages)), stages, fontsize=8, rotation=20 if len(stages) > 4 else 0)
        left.set_ylabel("items/s per job (wall clock)")
        left.margins(y=0.25)
    left.set_title("Preprocessing (one job per shard)", fontsize=9)
    has = runs[plots.ok(runs, "loader_img_s")] if "loader_img_s" in runs else runs.iloc[0:0]
    if has.empty:
        plots.note(right, "no trained cell recorded its input rate yet")
    else:
        palette = plots.colours(variants)
        for variant, group in has.groupby("variant"):
            right.scatter(group["throughput_img_s"].astype(float), group["loader_img_s"].astype(float),
                          color=palette[variant], label=variant, s=25)
        low = float(min(has["throughput_img_s"].min(), has["loader_img_s"].min())) / 2
        high = float(max(has["throughput_img_s"].max(), has["loader_img_s"].max())) * 2
        right.plot([low, high], [low, high], linestyle="--", color="#444444", linewidth=1)
        right.annotate("input = model", (high / 1.5, high / 1.5), ha="right", va="bottom", fontsize=7, rotation=30,
                       rotation_mode="anchor", transform_rotates_text=True)
        right.set_xscale("log")
        right.set_yscale("log")
        decades = math.log10(high / low)
        for axis in (right.xaxis, right.yaxis):
            plots.plain_log(axis, (1.0,) if decades > 2.5 else (1.0, 2.0, 5.0))
        right.set_xlim(low, high)
        right.set_ylim(low, high)
        right.set_xlabel("model throughput (images/s)")
        right.set_ylabel("input pipeline rate (images/s)")
        right.legend(fontsize=8, title="variant", title_fontsize=8)
        starved = has[has["loader_img_s"].astype(float) < has["throughput_img_s"].astype(float)]
        right.set_title(f"Input vs model, {len(has)} cells ({len(starved)} input-bound)", fontsize=9)
    return fig


def quality_figure(runs: pd.DataFrame, reference: dict, variants) -> plt.Figure:
    scored = runs[plots.ok(runs, "val_auc")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(9.5, 5.5 + 0.16 * len(scored)), 3.8), layout="constrained",
                                      width_ratios=[max(1.0, len(scored) / 12), 1])
    palette = plots.colours(variants)
    if scored.empty:
        plots.note(left, "no validation AUC: cells ran in throughput mode\n(train.mode: full trains epochs and scores)")
    else:
        labels = [f"{h} img{s}_p{p}" for h, s, p in zip(scored["hardware"], scored["image_size"], scored["patch_size"])]
        left.bar(range(len(scored)), scored["val_auc"].astype(float),
                 color=[palette[v] for v in scored["variant"]])
        left.axhline(0.5, linestyle=":", color="#444444", linewidth=1)
        left.set_xticks(range(len(scored)), labels, fontsize=6, rotation=90)
        left.set_ylim(0, 1)
        left.set_xlim(-0.7, len(scored) - 0.3)
        left.set_ylabel("validation AUC (per breast)")
        left.legend(handles=[Line2D([], [], color=palette[v], linewidth=6, label=v) for v in variants
                             if v in set(scored["variant"])], fontsize=7, loc="lower right")
    left.set_title("Validation AUC", fontsize=9)
    curves = runs[(runs["hardware"] == reference["hardware"]) & (runs["status"] == "ok")]
    if curves.empty:
        plots.note(right, f"no finished cell on {reference['hardware']}")
    else:
        # variants with the same weights and data give the same losses: later ones are drawn thinner and
        # dashed over the earlier, so both stay visible
        for k, variant in enumerate(v for v in variants if v in set(curves["variant"])):
            for i, text in enumerate(curves.loc[curves["variant"] == variant, "loss_curve"]):
                losses = json.loads(text) if isinstance(text, str) else []
                right.plot(range(1, len(losses) + 1), losses, color=palette[variant], linewidth=max(0.8, 2.6 - k),
                           linestyle=["-", "--", ":", "-."][k % 4], label=variant if i == 0 else None)
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
        right.set_xlabel("optimiser step")
        right.set_ylabel("training loss")
        right.legend(fontsize=8, title="variant", title_fontsize=8)
    right.set_title(f"Training loss of each finished cell, {reference['hardware']}", fontsize=9)
    return fig


def draw(name: str, *, runs: pd.DataFrame, pairs: pd.DataFrame | None, pipeline: pd.DataFrame | None,
         reference: dict, variants, profiles: dict) -> plt.Figure:
    """The figure ``name`` (one of :data:`FIGURES`)."""
    plots.setup()
    variants = list(variants)
    if name == "fig2_hardware":
        return hardware_figure(runs, reference, profiles)
    if name == "fig3_patch_size":
        return patch_figure(runs, reference, variants)
    if name == "fig4_flash_vs_baseline":
        return flash_figure(runs, pairs, reference, variants)
    if name == "memory":
        return memory_figure(runs, variants, profiles)
    if name == "efficiency":
        return efficiency_figure(runs, variants, profiles)
    if name == "data_pipeline":
        return pipeline_figure(runs, pipeline, variants)
    if name == "quality":
        return quality_figure(runs, reference, variants)
    raise ValueError(f"no figure {name!r}; figures: {', '.join(FIGURES)}")
