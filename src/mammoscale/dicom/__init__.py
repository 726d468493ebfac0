"""Decoding mammography DICOM files: from a file to the normalised 2-D image a model sees.

- :mod:`~mammoscale.dicom.read`: the file checked, its header read (a deflated one inflated within bounds);
- :mod:`~mammoscale.dicom.pixels`: the stored values, decoded by a codec or read as stored;
- :mod:`~mammoscale.dicom.j2k`: a JPEG 2000 frame at a coarser resolution level;
- :mod:`~mammoscale.dicom.grayscale`: modality LUT, VOI LUT or window, min-max;
- :mod:`~mammoscale.dicom.decode`: the pipeline in the standard's order (:func:`decode`);
- :mod:`~mammoscale.dicom.errors`: one :class:`DicomError` subclass per reason a file fails;
- :mod:`~mammoscale.dicom.cli`: ``mammoscale-decode``.

Imports: numpy, pydicom and its codec plugins, Pillow, and :mod:`mammoscale.errors`; nothing else of
mammoscale.
"""

from mammoscale.dicom.cli import cli
from mammoscale.dicom.decode import Decoded, DecodeReport, decode, decode_with_report
from mammoscale.dicom.errors import (
    ERROR_KINDS,
    CodecCrashError,
    ConstantImageError,
    CorruptPixelDataError,
    DicomError,
    ImplausibleShapeError,
    InternalError,
    InvalidHeaderError,
    MissingCodecError,
    MissingFileError,
    MissingPixelDataError,
    NotDicomError,
    ShapeMismatchError,
    TooLargeError,
    TruncatedError,
    UnreadableFileError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
)
from mammoscale.dicom.grayscale import apply_voi, minmax, modality_lut, to_uint8, window
from mammoscale.dicom.pixels import NATIVE, Stored, codestream_shape, stored_values
from mammoscale.dicom.read import DEFAULT_MAX_PIXELS, file_problem, header_shape, read_dataset

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ERROR_KINDS",
    "NATIVE",
    "CodecCrashError",
    "ConstantImageError",
    "CorruptPixelDataError",
    "DecodeReport",
    "Decoded",
    "DicomError",
    "ImplausibleShapeError",
    "InternalError",
    "InvalidHeaderError",
    "MissingCodecError",
    "MissingFileError",
    "MissingPixelDataError",
    "NotDicomError",
    "ShapeMismatchError",
    "Stored",
    "TooLargeError",
    "TruncatedError",
    "UnreadableFileError",
    "UnsupportedImageError",
    "UnsupportedTransferSyntaxError",
    "apply_voi",
    "cli",
    "codestream_shape",
    "decode",
    "decode_with_report",
    "file_problem",
    "header_shape",
    "minmax",
    "modality_lut",
    "read_dataset",
    "stored_values",
    "to_uint8",
    "window",
]
