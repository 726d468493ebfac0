"""Snakemake adapter: rule plan -> mammoscale.plan.sizing.write (plan.csv, predicted-OOM records)."""

from mammoscale.logs import configure
from mammoscale.plan.sizing import write

configure(snakemake.log[0])
write(snakemake.params.rows, snakemake.output.table, snakemake.params.records)
