"""Snakemake adapter: rule figure -> mammoscale.report.figures.draw, then plots.save (PNG and vector)."""

from mammoscale import files
from mammoscale.logs import configure
from mammoscale.report import figures, plots

configure(snakemake.log[0])
given, params = snakemake.input, snakemake.params
pipeline = given.get("pipeline")  # the data-pipeline figure's input alone
fig = figures.draw(
    snakemake.wildcards.figure,
    runs=files.read_runs(given.runs),
    pairs=files.SPEEDUP_TABLE.read(given.speedups),
    pipeline=files.PIPELINE_TABLE.read(pipeline) if pipeline else None,
    reference=params.reference,
    variants=params.variants,
    profiles=params.profiles,
)
plots.save(fig, snakemake.output.png, snakemake.output.vector, dpi=params.dpi)
