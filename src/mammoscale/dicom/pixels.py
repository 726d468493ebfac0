"""From a dataset's pixel data to its stored values: decoded by a codec, or read as stored.

Compressed pixel data goes through pydicom's decoder plugins; which plugin (and so which codec
package) decoded a frame is recorded, for the provenance of the cache. Native data is read
directly, so that values beyond BitsStored are seen, clipped and counted rather than masked.
Codestream headers (JPEG 2000 SIZ, JPEG SOF) are read before any codec runs, so that a
decompression bomb or a codestream that disagrees with Rows/Columns is refused first.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import itertools
import logging
import os
import re
import struct
import sys
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.pixels import get_decoder
from pydicom.uid import (
    JPEG2000TransferSyntaxes,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
)

from mammoscale.dicom import j2k
from mammoscale.dicom.errors import (
    CorruptPixelDataError,
    InvalidHeaderError,
    MissingCodecError,
    ShapeMismatchError,
    TooLargeError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
)
from mammoscale.dicom.read import shape_problem

PLUGIN_ORDER = ("pylibjpeg", "pyjpegls", "pydicom", "pillow", "gdcm")
"""pydicom's decoder plugins in the order they are tried (pydicom's own order for those installed)."""
FIRST_PLUGIN = dict.fromkeys((JPEGLosslessSV1, JPEGLossless), "gdcm")
"""Where another plugin goes first, chosen by measurement on one core (``bench/jpeg_lossless.py``; stage 1 runs
one decoding process per core): for JPEG Lossless, GDCM decodes 1.1x faster than pylibjpeg-libjpeg, exactly, and
is the only candidate that refuses a truncated codestream (pylibjpeg-libjpeg, dicomsdl and imagecodecs return an
image). For JPEG 2000, GDCM is faster only by using a second core (slower on one) and pylibjpeg-openjpeg stays."""
FINAL = (RLELossless, JPEGLosslessSV1, JPEGLossless)
"""Syntaxes whose first plugin's verdict is final: every decoder of them reads all of the syntax, so the first
that fails found damage, which the next would turn into an image (pydicom's RLE decoder only logs;
pylibjpeg-libjpeg returns a cut JPEG Lossless frame)."""
NATIVE = "native"
"""The decoder of uncompressed pixel data: read as stored, no codec."""
RUST_QUIET = ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE")
"""Environment variables set to 0 while a Rust codec runs (:func:`_panics_logged`)."""

log = logging.getLogger("mammoscale.dicom")


class Stored(NamedTuple):
    """Frame 1's stored values, how many were outside BitsStored (then clipped), and what decoded them."""

    values: np.ndarray
    clipped: int
    decoder: str
    """``native``, or the codec package and its version, e.g. ``pylibjpeg-openjpeg 2.6.0``."""
    foreign_high_bits: int = 0
    """Signed data: words whose bits above HighBit were not the sign's (ignored, as the standard says)."""
    level: int = 0
    """The JPEG 2000 resolution level decoded: 0 is the full image, r is 2^r times smaller a side."""


def stored_values(ds: Dataset, path: Path, *, max_pixels: int, level: int = 0) -> Stored:
    """The stored pixel values of frame 1 (as decoded: uint16/int16 for 16-bit data), and the decoder that ran.

    Unsigned values beyond BitsStored are clipped to its range and counted; signed values are the
    BitsStored-bit two's complement numbers the standard defines (:func:`twos_complement`). ``level`` > 0
    asks for a JPEG 2000 frame at that coarser resolution level (:mod:`mammoscale.dicom.j2k`); where it
    cannot be had, the full image is decoded: ``Stored.level`` says which.
    """
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
    problem = shape_problem(path, rows, cols, max_pixels=max_pixels)
    if problem is not None:
        raise problem

    syntax = ds.file_meta.TransferSyntaxUID
    try:
        compressed = syntax.is_compressed
    except ValueError:
        raise UnsupportedTransferSyntaxError(path, f"{syntax} is not a transfer syntax UID") from None
    used = 0
    if compressed:
        raw, decoder, used = _decode_compressed(ds, path, rows=rows, cols=cols, max_pixels=max_pixels, level=level)
    else:
        raw = _read_native(ds, path, rows=rows, cols=cols, bits_allocated=bits_allocated, signed=signed)
        decoder = NATIVE

    if signed:  # a BitsStored-bit two's complement number whatever the bits above it hold (PS3.5 8.1.1)
        values, foreign = twos_complement(raw, bits_stored)
        return Stored(values, 0, decoder, foreign)
    low, high = stored_range(ds)
    if raw.dtype.itemsize * 8 == bits_stored and raw.dtype.kind == "u":
        return Stored(raw, 0, decoder, level=used)  # the dtype cannot hold a value outside the range
    raw_min, raw_max = int(raw.min()), int(raw.max())
    if low <= raw_min and raw_max <= high:
        return Stored(raw, 0, decoder, level=used)
    outside = int(np.count_nonzero((raw < low) | (raw > high)))
    return Stored(np.clip(raw, low, high).astype(raw.dtype), outside, decoder, level=used)


def twos_complement(raw: np.ndarray, bits_stored: int) -> tuple[np.ndarray, int]:
    """Signed stored values as the standard reads them: the low ``bits_stored`` bits of each word, as a two's
    complement number (PS3.5 8.1.1), and how many words held other bits above HighBit than the sign's.

    Producers should sign-extend, and many do not: reading the whole word would turn every negative
    value of such a file into a large positive one.
    """
    word = raw.view(raw.dtype.str.replace("u", "i")) if raw.dtype.kind == "u" else raw
    shift = word.dtype.itemsize * 8 - bits_stored
    if shift == 0:
        return word, 0
    values = (word << shift) >> shift  # drop the bits above HighBit, then extend the sign
    return values, int(np.count_nonzero(values != word))


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


def _decode_compressed(
    ds: Dataset, path: Path, *, rows: int, cols: int, max_pixels: int, level: int = 0
) -> tuple[np.ndarray, str, int]:
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise UnsupportedTransferSyntaxError(path, f"no decoder for transfer syntax {syntax} ({syntax.name})") from None
    if not decoder.is_available:
        raise MissingCodecError(path, f"{syntax.name} needs {_missing_packages(decoder)}")

    if syntax == RLELossless:
        _check_rle_segment(ds, path, rows=rows, cols=cols)
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
    if level and syntax in JPEG2000TransferSyntaxes:
        reduced = j2k.decode_at_level(_frame(ds, path), level)
        expected = (-(-rows // 2**level), -(-cols // 2**level))
        if reduced is not None and reduced.shape == expected:
            return reduced, j2k.pillow(), level
    order = (FIRST_PLUGIN[syntax], *PLUGIN_ORDER) if syntax in FIRST_PLUGIN else PLUGIN_ORDER
    plugins = list(dict.fromkeys(name for name in order if name in decoder.available_plugins))
    plugins += [name for name in decoder.available_plugins if name not in plugins]
    if syntax in FINAL:
        plugins = plugins[:1]
    _quiet(plugins[0])
    failures = []
    for plugin in plugins:  # as pydicom does: the first plugin that decodes the frame
        rust = syntax == RLELossless and plugin == "pylibjpeg"  # pylibjpeg-rle
        quiet = _panics_logged(path) if rust else contextlib.nullcontext()
        try:
            with warnings.catch_warnings(), quiet:
                warnings.simplefilter("ignore")
                array, _ = decoder.as_array(ds, index=0, decoding_plugin=plugin)
        except Exception as exc:
            failures.append(f"{plugin}: {exc}")
            continue
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            # A Rust codec's panic (pyo3's PanicException, a BaseException): it found the frame inconsistent
            # with the header. No other plugin gets the frame: pydicom's own RLE decoder, for one, would
            # turn the same bytes into a plausible image without a word.
            raise CorruptPixelDataError(
                path, f"{syntax.name}: {plugin} found the frame inconsistent ({type(exc).__name__}: {exc})"
            ) from None
        if array.shape != (rows, cols):
            raise ShapeMismatchError(path, f"decoded {array.shape} but Rows x Columns is {rows} x {cols}")
        return array, codec_package(plugin, syntax), 0
    raise CorruptPixelDataError(path, f"{syntax.name} decoding failed: {'; '.join(failures)}")


def _check_rle_segment(ds: Dataset, path: Path, *, rows: int, cols: int) -> None:
    """An RLE frame's first segment must decode to Rows x Columns bytes (PS3.5 G.3.1).

    RLE has no header of its own saying the image's size, and pydicom's RLE decoder crops or pads a
    segment to the size the header asks for without a word: a wrong Rows or Columns would become a
    sheared image. The segment costs a few milliseconds to decode (pylibjpeg-rle); without that
    package the check is skipped.
    """
    try:
        from rle.rle import decode_segment
    except ImportError:
        return
    frame = _first_fragment(ds, path)
    if len(frame) < 64:
        raise CorruptPixelDataError(path, f"RLE frame of {len(frame)} bytes has no 64-byte header")
    count, *offsets = struct.unpack("<16I", frame[:64])
    if not 1 <= count <= 15 or offsets[0] != 64:
        raise CorruptPixelDataError(path, f"RLE header is malformed ({count} segments, the first at {offsets[0]})")
    end = offsets[1] if count > 1 else len(frame)
    try:
        with _panics_logged(path):
            decoded = len(decode_segment(frame[64:end]))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # pylibjpeg-rle panics on a damaged segment
        raise CorruptPixelDataError(path, f"RLE segment 1 cannot be decoded ({type(exc).__name__}: {exc})") from None
    if decoded != rows * cols:
        raise ShapeMismatchError(
            path, f"RLE segment 1 holds {decoded:,} pixels; Rows x Columns ({rows} x {cols}) needs {rows * cols:,}"
        )


@contextlib.contextmanager
def _panics_logged(path: Path):
    """Run a Rust codec (pylibjpeg-rle) with what its panic prints in the log, as one line, not on the terminal.

    A panic reaches Python as an exception (the file is refused), but Rust's default panic hook first writes to
    standard error: a line, a note and, with RUST_BACKTRACE=1 in the user's environment, a backtrace of some sixty
    lines. Rust reads the variable once, at the process's first panic: it is 0 during the call (then restored,
    for child processes), and file descriptor 2 goes to a temporary file meanwhile. Costs 35 microseconds a call
    (the context around an empty body, median of 5 x 2,000 calls on a 2-core VM).
    """
    try:
        capture = tempfile.TemporaryFile()  # noqa: SIM115 (the with below closes it)
    except OSError:  # nowhere to put it: the codec runs as it would without this
        yield
        return
    with capture:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no standard error to keep clean
            yield
            return
        environment = {name: os.environ.get(name) for name in RUST_QUIET}
        os.environ.update(dict.fromkeys(RUST_QUIET, "0"))
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            for name, value in environment.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            capture.seek(0)
            said = " | ".join(filter(None, map(str.strip, capture.read().decode(errors="replace").splitlines())))
            if said:
                log.info("%s: the codec wrote to standard error: %s", path, said)


@functools.cache
def _quiet(plugin: str) -> None:
    """GDCM prints its errors and warnings on standard error; the error raised says what matters."""
    if plugin == "gdcm":
        import gdcm

        gdcm.Trace.ErrorOff()
        gdcm.Trace.WarningOff()


@functools.cache
def codec_package(plugin: str, syntax) -> str:
    """The package (and its version) that a pydicom plugin decodes ``syntax`` with."""
    if plugin == "pylibjpeg":
        name = (
            "pylibjpeg-openjpeg"
            if syntax in JPEG2000TransferSyntaxes
            else "pylibjpeg-rle"
            if syntax == RLELossless
            else "pylibjpeg-libjpeg"
        )
    else:
        name = {"gdcm": "python-gdcm"}.get(plugin, plugin)
    try:
        return f"{name} {importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def _first_fragment(ds: Dataset, path: Path) -> bytes:
    """The first fragment after the Basic Offset Table: where a JPEG codestream's header is."""
    try:
        fragments = generate_fragments(ds.PixelData)
        next(fragments, b"")
        return next(fragments, b"")
    except Exception as exc:
        raise CorruptPixelDataError(path, f"encapsulated Pixel Data is malformed: {exc}") from None


def _frame(ds: Dataset, path: Path) -> bytes:
    """A single-frame image's whole codestream: every fragment after the Basic Offset Table."""
    try:
        return b"".join(itertools.islice(generate_fragments(ds.PixelData), 1, None))
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
