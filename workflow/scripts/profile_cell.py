"""Snakemake adapter: rule profile_cell -> mammoscale.train.job.run_profile (a few steps of one cell, profiled)."""

from pathlib import Path

from mammoscale.logs import configure

configure(snakemake.log[0])
from mammoscale.train.job import run_profile  # noqa: E402 (after configure: a missing torch is one line in the log)

given = snakemake.params
run_profile(dict(given.cell), dict(given.launch), Path(snakemake.output.breakdown).parent)
