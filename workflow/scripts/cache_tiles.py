"""Snakemake adapter: rule cache_tiles (stage 2) -> mammoscale.preprocess.build_tiles."""

from mammoscale.logs import configure
from mammoscale.preprocess import build_tiles

configure(snakemake.log[0])
build_tiles(
    snakemake.input.npy,
    snakemake.input.csv,
    snakemake.output.npy,
    snakemake.output.csv,
    image_size=int(snakemake.wildcards.size),
    resample=snakemake.params.resample,
)
