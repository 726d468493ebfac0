"""A bad-input corpus: a synthetic RSNA-layout set with every fault a real one has been seen to have.

:func:`make_corpus` copies a clean synthetic set and damages it, one fault per image (or per row of
``train.csv``), and returns what must become of each: a decode error of a given kind, an exclusion
of the manifest with a given reason, or a clean decode with a given note. Nothing is downloaded:
every fault is made here from the project's own synthetic files.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from mammoscale import files

NATIVE, J2K, JLS, RLE = str(ExplicitVRLittleEndian), str(JPEG2000Lossless), str(JPEGLSLossless), str(RLELossless)


def _edit(path: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def _bytes(path: Path, change: Callable[[bytearray], bytes]) -> None:
    path.write_bytes(change(bytearray(path.read_bytes())))


def _noise_in_the_middle(data: bytearray) -> bytes:
    n = len(data)
    data[n // 2 - n // 8 : n // 2 + n // 8] = np.random.default_rng(0).integers(0, 256, n // 4, np.uint8).tobytes()
    return bytes(data)


def _bomb(data: bytearray) -> bytes:
    """The JPEG 2000 SIZ marker made to claim 40,000 x 40,000 pixels over the same small codestream."""
    at = data.index(b"\xff\x4f\xff\x51")
    data[at + 8 : at + 16] = struct.pack(">II", 40_000, 40_000)
    return bytes(data)


def deflated_bomb(path: Path, rows: int = 16_000, cols: int = 16_000, *, bits: int = 16, declared=None) -> Path:
    """``path`` rewritten as a Deflated Explicit VR Little Endian file of ``rows`` x ``cols`` zeros, its header
    saying ``declared`` (rows, cols) if given. The zeros are streamed through zlib, never held: 16,000 x 16,000
    16-bit pixels deflate to half a megabyte."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ds.Rows, ds.Columns = declared or (rows, cols)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, min(bits, 12), min(bits, 12) - 1
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    written = buffer.getvalue()
    start = 132 + 12 + struct.unpack("<I", written[140:144])[0]  # after the preamble and the file meta group
    size = rows * cols * bits // 8
    element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW" if bits == 16 else b"OB", 0, size)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [written[:start], deflate.compress(zlib.decompress(written[start:], -zlib.MAX_WBITS) + element)]
    zeros = bytes(1 << 20)
    for at in range(0, size, len(zeros)):
        parts.append(deflate.compress(zeros[: min(len(zeros), size - at)]))
    parts.append(deflate.flush())
    path.write_bytes(b"".join(parts))
    return path


def _rows(delta: int) -> Callable[[pydicom.Dataset], None]:
    def change(ds):
        ds.Rows += delta

    return change


def _swap(ds):
    ds.Rows, ds.Columns = ds.Columns, ds.Rows


def _constant_monochrome1(ds):
    ds.PixelData = bytes(len(ds.PixelData))
    ds.PhotometricInterpretation = "MONOCHROME1"


def _beyond_bits_stored(ds):
    words = np.frombuffer(ds.PixelData, "<u2").copy()
    words[:500] = 0xFFFF
    ds.PixelData = words.tobytes()


def _modality_lut_without_data(ds):
    ds.ModalityLUTSequence = Sequence([pydicom.Dataset()])


def _voi_lut_without_data(ds):
    item = pydicom.Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 12])
    ds.VOILUTSequence = Sequence([item])


def _window_nan(ds):
    """A window of NaN, and nothing before it in the VOI's order (a VOI LUT Sequence would be used instead)."""
    if "VOILUTSequence" in ds:
        del ds.VOILUTSequence
    with warnings.catch_warnings():  # pydicom's, that NaN is no DS value: the point
        warnings.simplefilter("ignore")
        ds.WindowCenter, ds.WindowWidth = "NaN", "400"


def _set(**attributes) -> Callable[[pydicom.Dataset], None]:
    def change(ds):
        for keyword, value in attributes.items():
            if keyword == "TransferSyntaxUID":
                ds.file_meta.TransferSyntaxUID = value
            elif value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)

    return change


@dataclasses.dataclass(frozen=True)
class Fault:
    name: str
    syntax: str | None
    """The transfer syntax the fault needs (None: any)."""
    damage: Callable[[Path], None]
    kind: str | None
    """The decode error it must give; None: it decodes, with ``note`` in its message."""
    note: str = ""


DECODE_FAULTS = (
    Fault("rle-rows", RLE, lambda p: _edit(p, _rows(-12)), "shape_mismatch"),
    Fault("rle-noise", RLE, lambda p: _bytes(p, _noise_in_the_middle), "corrupt_pixel_data"),
    Fault("native-rows", NATIVE, lambda p: _edit(p, _rows(1)), "shape_mismatch"),
    Fault("j2k-rows", J2K, lambda p: _edit(p, _rows(1)), "shape_mismatch"),
    Fault("jpegls-rows", JLS, lambda p: _edit(p, _rows(1)), "shape_mismatch"),
    Fault("native-swapped", NATIVE, lambda p: _edit(p, _swap), "implausible_shape"),
    Fault("rle-swapped", RLE, lambda p: _edit(p, _swap), "implausible_shape"),
    Fault("j2k-truncated", J2K, lambda p: _bytes(p, lambda d: bytes(d[: len(d) * 3 // 5])), "truncated"),
    Fault("not-dicom", None, lambda p: p.write_bytes(b"not a DICOM file\n" * 40), "not_dicom"),
    Fault("no-pixel-data", NATIVE, lambda p: _edit(p, _set(PixelData=None)), "no_pixel_data"),
    Fault(
        "mpeg2",
        J2K,
        lambda p: _edit(p, _set(TransferSyntaxUID="1.2.840.10008.1.2.4.100")),
        "unsupported_transfer_syntax",
    ),
    Fault("j2k-bomb", J2K, lambda p: _bytes(p, _bomb), "too_large"),
    Fault("rgb", NATIVE, lambda p: _edit(p, _set(PhotometricInterpretation="RGB")), "unsupported_image"),
    Fault("multi-frame", NATIVE, lambda p: _edit(p, _set(NumberOfFrames=2)), "unsupported_image"),
    Fault("modality-lut", None, lambda p: _edit(p, _modality_lut_without_data), "invalid_header"),
    Fault("constant-monochrome1", NATIVE, lambda p: _edit(p, _constant_monochrome1), "constant_image"),
    Fault(
        "beyond-bits-stored", NATIVE, lambda p: _edit(p, _beyond_bits_stored), None, "stored values beyond BitsStored"
    ),
    Fault("voi-lut-no-data", None, lambda p: _edit(p, _voi_lut_without_data), None, "VOI LUT ignored"),
    Fault("deflated-bomb", NATIVE, deflated_bomb, "too_large"),
    Fault("native-zero-rows", NATIVE, lambda p: _edit(p, _set(Rows=0)), "invalid_header"),
    Fault("window-nan", None, lambda p: _edit(p, _window_nan), "invalid_header"),
    Fault(
        "rescale-slope-zero", None, lambda p: _edit(p, _set(RescaleSlope="0", RescaleIntercept="0")), "constant_image"
    ),
)


@dataclasses.dataclass
class Corpus:
    root: Path
    decode: dict[str, Fault]
    """image_id -> the fault done to that image (decoded in stage 1)."""
    excluded: dict[str, str]
    """image_id (as train.csv has it) -> the manifest's reason for it."""
    rows: int
    """Rows of the damaged train.csv."""


def make_corpus(clean: Path, dest: Path) -> Corpus:
    """Copy the synthetic set ``clean`` to ``dest`` and damage it (see the module docstring)."""
    shutil.copytree(clean, dest)
    table = pd.read_csv(dest / files.TRAIN_CSV, dtype=str)
    truth = pd.read_csv(dest / files.SYNTHETIC_TRUTH, dtype=str)
    syntax_of = dict(zip(truth["image_id"], truth["transfer_syntax"], strict=True))
    # breasts with one CC and one MLO, nothing else: their images are decoded, whatever else happens
    views = table.groupby(["patient_id", "laterality"])["view"].apply(sorted)
    simple = [key for key, v in views.items() if v == ["CC", "MLO"]]
    free = [
        i
        for key in simple
        for i in table.loc[(table["patient_id"] == key[0]) & (table["laterality"] == key[1]), "image_id"]
    ]
    decode: dict[str, Fault] = {}
    for fault in DECODE_FAULTS:
        image_id = next(i for i in free if i not in decode and fault.syntax in (None, syntax_of[i]))
        patient = table.loc[table["image_id"] == image_id, "patient_id"].item()
        fault.damage(files.image_path(dest, patient, image_id))
        decode[image_id] = fault
    # manifest faults on breasts of their own
    spare = [key for key in simple if not set(table.loc[table["patient_id"] == key[0], "image_id"]) & set(decode)]
    (p1, l1), (p2, l2), (p3, l3), (p4, l4) = spare[:4]
    excluded = {}
    row = table.index[(table["patient_id"] == p1) & (table["laterality"] == l1) & (table["view"] == "CC")][0]
    files.image_path(dest, p1, table.at[row, "image_id"]).unlink()
    excluded[table.at[row, "image_id"]] = "missing_file"
    row = table.index[(table["patient_id"] == p2) & (table["laterality"] == l2) & (table["view"] == "MLO")][0]
    table.at[row, "image_id"] = "../../../etc/passwd"
    excluded["../../../etc/passwd"] = "invalid_id"
    rows = table.index[(table["patient_id"] == p3) & (table["laterality"] == l3)]
    table.loc[rows, "laterality"] = "B"
    excluded.update(dict.fromkeys(table.loc[rows, "image_id"], "unknown_laterality"))
    cc = table.index[(table["patient_id"] == p4) & (table["laterality"] == l4) & (table["view"] == "CC")][0]
    duplicate = table.loc[[cc]].assign(view="MLO")
    table = pd.concat([table, duplicate], ignore_index=True)  # the same image id twice: both copies go
    excluded[table.at[cc, "image_id"]] = "duplicate_image_id"
    lonely = table.iloc[[0]].assign(patient_id="999999", image_id="999999001", laterality="L", view="AT")
    table = pd.concat([table, lonely], ignore_index=True)
    excluded["999999001"] = "no_standard_view"
    table.to_csv(dest / files.TRAIN_CSV, index=False)
    return Corpus(dest, decode, excluded, len(table))
