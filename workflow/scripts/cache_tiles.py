"""Snakemake adapter: rule cache_tiles (stage 2) -> mammoscale.preprocess.tiles.build_tiles."""

from mammoscale.logs import configure
from mammoscale.preprocess.tiles import build_tiles

configure(snakemake.log[0])
build_tiles(
    snakemake.input.npy,
    snakemake.input.csv,
    snakemake.output.npy,
    snakemake.output.csv,
    image_size=int(snakemake.wildcards.image_size),
    resample=snakemake.params.resample,
)
