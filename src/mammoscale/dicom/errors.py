"""Why a file cannot be turned into an image: one :class:`DicomError` subclass per reason.

Each has a one-word ``kind``, used as a column of the QC tables, and a message a user can act on.
"""

from __future__ import annotations

import traceback
from pathlib import Path


class DicomError(Exception):
    """A file that cannot be turned into an image; ``kind`` names the reason in one word."""

    kind = "dicom"

    def __init__(self, path: Path | str, message: str):
        self.path = str(path)
        self.message = message
        super().__init__(f"{path}: {message}")


class MissingFileError(DicomError):
    kind = "missing_file"


class UnreadableFileError(DicomError):
    kind = "unreadable"


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


class ImplausibleShapeError(DicomError):
    """Rows and Columns fit the pixel data's length but not its content: each row does not continue the last."""

    kind = "implausible_shape"


class CodecCrashError(DicomError):
    """The process decoding the file died (a codec's crash): the file is refused, the other files go on."""

    kind = "codec_crash"


class InternalError(DicomError):
    """Processing the file raised something that is not a :class:`DicomError`: a bug met on this file (ours or a
    library's). The file is recorded with the exception and where it was raised; the other files go on."""

    kind = "internal_error"

    @classmethod
    def of(cls, path: Path | str, exc: BaseException) -> InternalError:
        """The error recording ``exc``: its type, its message on one line, and the file and line it was raised at."""
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {_short(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
        message = " ".join(str(exc).split())
        return cls(path, f"{type(exc).__name__}{': ' + message if message else ''}{where}")


def _short(filename: str) -> str:
    """A source file from its package down (``mammoscale/preprocess/tiling.py``), not the whole install path."""
    parts = Path(filename).parts
    for marker in ("site-packages", "src"):
        if marker in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(marker) :])
    return Path(filename).name


ERROR_KINDS = tuple(
    cls.kind
    for cls in (
        MissingFileError,
        UnreadableFileError,
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
        ImplausibleShapeError,
        CodecCrashError,
        InternalError,
    )
)
