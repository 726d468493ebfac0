"""Snakemake adapter: rule cache_index -> check decode failures, then mammoscale.preprocess.tiles.gather_index."""

from mammoscale.logs import configure
from mammoscale.preprocess.summary import check_failures
from mammoscale.preprocess.tiles import gather_index

configure(snakemake.log[0])
check_failures(
    snakemake.input.summary, snakemake.input.errors, max_failure_fraction=snakemake.params.max_failure_fraction
)
gather_index(
    snakemake.input.tables,
    snakemake.output.index,
    snakemake.input.arrays,
    snakemake.output.check,
    breasts_csv=snakemake.input.breasts,
    decode_errors_csv=snakemake.input.errors,
)
