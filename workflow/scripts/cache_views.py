"""Snakemake adapter: rule cache_views (stage 1) -> mammoscale.preprocess.views.build_views."""

from pathlib import Path

from mammoscale.logs import configure
from mammoscale.preprocess.views import ViewSettings, build_views

configure(snakemake.log[0])
params = snakemake.params
settings = ViewSettings.from_config({"preprocess": params.preprocess, "decode": params.decode}, params.canonical_size)
build_views(
    Path(snakemake.input.csv).parent,
    snakemake.input.breasts,
    int(snakemake.wildcards.shard),
    snakemake.output.npy,
    snakemake.output.csv,
    snakemake.output.images,
    settings=settings,
    workers=snakemake.threads,
)
