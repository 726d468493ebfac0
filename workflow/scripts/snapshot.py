"""Snakemake adapter: rule snapshot -> mammoscale.report.snapshot (the report of the cells finished so far)."""

from pathlib import Path

from mammoscale.logs import configure
from mammoscale.report import snapshot

configure(snakemake.log[0])
params = snakemake.params
snapshot(Path(snakemake.output[0]).parent, cells=params.cells, variants=params.variants, runs_root=params.runs_root,
         pipeline=params.pipeline, contact_sheets=params.contact_sheets, manifest_counts=params.counts,
         preprocess_summary=params.preprocess, run_config=params.run_config, reference=params.reference,
         baseline=params.baseline, tolerance=params.tolerance, invocation=params.invocation, dpi=params.dpi,
         vector_format=params.vector_format)
