"""The data pipeline and model quality: preprocessing jobs' rates, input against model rate, AUC and losses."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from mammoscale.files import cell_label
from mammoscale.records import OK
from mammoscale.report import plots


def pipeline_figure(runs: pd.DataFrame, pipeline: pd.DataFrame, variants) -> plt.Figure:
    """Items per second of each preprocessing job (left); input pipeline rate against model rate (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.8), layout="constrained")
    _preprocessing(left, pipeline)
    has = runs[plots.ok(runs, "loader_img_s")] if "loader_img_s" in runs else runs.iloc[0:0]
    if has.empty:
        plots.note(right, "no trained cell recorded its input rate yet")
    else:
        _input_vs_model(right, has, plots.colours(variants))
    return fig


def _preprocessing(ax, pipeline: pd.DataFrame) -> None:
    ax.set_title("Preprocessing (one job per shard)", fontsize=9)
    if pipeline.empty:
        plots.note(ax, "no preprocessing benchmarks")
        return
    stages = list(dict.fromkeys(pipeline["stage"]))
    means = [pipeline.loc[pipeline["stage"] == s, "items_per_s"].mean() for s in stages]
    ax.bar(range(len(stages)), means, color=sns.color_palette("colorblind")[0], width=0.6)
    for i, stage in enumerate(stages):
        jobs = pipeline[pipeline["stage"] == stage]
        ax.scatter(np.full(len(jobs), i), jobs["items_per_s"], color="#222222", s=10, zorder=3)
        ax.annotate(
            f"{means[i]:.3g} {jobs['item'].iloc[0]}s/s\n{len(jobs)} job(s)",
            (i, jobs["items_per_s"].max()),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax.set_xticks(range(len(stages)), stages, fontsize=8, rotation=20 if len(stages) > 4 else 0)
    ax.set_ylabel("items/s per job (wall clock)")
    ax.margins(y=0.25)


def _input_vs_model(ax, has: pd.DataFrame, palette: dict) -> None:
    """Each cell's input rate against its model rate; points above the diagonal did not starve."""
    for variant, group in has.groupby("variant"):
        ax.scatter(
            group["throughput_img_s"].astype(float),
            group["loader_img_s"].astype(float),
            color=palette[variant],
            label=variant,
            s=25,
        )
    low = float(min(has["throughput_img_s"].min(), has["loader_img_s"].min())) / 2
    high = float(max(has["throughput_img_s"].max(), has["loader_img_s"].max())) * 2
    ax.plot([low, high], [low, high], linestyle="--", color="#444444", linewidth=1)
    ax.annotate(
        "input = model",
        (high / 1.5, high / 1.5),
        ha="right",
        va="bottom",
        fontsize=7,
        rotation=30,
        rotation_mode="anchor",
        transform_rotates_text=True,
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    decades = math.log10(high / low)
    for axis in (ax.xaxis, ax.yaxis):
        plots.plain_log(axis, (1.0,) if decades > 2.5 else (1.0, 2.0, 5.0))
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("model throughput (images/s)")
    ax.set_ylabel("input pipeline rate (images/s)")
    ax.legend(fontsize=8, title="variant", title_fontsize=8)
    starved = has[has["loader_img_s"].astype(float) < has["throughput_img_s"].astype(float)]
    ax.set_title(f"Input vs model, {len(has)} cells ({len(starved)} input-bound)", fontsize=9)


def quality_figure(runs: pd.DataFrame, reference: dict, variants) -> plt.Figure:
    scored = runs[plots.ok(runs, "val_auc")]
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(max(9.5, 5.5 + 0.16 * len(scored)), 3.8),
        layout="constrained",
        width_ratios=[max(1.0, len(scored) / 12), 1],
    )
    palette = plots.colours(variants)
    _auc_panel(left, scored, palette, variants)
    left.set_title("Validation AUC", fontsize=9)
    curves = runs[(runs["hardware"] == reference["hardware"]) & (runs["status"] == OK)]
    if curves.empty:
        plots.note(right, f"no finished cell on {reference['hardware']}")
    else:
        # variants with the same weights and data give the same losses: later ones are drawn thinner and
        # dashed over the earlier, so both stay visible
        for k, variant in enumerate(v for v in variants if v in set(curves["variant"])):
            for i, text in enumerate(curves.loc[curves["variant"] == variant, "loss_curve"]):
                losses = json.loads(text) if isinstance(text, str) else []
                right.plot(
                    range(1, len(losses) + 1),
                    losses,
                    color=palette[variant],
                    linewidth=max(0.8, 2.6 - k),
                    linestyle=["-", "--", ":", "-."][k % 4],
                    label=variant if i == 0 else None,
                )
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
        right.set_xlabel("optimiser step")
        right.set_ylabel("training loss")
        right.legend(fontsize=8, title="variant", title_fontsize=8)
    right.set_title(f"Training loss of each finished cell, {reference['hardware']}", fontsize=9)
    return fig


def _auc_panel(ax, scored: pd.DataFrame, palette: dict, variants) -> None:
    """Each scored cell's validation AUC with its interval over patients; chance dashed."""
    if scored.empty:
        plots.note(ax, "no validation AUC: cells ran in throughput mode\n(train.mode: full trains epochs and scores)")
    else:
        labels = [
            f"{h} {cell_label(s, p)}" for h, s, p in zip(scored["hardware"], scored["image_size"], scored["patch_size"])
        ]
        errors = [plots.interval(row, "val_auc", "val_auc_ci_low", "val_auc_ci_high") for _, row in scored.iterrows()]
        below = [error[0][0] if error else 0.0 for error in errors]
        above = [error[1][0] if error else 0.0 for error in errors]
        ax.bar(
            range(len(scored)),
            scored["val_auc"].astype(float),
            color=[palette[v] for v in scored["variant"]],
            yerr=[below, above] if any(errors) else None,
            error_kw=plots.ERROR_BARS,
        )
        ax.axhline(0.5, linestyle=":", color="#444444", linewidth=1)
        ax.set_xticks(range(len(scored)), labels, fontsize=6, rotation=90)
        ax.set_ylim(0, 1)
        ax.set_xlim(-0.7, len(scored) - 0.3)
        ax.set_ylabel("validation AUC (per breast, 95% interval)")
        ax.legend(
            handles=[
                Line2D([], [], color=palette[v], linewidth=6, label=v) for v in variants if v in set(scored["variant"])
            ],
            fontsize=7,
            loc="lower right",
        )
