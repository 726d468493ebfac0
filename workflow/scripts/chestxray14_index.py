"""Snakemake adapter: rule cache_index (ChestX-ray14 layout) -> check the losses, then
mammoscale.preprocess.chestxray14.gather_index."""

from mammoscale.logs import configure
from mammoscale.preprocess.chestxray14 import gather_index
from mammoscale.preprocess.summary import check_failures

configure(snakemake.log[0])
check_failures(
    snakemake.input.summary, snakemake.input.errors, max_failure_fraction=snakemake.params.max_failure_fraction
)
gather_index(
    snakemake.input.tables,
    snakemake.output.index,
    snakemake.input.arrays,
    snakemake.output.check,
    images_csv=snakemake.input.images,
    decode_errors_csv=snakemake.input.errors,
)
