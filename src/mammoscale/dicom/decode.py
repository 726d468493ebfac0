"""Decode a mammography DICOM file into a normalised 2-D image.

Screening mammograms come from many vendors: JPEG 2000, JPEG Lossless, JPEG-LS and RLE
compression, 12 to 16 stored bits, rescale tags, VOI LUT sequences or (multi-valued) windows
with LINEAR, LINEAR_EXACT or SIGMOID functions, and MONOCHROME1 images whose bright pixels
mean "no tissue". A model sees none of that: it sees the image a radiologist would, as a
number in [0, 1] per pixel. The DICOM grayscale pipeline runs in the standard's order
(PS3.3 C.11, PS3.4 N.2):

1. pixel data -> stored values (:mod:`mammoscale.dicom.read`, :mod:`mammoscale.dicom.pixels`);
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
from pydicom.uid import RLELossless

from mammoscale.dicom.errors import ConstantImageError, DicomError, ImplausibleShapeError, InvalidHeaderError
from mammoscale.dicom.grayscale import apply_voi, has_rescale, modality_lut, rescale, to_uint8
from mammoscale.dicom.pixels import stored_range, stored_values
from mammoscale.dicom.read import DEFAULT_MAX_PIXELS, read_dataset

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
    """The image has a single value as stored, after the modality LUT, or after VOI (one grey level): nothing to
    see."""
    laterality: str
    view: str
    decoder: str
    """``native``, or the codec package and version that decoded the pixel data."""
    notes: tuple[str, ...] = ()
    level: int = 0
    """The JPEG 2000 resolution level decoded (0: full resolution; the image is 2^level times smaller a side)."""


@dataclasses.dataclass(frozen=True)
class Decoded:
    image: np.ndarray
    report: DecodeReport


SHEAR_RATIO = 8.0
"""Mean step between rows over mean step between columns (grey levels, +1 each) above which the rows do not
continue each other. Measured: at most 1.44 on synthetic mammograms and 1.31 on pydicom's real test images of
64 px and more; 19 to 41 on the same synthetic files with Rows and Columns swapped."""


def check_rows_continue(image: np.ndarray, path: Path) -> None:
    """Refuse an image whose rows do not continue each other: Rows and Columns that fit the pixel data's
    length and not its content (swapped, or one off) give a sheared, striped image.

    Only pixel data without a shape of its own (native, RLE) needs it: a JPEG codestream states its
    size. Every fourth pair of adjacent rows and of adjacent columns is compared; images under
    64 px a side are not judged.
    """
    if min(image.shape) < 64:
        return
    x = image.astype(np.int16)
    rows = np.abs(x[1::4] - x[:-1:4][: x[1::4].shape[0]]).mean()
    cols = np.abs(x[:, 1::4] - x[:, :-1:4][:, : x[:, 1::4].shape[1]]).mean()
    if (rows + 1) / (cols + 1) > SHEAR_RATIO:
        raise ImplausibleShapeError(
            path,
            f"rows do not continue each other (mean step {rows:.1f} grey levels between rows, {cols:.1f} between "
            f"columns): are Rows ({image.shape[0]}) and Columns ({image.shape[1]}) right?",
        )


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
    level: int = 0,
) -> Decoded:
    """Like :func:`decode`, and also return a :class:`DecodeReport`.

    ``level`` > 0 asks for a JPEG 2000 frame at that coarser resolution level, 2^level times smaller a side
    (:mod:`mammoscale.dicom.j2k`); any other file, or a codestream where it cannot be had for sure, is decoded
    at full resolution. ``report.level`` says which. :func:`decode` always decodes the full image.
    """
    if level < 0:
        raise ValueError(f"level must be >= 0, not {level!r}")
    if output not in ("uint8", "float32"):
        raise ValueError(f"output must be 'uint8' or 'float32', not {output!r}")
    if voi not in ("auto", "window", "lut", "minmax"):
        raise ValueError(f"voi must be 'auto', 'window', 'lut' or 'minmax', not {voi!r}")
    path = Path(path)
    ds = read_dataset(path, max_pixels=max_pixels)
    stored, clipped, decoder, foreign, level = stored_values(ds, path, max_pixels=max_pixels, level=level)
    notes = _stored_notes(ds, path, clipped, foreign)

    # Every step from here on is a function of the stored value alone, so it is evaluated once
    # over the BitsStored range and applied as one table look-up (the standard's own model:
    # PS3.4 N.2 chains LUTs). One gather per pixel instead of several float passes.
    low, high = stored_range(ds)
    raw_min, raw_max = int(stored.min()), int(stored.max())
    single = f"every stored value is {raw_min}" if raw_min == raw_max else None
    if single and reject_constant:
        raise ConstantImageError(path, f"{single}: no image")
    values, unit, voi_used, voi_notes = _display_table(ds, path, (low, high), (raw_min, raw_max), voi)
    notes.extend(voi_notes)
    photometric = str(ds.PhotometricInterpretation)
    index = stored if low == 0 else stored.astype(np.int32) - low
    grey = to_uint8(unit)[index]
    single = single or _single_value(ds, values[raw_min - low : raw_max - low + 1], grey, voi_used)
    constant = single is not None
    if constant:
        if reject_constant:
            raise ConstantImageError(path, f"{single}: no image")
        notes.append(f"constant image: {single}")
        log.warning("%s: %s", path, notes[-1])
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_compressed or syntax == RLELossless:
        check_rows_continue(grey, path)
    image = grey if output == "uint8" else unit.astype(np.float32)[index]

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
        level=level,
    )
    return Decoded(image=image, report=report)


def _stored_notes(ds, path: Path, clipped: int, foreign: int) -> list[str]:
    """What reading the stored values found and did (values clipped to BitsStored, signed values read as such)."""
    notes = []
    if clipped:
        notes.append(f"{clipped} stored values beyond BitsStored={ds.BitsStored} clipped")
    if foreign:
        notes.append(f"{foreign} signed values not sign-extended above HighBit: read as {ds.BitsStored}-bit")
    for note in notes:
        log.warning("%s: %s", path, note)
    return notes


def _single_value(ds, shown: np.ndarray, grey: np.ndarray, voi_used: str) -> str | None:
    """Why an image of several stored values shows a single one, or None: the modality LUT maps them all to one
    value (a RescaleSlope of 0, say), or the VOI to one grey level (a window far from the image's values).

    ``shown`` is the modality values of the stored values from the image's least to its greatest; ``grey`` the
    image as displayed. Either way there is nothing to see, as in an image stored constant.
    """
    if shown.min() == shown.max():
        if "ModalityLUTSequence" in ds:
            lut = "the Modality LUT Sequence"
        else:
            slope, intercept = rescale(ds)
            lut = f"RescaleSlope {slope:g}, RescaleIntercept {intercept:g}"
        return f"every value is {float(shown[0]):g} after the modality LUT ({lut})"
    level = int(grey.min())
    if level == int(grey.max()):
        return f"every pixel is grey level {level} after the VOI ({voi_used})"
    return None


def _display_table(ds, path: Path, stored: tuple[int, int], present: tuple[int, int], voi: str):
    """Modality LUT, VOI and MONOCHROME1 over every stored value of the range: the modality value and the display
    value in [0, 1] of each, the VOI branch taken, and its notes. ``present`` is the image's (min, max) stored
    value, for min-max."""
    low, high = stored
    try:
        values = modality_lut(np.arange(low, high + 1), ds)
        shown = values[present[0] - low : present[1] - low + 1]
        unit, voi_used, notes = apply_voi(
            values, ds, path, mode=voi, image_range=(float(shown.min()), float(shown.max()))
        )
    except DicomError:
        raise
    except Exception as exc:  # an attribute the standard's pipeline reads is malformed: the header's fault
        raise InvalidHeaderError(path, f"grayscale attributes unusable ({type(exc).__name__}: {exc})") from None
    if str(ds.PhotometricInterpretation) == "MONOCHROME1":
        unit = 1.0 - unit
    return values, unit, voi_used, notes
