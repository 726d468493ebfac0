"""Snakemake adapter: rule scaling_table -> mammoscale.report.scaling.write_table (results/tables/scaling.csv)."""

from mammoscale.logs import configure
from mammoscale.report.scaling import write_table

configure(snakemake.log[0])
params = snakemake.params
write_table(
    snakemake.input.runs,
    snakemake.output[0],
    profiles=params.profiles,
    epochs=params.epochs,
    train_examples=params.train_examples,
)
