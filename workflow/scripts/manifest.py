"""Snakemake adapter: rule manifest -> mammoscale.manifest.main."""

from pathlib import Path

from mammoscale.logs import configure
from mammoscale.manifest import main

configure(snakemake.log[0])
main(
    Path(snakemake.input.csv).parent,
    snakemake.output.breasts,
    snakemake.output.excluded,
    snakemake.output.counts,
    split_fractions=snakemake.params.split,
    seed=snakemake.params.seed,
    n_shards=snakemake.params.shards,
)
