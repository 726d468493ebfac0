"""Stored values to the grey levels a radiologist sees: the modality LUT, then the VOI (PS3.3 C.11).

Each function takes modality or stored values and returns new values; none touches the dataset
it reads. :func:`mammoscale.dicom.decode` evaluates them once over the BitsStored range and
applies the result as one table look-up.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from mammoscale.dicom.errors import InvalidHeaderError

log = logging.getLogger("mammoscale.dicom")


def rescale(ds: Dataset) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept); absent or empty, the identity's (1, 0).

    A slope of 0 is taken as written (every value becomes the intercept: a constant image, which
    :func:`mammoscale.dicom.decode` says), not as absent. A value that is not a finite number is the
    header's fault: NaN or infinity would turn every pixel into one grey level without a word.
    """
    return _number(ds, "RescaleSlope", 1.0), _number(ds, "RescaleIntercept", 0.0)


def has_rescale(ds: Dataset) -> bool:
    return rescale(ds) != (1.0, 0.0)


def _number(ds: Dataset, keyword: str, default: float) -> float:
    """A single-valued numeric attribute as a finite float; ``default`` when absent or empty."""
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    return finite(float(value), keyword, ds.filename or "")


def finite(value: float, keyword: str, path: Path | str) -> float:
    """``value``, refused as an invalid header when it is NaN or infinite."""
    if not math.isfinite(value):
        raise InvalidHeaderError(path, f"{keyword} is {value}: not a finite number")
    return value


def modality_lut(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored values -> modality values (PS3.3 C.11.1): a Modality LUT Sequence or rescale."""
    if "ModalityLUTSequence" in ds:
        try:
            return np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        except Exception as exc:  # pydicom reads the sequence as it finds it: any failure is the header's
            raise InvalidHeaderError(
                ds.filename or "", f"Modality LUT Sequence unusable ({type(exc).__name__}: {exc})"
            ) from None
    slope, intercept = rescale(ds)
    if (slope, intercept) == (1.0, 0.0):
        return stored
    with np.errstate(over="ignore", invalid="ignore"):
        values = stored * slope + intercept
    if not np.isfinite(values).all():
        raise InvalidHeaderError(
            ds.filename or "", f"RescaleSlope {slope:g} and RescaleIntercept {intercept:g} overflow: not finite values"
        )
    return values


def apply_voi(
    values: np.ndarray, ds: Dataset, path: Path, *, mode: str = "auto", image_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, str, list[str]]:
    """Modality values -> [0, 1] by the VOI LUT, a window, or min-max; says which and why.

    ``image_range`` is the (min, max) of the image's modality values, for min-max; by default
    that of ``values``.
    """
    notes: list[str] = []
    has_lut = bool(ds.get("VOILUTSequence"))
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if mode in ("auto", "lut") and has_lut:
        try:
            return voi_lut(values, ds.VOILUTSequence[0], path), "lut", notes
        except InvalidHeaderError as exc:  # the next VOI branch, said in the notes
            notes.append(f"VOI LUT ignored ({exc.message})")
            log.warning("%s: %s", path, notes[-1])
    elif mode == "lut":
        notes.append("no VOI LUT Sequence: min-max used")
    if mode in ("auto", "window") and has_window:
        center = finite(_first(ds.WindowCenter), "WindowCenter", path)
        width = finite(_first(ds.WindowWidth), "WindowWidth", path)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        try:
            return window(values, center, width, function), f"window:{function}", notes
        except ValueError as exc:
            notes.append(f"window ignored ({exc}): min-max used")
            log.warning("%s: %s", path, notes[-1])
    elif mode == "window":
        notes.append("no window: min-max used")
    return minmax(values, image_range), "minmax", notes


def _first(value) -> float:
    """The first of a multi-valued window attribute (the producer's default), as a float."""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0]
    return float(value)


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map modality values to [0, 1] by a window (PS3.3 C.11.2.1.2 and C.11.2.1.3).

    LINEAR needs ``width >= 1``; LINEAR_EXACT and SIGMOID need ``width > 0``.
    """
    x = values.astype(np.float64, copy=False)
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"LINEAR window width must be >= 1, got {width:g}")
        y = ((x - (center - 0.5)) / (width - 1) + 0.5) if width > 1 else (x > center - 0.5).astype(np.float64)
        return np.clip(y, 0.0, 1.0)
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {width:g}")
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"SIGMOID window width must be > 0, got {width:g}")
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    raise ValueError(f"unknown VOILUTFunction {function!r}")


def voi_lut(values: np.ndarray, item: Dataset, path: Path) -> np.ndarray:
    """Apply one VOI LUT Sequence item (PS3.3 C.11.2.1.1); output scaled by the LUT's bit depth."""
    try:
        entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
    except Exception as exc:
        raise InvalidHeaderError(path, f"VOI LUT Descriptor unreadable: {exc}") from None
    entries = entries or 65536
    lut_bytes = item.get("LUTData")
    if lut_bytes is None:
        raise InvalidHeaderError(path, "VOI LUT Sequence item has no LUT Data")
    if isinstance(lut_bytes, (bytes, bytearray)):
        # One 16-bit word per entry whatever the descriptor's bit depth (PS3.3 C.11.2.1.1).
        lut = np.frombuffer(lut_bytes[: len(lut_bytes) // 2 * 2], dtype="<u2")
    else:
        lut = np.asarray(lut_bytes, dtype=np.float64)
    if lut.size < entries or not 1 <= bits <= 16:
        raise InvalidHeaderError(path, f"VOI LUT has {lut.size} entries of {bits} bits, descriptor says {entries}")
    index = np.clip(np.rint(values).astype(np.int64) - first_mapped, 0, entries - 1)
    return lut[:entries].astype(np.float64)[index] / float((1 << bits) - 1)


def minmax(values: np.ndarray, image_range: tuple[float, float] | None = None) -> np.ndarray:
    """Map the image's own range (by default that of ``values``) to [0, 1]; a constant image maps to 0."""
    x = values.astype(np.float64, copy=False)
    low, high = image_range if image_range is not None else (float(x.min()), float(x.max()))
    if high == low:
        return np.zeros_like(x)
    return np.clip((x - low) / (high - low), 0.0, 1.0)


def to_uint8(unit: np.ndarray) -> np.ndarray:
    """[0, 1] -> 0..255, rounded to nearest."""
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)
