"""The report's sections: what was run, the headline, every cell and provenance.

Data QC is :mod:`~mammoscale.report.data_qc`'s.

Each returns HTML (or sentences) computed from the tables and QC files; none types in a number.
"""

from __future__ import annotations

import pandas as pd

from mammoscale import files, records, stats
from mammoscale.plan import families
from mammoscale.plan.memory import GiB
from mammoscale.report import claims, quality, tables
from mammoscale.report.html import column_or_nulls, esc, interval, items, table
from mammoscale.report.tables import STATUS_LABEL, flags, status_label

CELL_COLUMNS = {
    "hardware": "hardware",
    "variant": "variant",
    "image_size": "image",
    "patch_size": "patch",
    "seq_len": "tokens",
    "status": "status",
    "attention_backend": "kernel",
    "throughput_img_s": "images/s",
    "throughput_ci": "images/s, 95% interval",
    "throughput_cv_pct": "windows' CV (%)",
    "step_time_s": "step (s)",
    "peak_mem_gib": "peak mem (GiB)",
    "achieved_tflops": "TFLOP/s",
    "mfu_pct": "MFU (%)",
    "input_wait_pct": "input wait (%)",
    "val_auc": "val AUC",
    "val_auc_ci": "val AUC, 95% interval",
    "val_pf1": "val pF1",
    "val_pf1_ci": "val pF1, 95% interval",
    "message": "message",
}


VARIANT_COLUMNS = {
    "variant": "variant",
    "family": "model family",
    "model": "model",
    "attention": "attention",
    "ran": "kernel that ran",
}


def kernels_ran(runs: pd.DataFrame, variant: str) -> str:
    """The attention kernel(s) observed in the cells of ``variant`` (``attention_backend``), or why none is known."""
    seen = runs.loc[runs["variant"] == variant, "attention_backend"].dropna() if "attention_backend" in runs else []
    return ", ".join(sorted(set(seen))) or "none observed yet"


def section_run(run_config: dict, runs: pd.DataFrame) -> str:
    data, grid, train = run_config["data"], run_config["grid"], run_config["train"]
    variants = pd.DataFrame(
        [
            {
                "variant": name,
                **spec,
                "model": families.model_size(spec, train["model_size"]),
                "attention": families.variant_attention(spec),
                "ran": kernels_ran(runs, name),
            }
            for name, spec in grid["variants"].items()
        ]
    )
    profiles = pd.DataFrame(
        [
            {
                "profile": name,
                **{
                    k: profile.get(k)
                    for k in (
                        "description",
                        "launcher",
                        "nodes",
                        "gpus_per_node",
                        "gpu_model",
                        "micro_batch",
                        "precision",
                        "device_memory_gib",
                        "peak_tflops",
                    )
                },
            }
            for name, profile in run_config["hardware"].items()
        ]
    )
    return (
        f"<p>Data: <b>{esc(data['source'])}</b> at <code>{esc(data['root'])}</code>. "
        f"Config files: {esc(', '.join(run_config.get('configfiles') or ['config/config.yaml']))}.</p>"
        f"<p>{esc(grid_sentence(grid, len(runs)))}</p>"
        f"<h3>Variants</h3>{table(variants, VARIANT_COLUMNS)}"
        f"<h3>Hardware profiles</h3>"
        + table(
            profiles,
            {
                "profile": "profile",
                "description": "description",
                "launcher": "launcher",
                "nodes": "nodes",
                "gpus_per_node": "GPUs/node",
                "gpu_model": "GPU model",
                "micro_batch": "micro-batch",
                "precision": "precision",
                "device_memory_gib": "device memory (GiB)",
                "peak_tflops": "peak TFLOP/s",
            },
        )
        + "<h3>Training (every cell; a profile's precision overrides train.precision)</h3>"
        + items(train, numbers=False)
    )


def grid_sentence(grid: dict, cells: int) -> str:
    """The grid in one sentence: its sizes and how its cells are made (a variant without patches, a CNN, has one
    cell per image size; a grid of those alone has no patch size at all)."""
    patchless = [name for name, spec in grid["variants"].items() if not families.has_patches(spec["family"])]
    if len(patchless) == len(grid["variants"]):  # grid.patch_sizes makes no cell
        patches, product = "none (no variant has patches)", "hardware x variant x image size"
    else:
        patches = ", ".join(map(str, grid["patch_sizes"]))
        product = "hardware x variant x image x patch where the patch divides the image" + (
            f"; {', '.join(patchless)}, without patches: one cell per image size" if patchless else ""
        )
    sizes = ", ".join(map(str, grid["image_sizes"]))
    return f"Grid: image sizes {sizes}; patch sizes {patches}; {cells} cells ({product})."


def headline(runs: pd.DataFrame, pairs: pd.DataFrame, verdicts: pd.DataFrame, comparisons: pd.DataFrame) -> list[str]:
    """The results in sentences, each computed from the tables."""
    counts = runs["status"].value_counts()
    predicted = int(((runs["status"] == records.OOM) & (runs["oom_basis"] == records.PREDICTED)).sum())
    lines = [
        f"{len(runs)} cells configured: "
        + ", ".join(
            f"{counts[s]} {STATUS_LABEL.get(s, s)}"
            + (f" ({predicted} predicted, not run)" if s == records.OOM and predicted else "")
            for s in records.RUN_STATUSES
            if s in counts
        )
        + "."
    ]
    lines += _speedup_lines(pairs) + _variant_lines(runs)
    unstable = runs[flags(runs["throughput_unstable"])] if "throughput_unstable" in runs else []
    if len(unstable):
        lines.append(
            f"{len(unstable)} cell(s) with unstable timing (windows' images/s vary by over "
            f"{stats.UNSTABLE_CV:.0%} of their mean): "
            + ", ".join(
                files.cell_name(row["hardware"], row["variant"], row["image_size"], row["patch_size"])
                for _, row in unstable.iterrows()
            )
            + "; their numbers are not ones to quote."
        )
    lines += quality.sentences(runs, comparisons)
    if len(verdicts):  # none for a task whose published numbers are a reference, not claims (CheXNet's AUROCs)
        tally = verdicts["verdict"].value_counts()
        lines.append("Published claims: " + ", ".join(f"{tally.get(v, 0)} {v}" for v in claims.VERDICTS) + ".")
    return lines


def _speedup_lines(pairs: pd.DataFrame) -> list[str]:
    """The flash speed-ups' range and the largest memory saving, in sentences (none without a pair that ran)."""
    lines = []
    ratios = pairs.dropna(subset=["throughput_ratio"])
    if not ratios.empty:
        best = ratios.loc[ratios["throughput_ratio"].idxmax()]
        worst = ratios.loc[ratios["throughput_ratio"].idxmin()]
        lines.append(
            f"Flash speed-up over the baselines: {worst['throughput_ratio']:.2f}x {_ci(worst)} "
            f"({files.cell_label(worst['image_size'], worst['patch_size'])} vs {worst['baseline_variant']}, "
            f"{worst['hardware']}) to {best['throughput_ratio']:.2f}x {_ci(best)} "
            f"({files.cell_label(best['image_size'], best['patch_size'])} vs {best['baseline_variant']}, "
            f"{best['hardware']}), over {len(ratios)} "
            f"pairs that both ran ({_how_sure(ratios)})."
        )
        memory = ratios.dropna(subset=["memory_ratio"])
        if not memory.empty:
            top = memory.loc[memory["memory_ratio"].idxmax()]
            lines.append(
                f"Largest memory saving: the baseline {top['baseline_variant']} used "
                f"{top['memory_ratio']:.2f}x the peak memory of flash at "
                f"{files.cell_label(top['image_size'], top['patch_size'])} ({int(top['seq_len']):,} tokens)."
            )
    return lines


def _variant_lines(runs: pd.DataFrame) -> list[str]:
    """Each variant's largest cell that ran: its longest sequence (a ViT), or its largest image (a CNN)."""
    lines = []
    for variant, group in runs.groupby("variant", sort=False):
        fitted = group[group["status"] == records.OK]
        oom = group[group["status"] == records.OOM]
        if fitted.empty:
            continue
        if tables.patched(group).all():
            lines.append(
                f"{variant}: longest sequence that ran {int(fitted['seq_len'].max()):,} tokens"
                + (f"; out of memory from {int(oom['seq_len'].min()):,} tokens" if not oom.empty else "")
                + "."
            )
        else:  # a CNN: no tokens, its cells are its image sizes
            lines.append(
                f"{variant}: largest image that ran {files.size_label(fitted['image_size'].max())}"
                + (f"; out of memory from {files.size_label(oom['image_size'].min())}" if not oom.empty else "")
                + "."
            )
    return lines


def _how_sure(ratios: pd.DataFrame) -> str:
    """Where the speed-ups' intervals come from, or why there are none."""
    if ratios.get("throughput_ratio_ci_low", pd.Series(dtype=float)).notna().any():
        return f"{stats.CONFIDENCE:.0%} bootstrap intervals over timing windows"
    return f"no intervals: a cell needs {stats.MIN_WINDOWS} timing windows for one (train.timing_windows)"


def _ci(pair) -> str:
    return interval(pair.get("throughput_ratio_ci_low"), pair.get("throughput_ratio_ci_high"))


def cell_rows(runs: pd.DataFrame) -> pd.DataFrame:
    rows = runs.copy()
    rows["peak_mem_gib"] = rows["peak_mem_bytes"].astype(float) / GiB
    rows["mfu_pct"] = rows["mfu"].astype(float) * 100
    rows["input_wait_pct"] = rows["input_wait_fraction"].astype(float) * 100
    rows["throughput_cv_pct"] = column_or_nulls(rows, "throughput_cv").astype(float) * 100
    for name, low, high in (
        ("throughput_ci", "throughput_ci_low_img_s", "throughput_ci_high_img_s"),
        ("val_auc_ci", "val_auc_ci_low", "val_auc_ci_high"),
        ("val_pf1_ci", "val_pf1_ci_low", "val_pf1_ci_high"),
    ):
        rows[name] = [
            interval(a, b, ".3g", None) for a, b in zip(column_or_nulls(rows, low), column_or_nulls(rows, high))
        ]
    unstable = flags(column_or_nulls(rows, "throughput_unstable"))
    rows.loc[unstable, "throughput_ci"] = [
        f"{ci or 'no interval'}, unstable" for ci in rows.loc[unstable, "throughput_ci"]
    ]
    rows["status"] = [status_label(status, basis) for status, basis in zip(rows["status"], rows["oom_basis"])]
    return rows


def rerun_commands(row: pd.Series, invocation: str) -> str:
    target = f"{row['run_dir']}/{files.METRICS}"
    profile = "--profile slurm" if pd.notna(row.get("env.slurm_job_id")) else "--cores all"
    return (
        f"<code>{esc(invocation.format(profile=profile))} --force {esc(target)}</code><br />"
        f"<code>python -m mammoscale.train --cell {esc(row['run_dir'])}/{files.CELL_SETTINGS} "
        f"--out {esc(row['run_dir'])}</code>"
    )


def _gpus(row: pd.Series) -> str:
    slurm, cuda = esc(row.get("env.slurm_job_gpus")), esc(row.get("env.cuda_visible_devices"))
    return f"{slurm or '-'} / {cuda or '-'}" if slurm or cuda else ""


def _short(commit) -> str | None:
    """A commit as 12 hex digits (and ``+dirty``); the full one stays in the cell's title."""
    if not isinstance(commit, str):
        return None
    head, plus, rest = commit.partition("+")
    return head[:12] + plus + rest


def preprocessing_versions(preprocess: dict) -> dict:
    """What the preprocessing ran with: its packages, and each decoder with the images it decoded."""
    versions = preprocess.get("versions", {})
    shown = {f"{name}": value for name, value in versions.items() if name not in ("platform", "slurm_job_id")}
    decoders = preprocess.get("decoders", {})
    if decoders:
        shown["decoders"] = ", ".join(f"{name} ({count:,} images)" for name, count in sorted(decoders.items()))
    return shown


def section_provenance(runs: pd.DataFrame, invocation: str, preprocess: dict) -> str:
    ran = runs[runs["status"] != records.MISSING]
    versions = {}
    for column, title in (
        ("env.python", "Python"),
        ("env.torch", "torch"),
        ("env.cuda", "CUDA"),
        ("env.cudnn", "cuDNN"),
        ("env.x_transformers", "x-transformers"),
        ("env.transformers", "transformers"),
        ("env.flash_attn", "flash-attn"),
        ("env.horovod", "Horovod"),
        ("env.mammoscale", "mammoscale"),
        ("env.git_commit", "git commit"),
        ("env.devices", "devices"),
        ("env.host", "hosts"),
    ):
        if column in ran:
            values = sorted({str(v) for v in ran[column].dropna()})
            versions[title] = ", ".join(values) if values else "-"
    rows = runs.copy()
    rows["rerun"] = [rerun_commands(row, invocation) for _, row in rows.iterrows()]
    head = "".join(
        f"<th>{t}</th>"
        for t in ("cell", "status", "SLURM job", "GPUs (SLURM / CUDA)", "host", "commit", "rerun this cell")
    )
    body = "".join(
        f"<tr><td>{esc(files.cell_name(r['hardware'], r['variant'], r['image_size'], r['patch_size']))}</td>"
        f"<td>{esc(r['status'])}</td><td>{esc(r.get('env.slurm_job_id'))}</td>"
        f"<td>{_gpus(r)}</td><td>{esc(r.get('env.host'))}</td>"
        f'<td title="{esc(r.get("env.git_commit"))}">{esc(_short(r.get("env.git_commit")))}</td>'
        f"<td>{r['rerun']}</td></tr>"
        for _, r in rows.iterrows()
    )
    pre = preprocessing_versions(preprocess)
    return (
        (
            ("<p>Versions and devices of the cells that ran:</p>" + items(versions))
            if versions
            else "<p>No cell has run yet.</p>"
        )
        + (
            ("<p>Versions the preprocessing (stage 1 and 2) ran with:</p>" + items(pre, numbers=False))
            if pre
            else "<p>No preprocessing summary yet.</p>"
        )
        + f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


PLAN_COLUMNS = {
    "hardware": "hardware",
    "variant": "variant",
    "image_size": "image",
    "patch_size": "patch",
    "seq_len": "tokens",
    "mode": "mode",
    "micro_batch": "micro-batch (planned)",
    "micro_batch_used": "micro-batch (trained)",
    "grad_accum": "accumulation",
    "predicted_gib": "predicted peak (GiB)",
    "measured_gib": "measured peak (GiB)",
    "limit_gib": "allowed (GiB)",
    "fits": "fits",
    "data_on_device": "split held on",
    "gpu_hours": "GPU-hours (predicted)",
    "predicted_hours": "hours (predicted)",
    "time_limit_hours": "time limit (h)",
    "energy_kj": "energy (kJ, measured)",
    "energy_source": "energy from",
}


def _held_on(value) -> str:
    """plan.csv's ``data_on_device`` (True, False, or empty: the device decides) as where the split lives."""
    if pd.isna(value) or value == "":
        return "decided on the device"
    return "device" if str(value) == "True" else "host (loader)"


def section_plan(plan: pd.DataFrame | None, runs: pd.DataFrame) -> str:
    """Each cell's plan before it ran (plan.csv) beside what it did: micro-batch, predicted and measured
    peak memory, and the predicted cost."""
    if plan is None or plan.empty:
        return "<p>No plan yet: <code>snakemake plan</code> writes results/tables/plan.csv.</p>"
    key = ["hardware", "variant", "image_size", "patch_size"]
    ran = runs.reindex(columns=[*key, "micro_batch", "peak_mem_bytes", "energy_j", "energy_source"])
    ran = ran.rename(columns={"micro_batch": "micro_batch_used"})
    rows = plan.merge(ran, on=key, how="left")
    rows["predicted_gib"] = rows["predicted_peak_bytes"].astype(float) / GiB
    rows["measured_gib"] = rows["peak_mem_bytes"].astype(float) / GiB
    rows["limit_gib"] = rows["memory_limit_bytes"].astype(float) / GiB
    rows["energy_kj"] = rows["energy_j"].astype(float) / 1000
    rows["fits"] = rows["fits"].map({True: "yes", False: "predicted OOM"})
    rows["data_on_device"] = rows["data_on_device"].map(_held_on)
    submitted = rows[rows["submitted"].astype(bool)]
    runs = submitted["runs"].astype(float).fillna(1) if "runs" in submitted else 1  # a plan.csv from before seeds
    hours = (submitted["gpu_hours"] * runs).dropna()
    oom = int((rows["fits"] == "predicted OOM").sum())
    lines = [
        f"{len(rows)} cells planned before any ran: {len(rows) - oom} fit their device at the planned micro-batch, "
        f"{oom} predicted out of memory even at micro-batch 1 ({oom - (len(rows) - len(submitted))} of them "
        "submitted anyway)."
    ]
    if not hours.empty:
        lines.append(
            f"Predicted cost of the {len(hours)} submitted GPU cells: {hours.sum():,.1f} GPU-hours at "
            f"{float(plan['mfu'].iloc[0]):.0%} MFU of each profile's peak (every seed of a quality cell counted)."
        )
    text = "".join(f"<p>{esc(line)}</p>" for line in lines)
    return text + table(rows, PLAN_COLUMNS)
