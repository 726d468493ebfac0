"""mammoscale: how far vision transformers scale on full-resolution mammograms.

The library behind the Snakemake study, one subpackage per stage, in the order data flows:

- :mod:`mammoscale.dicom`: a DICOM file to the normalised image (``decode``);
- :mod:`mammoscale.synthetic`: the embedded synthetic dataset (``generate``);
- :mod:`mammoscale.dataset`: the RSNA layout as breasts (the manifest), and the decode audit;
- :mod:`mammoscale.preprocess`: stage 1 (views), stage 2 (tiles), their summary and QC;
- :mod:`mammoscale.cache`: the tile cache (``open_tiles``), the contract between the two sides;
- :mod:`mammoscale.plan`: the study, the grid and each cell's settings, torch-free;
- :mod:`mammoscale.train`: one cell (``run_cell``), everything that needs torch;
- :mod:`mammoscale.report`: tables, claims, figures and the standalone report.

Shared by all: :mod:`mammoscale.files` (every path, table and dtype: one owner),
:mod:`mammoscale.config` (the schema and its defaults), :mod:`mammoscale.errors`,
:mod:`mammoscale.logs` and :mod:`mammoscale.provenance`.
"""

__version__ = "0.1.0"
