"""Snakemake adapter: rule snapshot -> mammoscale.report.snapshot.snapshot (the cells finished so far)."""

from pathlib import Path

from mammoscale.logs import configure
from mammoscale.report.page import Context
from mammoscale.report.snapshot import snapshot

configure(snakemake.log[0])
p = snakemake.params
snapshot(
    Path(snakemake.output[0]).parent,
    cells=p.cells,
    variants=p.variants,
    runs_root=p.runs_root,
    pipeline=p.pipeline,
    contact_sheets=p.contact_sheets,
    manifest_counts=p.counts,
    preprocess_summary=p.preprocess,
    context=Context(**p.context),
    dpi=p.dpi,
    vector_format=p.vector_format,
    profile=p.profile,
)
