"""Where a profiled cell's step time goes: one horizontal bar per profiled step and their mean, cut by phase.

Drawn from a profile's ``breakdown.csv`` (:data:`mammoscale.files.BREAKDOWN_TABLE`, written by
``mammoscale.train.profiling``): the phases in the order the table gives them, each with its share of the mean step
in the legend. :func:`mammoscale.report.plots.save` writes it as PNG and a vector copy.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from mammoscale import files
from mammoscale.report import plots
from mammoscale.report.html import esc, image, table

LABEL_SHARE = 0.08
"""A phase's share of the mean step is written on its bar from this share up."""


def draw(steps: pd.DataFrame, cell: str) -> plt.Figure:
    """The figure of ``steps`` (``breakdown.csv``: step, phase, seconds, share) of the cell named ``cell``."""
    plots.setup()
    if steps.empty:  # the profiled run ended out of memory, or its kernel cannot run here (job.run_profile)
        fig, ax = plt.subplots(figsize=(7.5, 2.0), layout="constrained")
        plots.note(
            ax,
            f"{cell}: not profiled (the cell ended out of memory or could not run here);\nsee its profile's train.log",
        )
        return fig
    phases = list(dict.fromkeys(steps["phase"]))
    per_step = steps.pivot(index="step", columns="phase", values="seconds")[phases].sort_index()
    mean = per_step.mean()
    shares = mean / mean.sum() if mean.sum() > 0 else mean * 0
    rows = [*(f"step {step}" for step in per_step.index), "mean"]
    fig, ax = plt.subplots(figsize=(7.5, 1.8 + 0.35 * len(rows)), layout="constrained")
    left = np.zeros(len(rows))
    for colour, phase in zip(sns.color_palette("colorblind", max(3, len(phases))), phases):
        values = np.array([*per_step[phase], mean[phase]])
        ax.barh(range(len(rows)), values, left=left, color=colour, height=0.6, label=f"{phase} ({shares[phase]:.0%})")
        if shares[phase] >= LABEL_SHARE:
            ax.text(
                left[-1] + values[-1] / 2, len(rows) - 1, f"{shares[phase]:.0%}", ha="center", va="center", fontsize=7
            )
        left += values
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title(f"Where a training step's time goes: {cell}", fontsize=9)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


TOP_OPERATORS = 10
"""Operators the report lists under the breakdown figure."""


def section(figure, operators, cell: str, trace: str) -> str:
    """The report's "where the time goes" part for the reference cell: the breakdown figure (``figure``, a PNG) and
    the operators that took the most self time (``operators``, its ``operators.csv``); ``trace`` is where the full
    trace is."""
    top = files.OPERATOR_TABLE.read(operators).head(TOP_OPERATORS)
    if top.empty:
        return (
            f"<p>The reference cell ({esc(cell)}) was not profiled: its profiled run ended out of memory or could not "
            f"run here (its record and log are beside <code>{esc(trace)}</code>).</p>"
        )
    columns = {"name": "operator", "calls": "calls", "self_cpu_s": "self CPU (s)", "self_device_s": "self device (s)"}
    return (
        f'<figure id="figure-profile">{image(figure, "where the time goes")}<figcaption>Where a training step\'s '
        f"time goes in the reference cell ({esc(cell)}): each profiled step cut into data wait, forward, backward, "
        "optimiser step and gradient communication (docs/profiling.md). The whole trace, to open in Perfetto or "
        f"TensorBoard: <code>{esc(trace)}</code>.</figcaption></figure>"
        f"<p>The {TOP_OPERATORS} operators with the most self time:</p>" + table(top, columns)
    )
