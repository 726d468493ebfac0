"""Snakemake adapter: rule pipeline_table -> mammoscale.aggregate.pipeline_table (pipeline.csv)."""

from mammoscale.aggregate import pipeline_table
from mammoscale.logs import configure

configure(snakemake.log[0])
given = snakemake.input
pipeline_table(list(zip(given.images, given.views_benchmarks)),
               list(zip(given.tiles, given.tiles_benchmarks))).to_csv(snakemake.output[0], index=False)
