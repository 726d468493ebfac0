"""Decode a mammography DICOM file into a normalised 2-D image.

Screening mammograms come from many vendors: JPEG 2000, JPEG Lossless, JPEG-LS and RLE
compression, 12 to 16 stored bits, rescale tags, VOI LUT sequences or (multi-valued) windows
with LINEAR, LINEAR_EXACT or SIGMOID functions, and MONOCHROME1 images whose bright pixels
mean "no tissue". A model sees none of that: it sees the image a radiologist would, as a
number in [0, 1] per pixel. This module applies the DICOM grayscale pipeline in the
standard's order (PS3.3 C.11, PS3.4 N.2):

1. pixel data -> stored values (pydicom's decoders for compressed data; native data is read
   directly so that values beyond BitsStored are seen, clipped and reported, not masked);
2. modality LUT: RescaleSlope / RescaleIntercept (C.11.1);
3. VOI: the VOI LUT Sequence (C.11.2.1.1), else the first window of WindowCenter /
   WindowWidth with VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID (C.11.2.1.2-3),
   else min-max of the image;
4. MONOCHROME1 inversion against the output range [0, 1] (not against the image's maximum,
   which would make the result depend on content);
5. output as uint8 (0-255) or float32 (0-1).

The dataset is never modified. Every failure is a subclass of :class:`DicomError` with a
short ``kind`` (used as a column in QC tables) and a message a user can act on.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import struct
import sys
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import RLELossless

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
"""Largest Rows x Columns decoded by default: about 5x the largest mammogram (4096 x 3328)."""

PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
"""(7FE0,0010) Pixel Data as it appears in a little-endian file."""



# errors


class DicomError(Exception):
    """A file that cannot be turned into an image; ``kind`` names the reason in one word."""

    kind = "dicom"

    def __init__(self, path: Path | str, message: str):
        self.path = str(path)
        self.message = message
        super().__init__(f"{path}: {message}")


class MissingFileError(DicomError):
    kind = "missing_file"


class NotDicomError(DicomError):
    kind = "not_dicom"


class TruncatedError(DicomError):
    kind = "truncated"


class MissingPixelDataError(DicomError):
    kind = "no_pixel_data"


class UnsupportedTransferSyntaxError(DicomError):
    kind = "unsupported_transfer_syntax"


class MissingCodecError(DicomError):
    kind = "missing_codec"


class InvalidHeaderError(DicomError):
    kind = "invalid_header"


class UnsupportedImageError(DicomError):
    kind = "unsupported_image"


class ShapeMismatchError(DicomError):
    kind = "shape_mismatch"


class TooLargeError(DicomError):
    kind = "too_large"


class CorruptPixelDataError(DicomError):
    kind = "corrupt_pixel_data"


class ConstantImageError(DicomError):
    kind = "constant_image"


ERROR_KINDS = tuple(
    cls.kind
    for cls in (
        MissingFileError,
        NotDicomError,
        TruncatedError,
        MissingPixelDataError,
        UnsupportedTransferSyntaxError,
        MissingCodecError,
        InvalidHeaderError,
        UnsupportedImageError,
        ShapeMismatchError,
        TooLargeError,
        CorruptPixelDataError,
        ConstantImageError,
    )
)


# what decoding found


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
    stored, clipped = stored_values(ds, path, max_pixels=max_pixels)
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
        rescaled=_has_rescale(ds),
        voi=voi_used,
        clipped_pixels=clipped,
        constant=constant,
        laterality=str(ds.get("ImageLaterality", ds.get("Laterality", ""))),
        view=str(ds.get("ViewPosition", "")),
        notes=tuple(notes),
    )
    return Decoded(image=image, report=report)


# reading


def read_dataset(path: Path) -> Dataset:
    """Read the header and the (still encoded) pixel data; check that an image is there."""
    if not path.is_file():
        raise MissingFileError(path, "no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise NotDicomError(path, "not a DICOM file (no 'DICM' prefix after the 128-byte preamble)")
    except (EOFError, struct.error, OSError) as exc:
        raise TruncatedError(path, f"file ends inside the header ({exc})") from None
    except Exception as exc:
        raise NotDicomError(path, f"unreadable DICOM header: {exc}") from None

    if "TransferSyntaxUID" not in ds.file_meta:
        raise TruncatedError(path, "file meta information has no TransferSyntaxUID (file cut short?)")
    if "PixelData" not in ds:
        if PIXEL_DATA_TAG in path.read_bytes():
            raise TruncatedError(path, "file ends inside the Pixel Data element")
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise UnsupportedImageError(path, "float pixel data is not a mammogram")
        raise MissingPixelDataError(path, "no Pixel Data element (7FE0,0010); the file may also be cut short before it")
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "PhotometricInterpretation"):
        if ds.get(keyword) in (None, ""):
            raise InvalidHeaderError(path, f"required attribute {keyword} is missing")
    return ds


def stored_values(ds: Dataset, path: Path, *, max_pixels: int) -> tuple[np.ndarray, int]:
    """Return the stored pixel values of frame 1 (as decoded: uint16/int16 for 16-bit data), clipped
    to the BitsStored range, and how many were outside it."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    bits_allocated, bits_stored = int(ds.BitsAllocated), int(ds.BitsStored)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    photometric = str(ds.PhotometricInterpretation)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedImageError(path, f"PhotometricInterpretation {photometric} is not grayscale")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise UnsupportedImageError(path, f"SamplesPerPixel is {ds.SamplesPerPixel}, expected 1")
    if bits_allocated not in (8, 16):
        raise UnsupportedImageError(path, f"BitsAllocated {bits_allocated}: only 8 and 16 are supported")
    if not 1 <= bits_stored <= bits_allocated:
        raise InvalidHeaderError(path, f"BitsStored {bits_stored} is not in 1..BitsAllocated ({bits_allocated})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise UnsupportedImageError(path, f"{frames} frames: a 2-D mammogram has one (tomosynthesis is not supported)")
    if rows <= 0 or cols <= 0:
        raise InvalidHeaderError(path, f"Rows x Columns is {rows} x {cols}")
    if rows * cols > max_pixels:
        raise TooLargeError(path, f"{rows} x {cols} pixels is over the limit of {max_pixels:,} (max_pixels)")

    syntax = ds.file_meta.TransferSyntaxUID
    try:
        compressed = syntax.is_compressed
    except ValueError:
        raise UnsupportedTransferSyntaxError(path, f"{syntax} is not a transfer syntax UID") from None
    if compressed:
        raw = _decode_compressed(ds, path, rows=rows, cols=cols, max_pixels=max_pixels)
    else:
        raw = _read_native(ds, path, rows=rows, cols=cols, bits_allocated=bits_allocated, signed=signed)

    low, high = stored_range(ds)
    if raw.dtype.itemsize * 8 == bits_stored and raw.dtype.kind == ("i" if signed else "u"):
        return raw, 0  # the dtype cannot hold a value outside the range
    raw_min, raw_max = int(raw.min()), int(raw.max())
    if low <= raw_min and raw_max <= high:
        return raw, 0
    outside = int(np.count_nonzero((raw < low) | (raw > high)))
    return np.clip(raw, low, high).astype(raw.dtype), outside


def stored_range(ds: Dataset) -> tuple[int, int]:
    """The values BitsStored can hold, signed (PixelRepresentation 1) or not."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _read_native(ds: Dataset, path: Path, *, rows: int, cols: int, bits_allocated: int, signed: bool) -> np.ndarray:
    """Native (uncompressed) pixel data, read as stored: pydicom would mask bits beyond BitsStored."""
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_little_endian:
        dtype = np.dtype(f">{'i' if signed else 'u'}{bits_allocated // 8}")
    else:
        dtype = np.dtype(f"<{'i' if signed else 'u'}{bits_allocated // 8}")
    data = ds.PixelData
    expected = rows * cols * dtype.itemsize
    if len(data) < expected:
        raise ShapeMismatchError(
            path, f"Pixel Data holds {len(data):,} bytes; Rows x Columns ({rows} x {cols}) needs {expected:,}"
        )
    if len(data) > expected + 1:
        raise ShapeMismatchError(
            path, f"Pixel Data holds {len(data):,} bytes; Rows x Columns ({rows} x {cols}) needs {expected:,}"
        )
    return np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)


def _decode_compressed(ds: Dataset, path: Path, *, rows: int, cols: int, max_pixels: int) -> np.ndarray:
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise UnsupportedTransferSyntaxError(path, f"no decoder for transfer syntax {syntax} ({syntax.name})") from None
    if not decoder.is_available:
        raise MissingCodecError(path, f"{syntax.name} needs {_missing_packages(decoder)}")

    coded = None if syntax == RLELossless else codestream_shape(_first_fragment(ds, path))
    if coded is not None:
        coded_rows, coded_cols = coded
        if coded_rows * coded_cols > max_pixels:
            raise TooLargeError(
                path, f"codestream is {coded_rows} x {coded_cols} pixels, over the limit of {max_pixels:,}"
            )
        if (coded_rows, coded_cols) != (rows, cols):
            raise ShapeMismatchError(
                path, f"codestream is {coded_rows} x {coded_cols} but Rows x Columns is {rows} x {cols}"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array, _ = decoder.as_array(ds, index=0)
    except Exception as exc:
        raise CorruptPixelDataError(path, f"{syntax.name} decoding failed: {exc}") from None
    if array.shape != (rows, cols):
        raise ShapeMismatchError(path, f"decoded {array.shape} but Rows x Columns is {rows} x {cols}")
    return array


def _first_fragment(ds: Dataset, path: Path) -> bytes:
    """The first fragment after the Basic Offset Table: where a JPEG codestream's header is."""
    try:
        fragments = generate_fragments(ds.PixelData)
        next(fragments, b"")
        return next(fragments, b"")
    except Exception as exc:
        raise CorruptPixelDataError(path, f"encapsulated Pixel Data is malformed: {exc}") from None


def codestream_shape(fragment: bytes) -> tuple[int, int] | None:
    """(rows, columns) from a JPEG 2000 SIZ or JPEG / JPEG-LS SOF marker, without decoding.

    Lets :func:`decode` refuse a decompression bomb, or a codestream that disagrees with
    Rows/Columns, before handing it to a codec. ``None`` when the format has no such header
    (RLE) or it cannot be found in the first fragment.
    """
    if fragment[:4] == b"\xff\x4f\xff\x51" and len(fragment) >= 24:
        xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", fragment[8:24])
        return ysiz - yosiz, xsiz - xosiz
    if fragment[:2] == b"\xff\xd8":
        sof = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
        i = 2
        while i + 9 <= len(fragment):
            if fragment[i] != 0xFF:
                return None
            marker = fragment[i + 1]
            if marker == 0xFF:
                i += 1
                continue
            length = struct.unpack(">H", fragment[i + 2 : i + 4])[0]
            if marker in sof:
                height, width = struct.unpack(">HH", fragment[i + 5 : i + 9])
                return height, width
            i += 2 + length
    return None


def _missing_packages(decoder) -> str:
    """The pip command for the first plugin pydicom lists as unavailable, and pydicom's own words.

    pydicom says e.g. ``pylibjpeg - requires numpy, pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0``.
    """
    wanted = decoder.missing_dependencies
    if not wanted:
        return "a decoding plugin, and none is registered"
    listed = re.split(r", | and ", wanted[0].split(" - requires ", 1)[-1])
    packages = [p for p in listed if p and not p.startswith("numpy") and " " not in p]
    command = f"pip install {' '.join(repr(p) if '>' in p else p for p in packages)}" if packages else ""
    return f"{' and '.join(packages) or 'a decoding plugin'} ({command}; pydicom: {'; '.join(wanted)})"


# modality LUT and VOI


def _has_rescale(ds: Dataset) -> bool:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return slope != 1.0 or intercept != 0.0


def modality_lut(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored values -> modality values (PS3.3 C.11.1): a Modality LUT Sequence or rescale."""
    if "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if not _has_rescale(ds):
        return stored
    return stored * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)


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
        return voi_lut(values, ds.VOILUTSequence[0], path), "lut", notes
    if mode == "lut":
        notes.append("no VOI LUT Sequence: min-max used")
    if mode in ("auto", "window") and has_window:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
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
    lut_bytes = item.LUTData
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


# command line


def cli(argv: list[str] | None = None) -> int:
    """``mammoscale-decode FILE...``: decode files, print what was found, optionally save PNGs."""
    parser = argparse.ArgumentParser(prog="mammoscale-decode", description=cli.__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--png-dir", type=Path, help="write each decoded image here as PNG")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files:
        try:
            decoded = decode_with_report(path, max_pixels=args.max_pixels)
        except DicomError as exc:
            failed += 1
            print(f"{path}\tERROR {exc.kind}\t{exc.message}")
            continue
        r = decoded.report
        print(f"{path}\t{r.shape[0]}x{r.shape[1]}\t{r.photometric}\t{r.bits_stored} bits\t{r.voi}\t"
              f"{'; '.join(r.notes) or 'ok'}")
        if args.png_dir:
            from PIL import Image

            args.png_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(decoded.image).save(args.png_dir / f"{path.stem}.png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(cli())
