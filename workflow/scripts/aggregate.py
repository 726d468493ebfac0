"""Snakemake adapter: rule aggregate -> mammoscale.report.tables.write_tables (runs, speedups, quality, findings)."""

from mammoscale.logs import configure
from mammoscale.report.tables import write_tables

configure(snakemake.log[0])
params = snakemake.params
write_tables(
    params.cells,
    params.variants,
    params.runs_root,
    snakemake.output.runs,
    snakemake.output.speedups,
    snakemake.output.quality,
    snakemake.output.findings,
    seeds=params.seeds,
)
