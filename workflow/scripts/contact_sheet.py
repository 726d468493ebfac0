"""Snakemake adapter: rule contact_sheet -> mammoscale.contact_sheet.draw."""

from pathlib import Path

from mammoscale.contact_sheet import draw
from mammoscale.logs import configure

configure(snakemake.log[0])
index = Path(snakemake.input.index)
draw(index.parent.parent, int(snakemake.wildcards.size), snakemake.output[0],
     n=snakemake.params.tiles, seed=snakemake.params.seed)
