"""Snakemake adapter: rule manifest (ChestX-ray14 layout) -> mammoscale.dataset.chestxray14.main."""

from pathlib import Path

from mammoscale.dataset.chestxray14 import main
from mammoscale.logs import configure

configure(snakemake.log[0])
output, params = snakemake.output, snakemake.params
main(
    Path(snakemake.input.entries).parent,
    output.images,
    output.excluded,
    output.counts,
    split_fractions=params.split,
    seed=params.seed,
    n_shards=params.shards,
)
