"""Snakemake adapter: rule pipeline_table -> mammoscale.report.tables.pipeline_table (pipeline.csv)."""

from mammoscale import files
from mammoscale.logs import configure
from mammoscale.report.tables import pipeline_table

configure(snakemake.log[0])
jobs = snakemake.params.jobs
files.PIPELINE_TABLE.write(pipeline_table(jobs["stage1"], jobs["stage2"]), snakemake.output[0])
