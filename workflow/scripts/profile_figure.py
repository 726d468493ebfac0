"""Snakemake adapter: rule profile_figure -> mammoscale.report.breakdown.draw, then plots.save (PNG and vector)."""

from mammoscale import files
from mammoscale.logs import configure
from mammoscale.report import breakdown, plots

configure(snakemake.log[0])
fig = breakdown.draw(
    files.BREAKDOWN_TABLE.read(snakemake.input[0]), files.fill(files.CELL, **dict(snakemake.wildcards))
)
plots.save(fig, snakemake.output.png, snakemake.output.vector, dpi=snakemake.params.dpi)
