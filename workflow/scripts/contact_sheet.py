"""Snakemake adapter: rule contact_sheet -> mammoscale.preprocess.contact_sheet.draw."""

from mammoscale.logs import configure
from mammoscale.preprocess.contact_sheet import draw

configure(snakemake.log[0])
draw(
    snakemake.params.cache_root,
    int(snakemake.wildcards.image_size),
    snakemake.output[0],
    n=snakemake.params.tiles,
    seed=snakemake.params.seed,
)
