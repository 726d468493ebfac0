"""Snakemake adapter: rule synthetic_data -> mammoscale.synthetic.generate."""

from pathlib import Path

from mammoscale.logs import configure
from mammoscale.synthetic import generate

configure(snakemake.log[0])
generate(
    Path(snakemake.output.csv).parent,
    n_patients=snakemake.params.n_patients,
    image_shape=tuple(snakemake.params.image_shape),
    seed=snakemake.params.seed,
    cancer_rate=snakemake.params.cancer_rate,
    workers=snakemake.threads,
    overwrite=True,
)
