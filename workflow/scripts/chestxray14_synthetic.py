"""Snakemake adapter: rule synthetic_data (ChestX-ray14 layout) -> mammoscale.synthetic.chestxray14.generate."""

from pathlib import Path

from mammoscale.logs import configure
from mammoscale.synthetic.chestxray14 import generate

configure(snakemake.log[0])
params = snakemake.params
generate(
    Path(snakemake.output.entries).parent,
    n_patients=params.n_patients,
    image_size=params.image_size,
    images_per_patient=tuple(params.images_per_patient),
    test_fraction=params.test_fraction,
    seed=params.seed,
    overwrite=True,
)
