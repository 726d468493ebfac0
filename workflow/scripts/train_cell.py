"""Snakemake adapter: rule train_cell -> mammoscale.grid.run_job (one grid cell)."""

from pathlib import Path

from mammoscale.grid import run_job
from mammoscale.logs import configure

configure(snakemake.log[0])
run_job(dict(snakemake.params.cell), dict(snakemake.params.launch), Path(snakemake.output.metrics).parent)
