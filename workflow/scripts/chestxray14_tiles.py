"""Snakemake adapter: rule cache_tiles (ChestX-ray14 layout) -> mammoscale.preprocess.chestxray14.build_shard."""

from mammoscale import files
from mammoscale.logs import configure
from mammoscale.preprocess.chestxray14 import build_shard

configure(snakemake.log[0])
params, shard = snakemake.params, snakemake.wildcards.shard
build_shard(
    params.data_root,
    snakemake.input.images,
    int(shard),
    files.root_of(snakemake.output.decoded, files.CHEST_DECODED, shard=shard),
    image_sizes=params.image_sizes,
    resample=params.resample,
    max_pixels=params.max_pixels,
)
