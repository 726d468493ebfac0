"""Snakemake adapter: rule decode_qc -> mammoscale.qc.main."""

from pathlib import Path

from mammoscale.logs import configure
from mammoscale.qc import main

configure(snakemake.log[0])
main(
    Path(snakemake.input.csv).parent,
    snakemake.output.summary,
    snakemake.output.counts,
    workers=snakemake.threads,
    max_pixels=snakemake.params.max_pixels,
)
