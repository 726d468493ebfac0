"""Snakemake adapter: rule aggregate -> mammoscale.aggregate.write_tables (runs.csv, speedups.csv)."""

from mammoscale.aggregate import write_tables
from mammoscale.logs import configure

configure(snakemake.log[0])
write_tables(snakemake.params.cells, snakemake.params.variants, snakemake.params.runs_root,
             snakemake.output.runs, snakemake.output.speedups)
