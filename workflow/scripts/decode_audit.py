"""Snakemake adapter: rule decode_audit -> mammoscale.dataset.audit.main."""

from pathlib import Path

from mammoscale.dataset.audit import main
from mammoscale.logs import configure

configure(snakemake.log[0])
main(
    Path(snakemake.input.csv).parent,
    snakemake.output.audit,
    snakemake.output.counts,
    workers=snakemake.threads,
    max_pixels=snakemake.params.max_pixels,
)
