"""Snakemake adapter: rule cache_views (stage 1) -> mammoscale.preprocess.build_views."""

from pathlib import Path

from mammoscale.logs import configure
from mammoscale.preprocess import ViewSettings, build_views
from mammoscale.roi import RoiSettings

configure(snakemake.log[0])
build_views(
    Path(snakemake.input.csv).parent,
    snakemake.input.breasts,
    int(snakemake.wildcards.shard),
    snakemake.output.npy,
    snakemake.output.csv,
    snakemake.output.images,
    settings=ViewSettings(
        canonical_size=snakemake.params.canonical_size,
        roi=RoiSettings(**snakemake.params.roi),
        trust_pixels_for_flip=snakemake.params.trust_pixels_for_flip,
        resample=snakemake.params.resample,
        max_pixels=snakemake.params.max_pixels,
    ),
    workers=snakemake.threads,
)
