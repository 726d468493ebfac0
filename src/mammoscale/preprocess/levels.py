"""Which resolution level stage 1 decodes a view at: the coarsest that still gives the canonical view
at least its own pixel count across the breast crop.

A 384 or 512 tile needs half-tiles of at most 512 x 256 pixels, while the breast crop of an RSNA
mammogram is 1,500 to 3,000 pixels tall: most of a full-resolution decode is thrown away by the
resize. A JPEG 2000 codestream can be decoded at a coarser level (:mod:`mammoscale.dicom.j2k`):

1. decode the coarsest level whose long side is still :data:`COARSE_SIDE` pixels, and find the
   breast there (orientation and ROI, as at full resolution);
2. scale the crop to full resolution and take the coarsest level at which it still has at least
   the canonical view's rows and columns (:func:`level_for`);
3. decode that level (or keep the first decode when it is that level) and find the breast again,
   at that resolution, for the crop itself.

Anything unclear gives the full image: another transfer syntax, a codestream without the level
(the first decode is then the full image and is used as it is), an ROI that fell back to the full
frame, ``preprocess.max_decode_level: 0``. When the whole image itself allows fewer than
:data:`WORTH_IT` levels (a canonical size close to half the image's or more), the first decode is the
full image: nothing is decoded twice.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from mammoscale import dicom
from mammoscale.preprocess import roi, tiling

COARSE_SIDE = 256
"""The level-choosing decode: the coarsest level whose long side still has this many pixels."""


WORTH_IT = 2
"""The level the whole image must allow for the level-choosing decode to be worth its cost. The whole image is
the largest crop; a crop gets level 1 only when it is twice its view across, so an image that allows only level 1
(at a canonical size close to half its own: 2048 on an RSNA image) almost never has such a crop, and the coarse
decode would cost 2 % for nothing (bench/README.md)."""


def coarse_level(shape: tuple[int, int], most: int) -> int:
    """The coarsest level (at most ``most``) whose long side is still :data:`COARSE_SIDE` pixels."""
    level = 0
    while level < most and max(shape) >> (level + 1) >= COARSE_SIDE:
        level += 1
    return level


def level_for(crop: tuple[int, int], canonical_size: int, most: int) -> int:
    """The coarsest level (at most ``most``) at which a full-resolution ``crop`` (rows, cols) still has at least the
    rows and the columns of its canonical view (the crop fitted into a half tile of ``canonical_size``)."""
    view = tiling.fit(crop, (canonical_size, canonical_size // 2))
    level = 0
    while level < most and crop[0] >> (level + 1) >= view[0] and crop[1] >> (level + 1) >= view[1]:
        level += 1
    return level


def decode_view(path: Path, laterality: str, settings) -> tuple[dicom.Decoded, roi.Located, np.ndarray]:
    """Decode one view at the level its crop needs (see the module docstring): the decode, where its breast is,
    and the image the view is cut from (black for a constant image). ``settings`` is a ``ViewSettings``."""
    decode = functools.partial(
        dicom.decode_with_report,
        path,
        max_pixels=settings.max_pixels,
        reject_constant=settings.constant_images == "exclude",
    )
    most = settings.max_decode_level
    shape = dicom.header_shape(path, max_pixels=settings.max_pixels) if most else None
    worth_it = shape is not None and level_for(shape, settings.canonical_size, most) >= min(WORTH_IT, most)
    decoded = decode(level=coarse_level(shape, most)) if worth_it else decode()
    first = decoded.report.level
    if first:
        image, located = _locate(decoded, laterality, settings)
        r0, c0, r1, c1 = located.roi.box
        crop = ((r1 - r0) << first, (c1 - c0) << first)
        level = 0 if located.roi.fallback else level_for(crop, settings.canonical_size, first)
        if level == first:
            return decoded, located, image
        decoded = decode(level=level)
    image, located = _locate(decoded, laterality, settings)
    return decoded, located, image


def _locate(decoded: dicom.Decoded, laterality: str, settings) -> tuple[np.ndarray, roi.Located]:
    # a constant image is nothing to see: black (MONOCHROME1's zeros would be a white "breast"), no tissue found
    image = np.zeros_like(decoded.image) if decoded.report.constant else decoded.image
    return image, roi.locate(image, laterality, settings.roi, trust_pixels=settings.trust_pixels_for_flip)
