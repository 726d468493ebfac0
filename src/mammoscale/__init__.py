"""mammoscale: how far vision transformers scale on full-resolution mammograms.

The library behind the Snakemake study: DICOM decoding (:mod:`mammoscale.dicom`), the
synthetic RSNA-layout dataset (:mod:`mammoscale.synthetic`, drawn by
:mod:`mammoscale.phantom`) and the dataset's decode QC (:mod:`mammoscale.qc`).
"""

__version__ = "0.1.0"
