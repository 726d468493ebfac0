"""Snakemake adapter: rule figure -> mammoscale.figures.draw + save (one figure, PNG and vector)."""

import pandas as pd

from mammoscale import aggregate, figures
from mammoscale.logs import configure

configure(snakemake.log[0])
given = snakemake.input
fig = figures.draw(snakemake.wildcards.figure, runs=aggregate.read_runs(given.runs),
                   pairs=pd.read_csv(given.speedups, dtype={"hardware": str}),
                   pipeline=pd.read_csv(given.pipeline) if "pipeline" in given.keys() else None,
                   reference=snakemake.params.reference, variants=snakemake.params.variants,
                   profiles=snakemake.params.profiles)
figures.save(fig, snakemake.output.png, snakemake.output.vector, dpi=snakemake.params.dpi)
