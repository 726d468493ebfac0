"""Decode a mammography DICOM file into a normalised 2-D image.

Screening mammograms come from many vendors: JPEG 2000, JPEG Lossless, JPEG-LS and RLE
compression, 12 to 16 stored bits, rescale tags, VOI LUT sequences or (multi-valued) windows
with LINEAR, LINEAR_EXACT or SIGMOID functions, and MONOCHROME1 images whose bright pixels
mean "no tissue". A model sees none of that: it sees the image a radiologist would, as a
number in [0, 1] per pixel. The DICOM grayscale pipeline runs in the standard's order
(PS3.3 C.11, PS3.4 N.2):

1. pixel data -> stored values (:mod:`mammoscale.dicom.read`);
2. modality LUT: RescaleSlope / RescaleIntercept (C.11.1);
3. VOI: the VOI LUT Sequence (C.11.2.1.1), else the first window of WindowCenter /
   WindowWidth with VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID (C.11.2.1.2-3),
   else min-max of the image (:mod:`mammoscale.dicom.grayscale`);
4. MONOCHROME1 inversion against the output range [0, 1] (not against the image's maximum,
   which would make the result depend on content);
5. output as uint8 (0-255) or float32 (0-1).

The dataset is never modified. Every failure is a subclass of :class:`DicomError` with a
short ``kind`` (used as a column in QC tables) and a message a user can act on.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

import numpy as np

from mammoscale.dicom.errors import ConstantImageError
from mammoscale.dicom.grayscale import apply_voi, has_rescale, modality_lut, to_uint8
from mammoscale.dicom.read import DEFAULT_MAX_PIXELS, read_dataset, stored_range, stored_values

log = logging.getLogger("mammoscale.dicom")


@dataclasses.dataclass(frozen=True)
class DecodeReport:
    """What the pipeline did to one file: enough to audit a QC table without reopening it."""

    transfer_syntax: str
    photometric: str
    bits_stored: int
    shape: tuple[int, int]
    rescaled: bool
    voi: str
    """``lut``, ``window:<FUNCTION>`` or ``minmax``."""
    clipped_pixels: int
    """Stored values outside the BitsStored range, clipped to it."""
    constant: bool
    """The image has a single value after the modality LUT: nothing to see."""
    laterality: str
    view: str
    decoder: str
    """``native``, or the codec package and version that decoded the pixel data."""
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Decoded:
    image: np.ndarray
    report: DecodeReport


# public API


def decode(
    path: Path | str,
    *,
    output: Literal["uint8", "float32"] = "uint8",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    reject_constant: bool = False,
    voi: Literal["auto", "window", "lut", "minmax"] = "auto",
) -> np.ndarray:
    """Decode ``path`` to a 2-D image after modality LUT, VOI and MONOCHROME1 inversion.

    The image is as stored: no flip, no crop. ``output="uint8"`` gives 0-255,
    ``"float32"`` gives 0-1. ``voi="auto"`` uses the VOI LUT Sequence if there is one, else
    the first window, else the image's min-max. Raises a :class:`DicomError` subclass on bad
    input; see :func:`decode_with_report` for what was done and found.
    """
    return decode_with_report(
        path, output=output, max_pixels=max_pixels, reject_constant=reject_constant, voi=voi
    ).image


def decode_with_report(
    path: Path | str,
    *,
    output: Literal["uint8", "float32"] = "uint8",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    reject_constant: bool = False,
    voi: Literal["auto", "window", "lut", "minmax"] = "auto",
) -> Decoded:
    """Like :func:`decode`, and also return a :class:`DecodeReport`."""
    if output not in ("uint8", "float32"):
        raise ValueError(f"output must be 'uint8' or 'float32', not {output!r}")
    if voi not in ("auto", "window", "lut", "minmax"):
        raise ValueError(f"voi must be 'auto', 'window', 'lut' or 'minmax', not {voi!r}")
    path = Path(path)
    ds = read_dataset(path)
    stored, clipped, decoder = stored_values(ds, path, max_pixels=max_pixels)
    notes: list[str] = []
    if clipped:
        notes.append(f"{clipped} stored values beyond BitsStored={ds.BitsStored} clipped")
        log.warning("%s: %s", path, notes[-1])

    # Every step from here on is a function of the stored value alone, so it is evaluated once
    # over the BitsStored range and applied as one table look-up (the standard's own model:
    # PS3.4 N.2 chains LUTs). One gather per pixel instead of several float passes.
    low, high = stored_range(ds)
    raw_min, raw_max = int(stored.min()), int(stored.max())
    constant = raw_min == raw_max
    if constant:
        if reject_constant:
            raise ConstantImageError(path, f"every stored value is {raw_min}: no image")
        notes.append("constant image")
        log.warning("%s: constant image (every stored value %d)", path, raw_min)

    values = modality_lut(np.arange(low, high + 1), ds)
    present = values[raw_min - low : raw_max - low + 1]
    unit, voi_used, voi_notes = apply_voi(
        values, ds, path, mode=voi, image_range=(float(present.min()), float(present.max()))
    )
    notes.extend(voi_notes)
    photometric = str(ds.PhotometricInterpretation)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    table = to_uint8(unit) if output == "uint8" else unit.astype(np.float32)
    image = table[stored] if low == 0 else table[stored.astype(np.int32) - low]

    report = DecodeReport(
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        photometric=photometric,
        bits_stored=int(ds.BitsStored),
        shape=(int(ds.Rows), int(ds.Columns)),
        rescaled=has_rescale(ds),
        voi=voi_used,
        clipped_pixels=clipped,
        constant=constant,
        laterality=str(ds.get("ImageLaterality", ds.get("Laterality", ""))),
        view=str(ds.get("ViewPosition", "")),
        decoder=decoder,
        notes=tuple(notes),
    )
    return Decoded(image=image, report=report)
