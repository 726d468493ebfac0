"""Snakemake adapter: rule train_cell -> mammoscale.train.run_job (one grid cell)."""

from pathlib import Path

from mammoscale.logs import configure

configure(snakemake.log[0])
from mammoscale.train import run_job  # noqa: E402 (after configure: a missing torch is one line in the log)

run_job(dict(snakemake.params.cell), dict(snakemake.params.launch), Path(snakemake.output.metrics).parent)
