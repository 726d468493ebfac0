"""The embedded synthetic dataset: mammogram-like images in the RSNA layout, made here, nothing downloaded.

- :mod:`~mammoscale.synthetic.phantom`: draws a breast view (tissue, pectoral muscle, label,
  artefacts, lesions) as brightness in [0, 1];
- :mod:`~mammoscale.synthetic.encode`: turns it into a DICOM dataset with the header and
  encoding variations of real sets;
- :mod:`~mammoscale.synthetic.generate`: the whole set (:func:`generate`) and
  ``mammoscale-synthetic``;
- :mod:`~mammoscale.synthetic.chestxray14`: chest phantoms with findings, in NIH's ChestX-ray14
  layout (``data.source: synthetic-chestxray14``).

Imports: numpy, pandas, pydicom and its encoders, Pillow; of mammoscale, :mod:`~mammoscale.files`,
:mod:`~mammoscale.config` and :mod:`~mammoscale.logs`.
"""

from mammoscale.synthetic.encode import TRANSFER_SYNTAXES, VARIATIONS, make_dataset, mammogram_header
from mammoscale.synthetic.generate import (
    EXTRA_VIEWS,
    REALISTIC_SHAPES,
    ImageSpec,
    cli,
    generate,
    parse_shape,
    plan,
    write_image,
)

__all__ = [
    "EXTRA_VIEWS",
    "REALISTIC_SHAPES",
    "TRANSFER_SYNTAXES",
    "VARIATIONS",
    "ImageSpec",
    "cli",
    "generate",
    "make_dataset",
    "mammogram_header",
    "parse_shape",
    "plan",
    "write_image",
]
