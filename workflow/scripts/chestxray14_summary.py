"""Snakemake adapter: rule preprocess_summary (ChestX-ray14 layout) -> mammoscale.preprocess.chestxray14.summarise."""

from mammoscale.logs import configure
from mammoscale.preprocess.chestxray14 import summarise

configure(snakemake.log[0])
summarise(snakemake.input.decoded, snakemake.input.excluded, snakemake.output.errors, snakemake.output.summary)
