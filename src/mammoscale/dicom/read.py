"""From a file to its DICOM dataset, the header checked: nothing is read that the header has not vouched for.

A path that is not a regular file is said to be what it is, and never opened (a named pipe would
block). A deflated dataset is inflated here, within bounds, rather than by pydicom
(:func:`_inflate`): a decompression bomb is refused before it costs memory. Rows x Columns are
checked against the pixel limit before any pixel data is read (:func:`shape_problem`).
:mod:`mammoscale.dicom.pixels` turns the dataset's pixel data into stored values.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
)

from mammoscale.dicom.errors import (
    DicomError,
    InvalidHeaderError,
    MissingFileError,
    MissingPixelDataError,
    NotDicomError,
    TooLargeError,
    TruncatedError,
    UnreadableFileError,
    UnsupportedImageError,
)

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
"""Largest Rows x Columns decoded by default: about 5x the largest mammogram (4096 x 3328)."""

PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
"""(7FE0,0010) Pixel Data as it appears in a little-endian file."""
MAX_BYTES_PER_PIXEL = 2
"""Of the BitsAllocated values decoded (8 and 16), the larger's bytes."""
HEADER_MARGIN = 16 * 1024 * 1024
"""What a deflated dataset may inflate to beyond its pixel data (the header before it, any element after it).
A mammogram's header is tens of kilobytes."""
INFLATE_STEP = 1024 * 1024
"""Bytes of a deflated dataset read, and at most inflated, at a time."""

log = logging.getLogger("mammoscale.dicom")


def file_problem(path: Path | str) -> DicomError | None:
    """Why ``path`` cannot be read as a file, or None for a regular file: a :class:`MissingFileError` when nothing is
    there, an :class:`UnreadableFileError` saying what is there instead (a directory, a named pipe, ...).

    The path is examined, never opened: opening a named pipe (FIFO) blocks until something writes to it.
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            return MissingFileError(path, f"is a symbolic link to {os.readlink(path)}, which does not exist")
        return MissingFileError(path, "no such file")
    except (OSError, ValueError) as exc:
        return UnreadableFileError(path, f"cannot be examined: {getattr(exc, 'strerror', None) or exc}")
    return _not_a_file(path, mode)


def _not_a_file(path: Path | str, mode: int) -> UnreadableFileError | None:
    """What a ``stat`` mode that is not a regular file's is, as the error of reading it."""
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    what = next((name for test, name in kinds if test(mode)), "not a regular file")
    return UnreadableFileError(path, f"is {what}, not a file")


def _open(path: Path):
    """``path`` opened for reading, once :func:`file_problem` found a regular file there.

    Opened non-blocking and checked again (fstat) once open: a path replaced by a named pipe in between
    cannot block the process.
    """
    fp = open(str(path), "rb", opener=_non_blocking)  # noqa: SIM115 (the caller's); a str name, for pydicom's messages
    try:
        problem = _not_a_file(path, os.fstat(fp.fileno()).st_mode)
    except BaseException:
        fp.close()
        raise
    if problem is not None:
        fp.close()
        raise problem
    return fp


def _non_blocking(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))


def read_dataset(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Dataset:
    """Read the header and the (still encoded) pixel data; check that an image is there.

    ``max_pixels`` bounds what a deflated dataset may inflate to (:func:`_inflate`).
    """
    ds = _read(path, max_pixels=max_pixels, header_only=False)
    if "TransferSyntaxUID" not in ds.file_meta:
        raise TruncatedError(path, "file meta information has no TransferSyntaxUID (file cut short?)")
    if "PixelData" not in ds:
        with _open(path) as fp:
            cut = PIXEL_DATA_TAG in fp.read()
        if cut:
            raise TruncatedError(path, "file ends inside the Pixel Data element")
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise UnsupportedImageError(path, "float pixel data is not a mammogram")
        raise MissingPixelDataError(path, "no Pixel Data element (7FE0,0010); the file may also be cut short before it")
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "PhotometricInterpretation"):
        if ds.get(keyword) in (None, ""):
            raise InvalidHeaderError(path, f"required attribute {keyword} is missing")
    return ds


def _read(path: Path, *, max_pixels: int, header_only: bool) -> Dataset:
    """The dataset of ``path`` (without its pixel data when ``header_only``), or the :class:`DicomError` why not."""
    problem = file_problem(path)
    if problem is not None:
        raise problem
    try:
        with _open(path) as fp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = _file_meta(fp)
            if meta is not None and meta[1].get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
                return _read_deflated(fp, path, *meta, max_pixels=max_pixels, header_only=header_only)
            fp.seek(0)
            return pydicom.dcmread(fp, stop_before_pixels=header_only)
    except DicomError:
        raise
    except InvalidDicomError:
        raise NotDicomError(path, "not a DICOM file (no 'DICM' prefix after the 128-byte preamble)") from None
    except OSError as exc:
        if exc.errno is not None:  # the system refused (permissions, I/O error): the file is there but unreadable
            raise UnreadableFileError(path, f"cannot be read: {exc.strerror or exc}") from None
        raise TruncatedError(path, f"file ends inside the header ({exc})") from None
    except (EOFError, struct.error) as exc:
        raise TruncatedError(path, f"file ends inside the header ({exc})") from None
    except Exception as exc:
        raise NotDicomError(path, f"unreadable DICOM header: {exc}") from None


def _file_meta(fp) -> tuple[bytes, Dataset] | None:
    """The preamble and the file meta group, ``fp`` left after them; None where they cannot be read (pydicom's
    reading of the whole file then says why). pydicom has no public reader of the group from an open file."""
    try:
        preamble = read_preamble(fp, False)
        return preamble, _read_file_meta_info(fp)
    except Exception:
        return None


def _read_deflated(
    fp, path: Path, preamble: bytes, file_meta: Dataset, *, max_pixels: int, header_only: bool
) -> FileDataset:
    """A Deflated Explicit VR Little Endian file (PS3.5 A.5) read as pydicom would, but inflated by :func:`_inflate`.

    The dataset keeps its transfer syntax: its pixel data is native, little-endian.
    """
    data = _inflate(fp, path, max_pixels=max_pixels, header_only=header_only)
    stop = _at_pixel_data if header_only else None
    dataset = pydicom.filereader.read_dataset(DicomBytesIO(data), False, True, stop_when=stop)
    ds = FileDataset(str(path), dataset, preamble, file_meta, is_implicit_VR=False, is_little_endian=True)
    ds.set_original_encoding(False, True, dataset.original_character_set)
    return ds


def _at_pixel_data(tag, vr, length) -> bool:
    return tag == 0x7FE00010


def _inflate(fp, path: Path, *, max_pixels: int, header_only: bool) -> bytes:
    """The rest of ``fp``, a raw deflate stream, inflated in steps: never more than the header allows.

    pydicom inflates a deflated dataset whole as it opens the file, before anything can read Rows and Columns:
    half a megabyte of deflated zeros becomes a gigabyte. Here the header is read as soon as the Pixel Data
    element is reached: Rows x Columns over ``max_pixels`` is refused there, and the rest may inflate to the
    pixel data the header describes plus :data:`HEADER_MARGIN`, no more. Until then, the bound is what the
    largest image allowed could take (``max_pixels`` x :data:`MAX_BYTES_PER_PIXEL` + :data:`HEADER_MARGIN`).
    ``header_only`` stops at the Pixel Data element.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    limit = max_pixels * MAX_BYTES_PER_PIXEL + HEADER_MARGIN
    why = f"more than {max_pixels:,} pixels (max_pixels) take"
    searched, found = 0, False
    pending = b""
    while not inflater.eof:
        if not pending:
            pending = fp.read(INFLATE_STEP)
        try:
            chunk = inflater.decompress(pending, min(INFLATE_STEP, limit + 1 - len(out)))
        except zlib.error as exc:
            raise NotDicomError(path, f"the deflated dataset cannot be inflated: the file is damaged ({exc})") from None
        if not pending and not chunk and not inflater.eof:
            raise TruncatedError(path, "the deflated dataset ends before its end (file cut short?)")
        pending = inflater.unconsumed_tail
        out += chunk
        if not found:
            header, searched = _header_in(out, searched)
            if header is not None:
                found = True
                end, ds = header
                rows, cols = ds.get("Rows"), ds.get("Columns")
                if isinstance(rows, int) and isinstance(cols, int):
                    problem = shape_problem(path, rows, cols, max_pixels=max_pixels)
                    if isinstance(problem, TooLargeError):
                        raise problem
                    size = max(rows * cols, 0) * (1 if ds.get("BitsAllocated") == 8 else MAX_BYTES_PER_PIXEL)
                    if end + size + HEADER_MARGIN < limit:
                        limit = end + size + HEADER_MARGIN
                        why = f"when its Rows x Columns ({rows} x {cols}) take {size:,}"
                if header_only:
                    return bytes(out)
        if len(out) > limit:
            raise TooLargeError(
                path, f"the deflated dataset inflates to more than {limit:,} bytes, {why}: a decompression bomb?"
            )
    return bytes(out)


def _header_in(out: bytearray, searched: int) -> tuple[tuple[int, Dataset] | None, int]:
    """Where the Pixel Data element starts in the inflated dataset ``out`` and the header before it, once there;
    and how far the search has gone (it resumes there). The tag's bytes found, the dataset is read up to them:
    bytes of a value that look like the tag do not stop pydicom's reading."""
    at = out.find(PIXEL_DATA_TAG, max(0, searched - len(PIXEL_DATA_TAG) + 1))
    if at < 0:
        return None, len(out)
    buffer = DicomBytesIO(bytes(out))
    where = []

    def stop(tag, vr, length) -> bool:
        if tag == 0x7FE00010:
            where.append(buffer.tell())
            return True
        return False

    try:
        ds = pydicom.filereader.read_dataset(buffer, False, True, stop_when=stop)
    except Exception:
        ds = None
    if ds is None or not where:
        return None, len(out)
    return (where[0], ds), len(out)


def shape_problem(path: Path | str, rows: int, cols: int, *, max_pixels: int) -> DicomError | None:
    """Why Rows x Columns cannot be decoded, or None: not both positive (invalid_header), or over ``max_pixels``."""
    if rows <= 0 or cols <= 0:
        return InvalidHeaderError(path, f"Rows x Columns is {rows} x {cols}")
    if rows * cols > max_pixels:
        return TooLargeError(path, f"{rows} x {cols} pixels is over the limit of {max_pixels:,} (max_pixels)")
    return None


def header_shape(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int] | None:
    """(Rows, Columns) from the header alone, pixel data not read; None when the header cannot say, or says a shape
    that cannot be decoded (not positive, over ``max_pixels``): the decode that follows will say why, with its
    kind, as it would without this look."""
    try:
        ds = _read(Path(path), max_pixels=max_pixels, header_only=True)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception:
        return None
    return None if shape_problem(path, rows, cols, max_pixels=max_pixels) else (rows, cols)
