"""Snakemake adapter: rule preprocess_qc -> mammoscale.preprocess.gather_qc."""

from mammoscale.logs import configure
from mammoscale.preprocess import gather_qc

configure(snakemake.log[0])
gather_qc(list(snakemake.input.images), snakemake.output.errors, snakemake.output.summary)
