"""Snakemake adapter: rule aggregate -> mammoscale.aggregate.write_tables (runs.csv, speedups.csv)."""

from mammoscale.aggregate import runs_root_of, write_tables
from mammoscale.logs import configure

configure(snakemake.log[0])
write_tables(snakemake.params.cells, snakemake.params.variants, runs_root_of(snakemake.input),
             snakemake.output.runs, snakemake.output.speedups)
