"""Snakemake adapter: rule study_report -> mammoscale.report.build (results/report/report.html)."""

from pathlib import Path

from mammoscale.logs import configure
from mammoscale.report import build

configure(snakemake.log[0])
given, params = snakemake.input, snakemake.params
build(snakemake.output[0], runs_csv=given.runs, speedups_csv=given.speedups,
      figure_files={Path(path).stem: path for path in given.figures},
      contact_sheets={int(Path(path).stem.rsplit("img", 1)[1]): path for path in given.contact_sheets},
      manifest_counts=given.counts, preprocess_summary=given.preprocess, run_config=params.run_config,
      reference=params.reference, baseline=params.baseline, tolerance=params.tolerance,
      invocation=params.invocation)
