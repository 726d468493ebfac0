"""Snakemake adapter: rule synthetic_data -> mammoscale.synthetic.generate."""

from pathlib import Path

from mammoscale.logs import configure
from mammoscale.synthetic import generate

configure(snakemake.log[0])
params = snakemake.params
generate(
    Path(snakemake.output.csv).parent,
    n_patients=params.n_patients,
    image_shape=tuple(params.image_shape),
    seed=params.seed,
    cancer_rate=params.cancer_rate,
    workers=snakemake.threads,
    overwrite=True,
)
