"""Snakemake adapter: rule preprocess_summary -> mammoscale.preprocess.summary.summarise."""

from mammoscale.logs import configure
from mammoscale.preprocess.summary import summarise

configure(snakemake.log[0])
summarise(list(snakemake.input.images), snakemake.input.excluded, snakemake.output.errors, snakemake.output.summary)
