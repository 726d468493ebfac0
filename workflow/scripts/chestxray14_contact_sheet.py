"""Snakemake adapter: rule contact_sheet (ChestX-ray14) -> mammoscale.preprocess.chestxray14.draw_contact_sheet."""

from mammoscale.logs import configure
from mammoscale.preprocess.chestxray14 import draw_contact_sheet

configure(snakemake.log[0])
draw_contact_sheet(
    snakemake.params.cache_root,
    int(snakemake.wildcards.image_size),
    snakemake.output[0],
    n=snakemake.params.tiles,
    seed=snakemake.params.seed,
)
