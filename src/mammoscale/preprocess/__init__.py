"""Preprocessing: from DICOM files to the tile cache, shard by shard.

- :mod:`~mammoscale.preprocess.roi`: orientation (tissue on the left) and the breast's region;
- :mod:`~mammoscale.preprocess.tiling`: resizing with the aspect kept, and the CC | MLO tile;
- :mod:`~mammoscale.preprocess.levels`: the JPEG 2000 resolution level a view is decoded at;
- :mod:`~mammoscale.preprocess.views`: stage 1, a shard's canonical views (decode, orient, crop);
- :mod:`~mammoscale.preprocess.tiles`: stage 2, a shard's S x S tiles, and a size's index;
- :mod:`~mammoscale.preprocess.summary`: decode errors, counts and decoders over the shards;
- :mod:`~mammoscale.preprocess.contact_sheet`: random tiles with their labels, to look at;
- :mod:`~mammoscale.preprocess.chain`: every step in one process (:func:`build_cache`);
- :mod:`~mammoscale.preprocess.chestxray14`: ChestX-ray14's PNGs to the same tiles, shard by shard,
  their summary, index, contact sheet, and its chain in one process.

Imports: numpy, pandas, Pillow, scipy, scikit-image, and :mod:`~mammoscale.dicom`,
:mod:`~mammoscale.dataset`, :mod:`~mammoscale.files`, :mod:`~mammoscale.cache`,
:mod:`~mammoscale.config`, :mod:`~mammoscale.processes`; never torch.
"""
