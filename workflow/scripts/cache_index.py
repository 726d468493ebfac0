"""Snakemake adapter: rule cache_index -> check decode failures, then mammoscale.preprocess.gather_index."""

from mammoscale.logs import configure
from mammoscale.preprocess import check_failures, gather_index

configure(snakemake.log[0])
check_failures(snakemake.input.summary, snakemake.input.errors,
               max_failure_fraction=snakemake.params.max_failure_fraction)
gather_index([p for p in snakemake.input.shards if p.endswith(".csv")], snakemake.output.index)
