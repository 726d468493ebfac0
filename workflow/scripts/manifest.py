"""Snakemake adapter: rule manifest -> mammoscale.dataset.manifest.main."""

from pathlib import Path

from mammoscale.dataset.manifest import main
from mammoscale.logs import configure

configure(snakemake.log[0])
output, params = snakemake.output, snakemake.params
main(
    Path(snakemake.input.csv).parent,
    output.breasts,
    output.excluded,
    output.counts,
    split_fractions=params.split,
    seed=params.seed,
    n_shards=params.shards,
)
