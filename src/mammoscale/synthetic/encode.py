"""Encode a drawn mammogram as a DICOM dataset, with the header and encoding variations real sets have.

:func:`make_dataset` turns brightness in [0, 1] into stored values of a chosen bit depth,
photometric interpretation, rescale and VOI (window, sigmoid, VOI LUT, none), and compresses them
with a chosen transfer syntax. :func:`mammogram_header` is the minimal dataset underneath, also
used by the tests to write exactly the stored values they need.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

TRANSFER_SYNTAXES = (JPEG2000Lossless, RLELossless, ExplicitVRLittleEndian, JPEGLSLossless)
VARIATIONS = {
    "transfer_syntax": tuple(str(uid) for uid in TRANSFER_SYNTAXES),
    "bits_stored": (12, 14, 16),
    "photometric": ("MONOCHROME2", "MONOCHROME1"),
    "voi": ("window", "multi_window", "sigmoid", "linear_exact", "lut", "none"),
    "rescale": ("none", "slope_intercept"),
    "artefact": ("none", "frame", "none", "edge"),
}
"""Header and image variations; each value appears at least once in any set of >= 12 images."""


def make_dataset(
    brightness: np.ndarray,
    *,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    voi: str = "window",
    rescale: str = "none",
    transfer_syntax: UID = ExplicitVRLittleEndian,
    patient_id: int = 10_001,
    image_id: int = 1,
    laterality: str = "L",
    view: str = "CC",
    seed: int = 0,
) -> Dataset:
    """A mammography DICOM dataset whose decoded image is ``brightness`` (values in [0, 1]).

    Stored values use the full ``bits_stored`` range, inverted for MONOCHROME1, with the
    window (or VOI LUT) chosen so that the tissue range [0.35, 0.95] fills the display.
    ``voi`` is one of ``VARIATIONS["voi"]``; ``rescale="slope_intercept"`` stores values
    through RescaleSlope 0.5 / RescaleIntercept -100.
    """
    if voi not in VARIATIONS["voi"]:
        raise ValueError(f"voi must be one of {VARIATIONS['voi']}, not {voi!r}")
    top = (1 << bits_stored) - 1
    slope, intercept = (0.5, -100.0) if rescale == "slope_intercept" else (1.0, 0.0)
    # Modality values span what the stored range can express after rescale.
    m_low, m_high = intercept, top * slope + intercept
    shown = 1.0 - brightness if photometric == "MONOCHROME1" else brightness
    modality = m_low + shown.astype(np.float64) * (m_high - m_low)
    stored = np.clip(np.rint((modality - intercept) / slope), 0, top).astype(np.uint16)

    ds = mammogram_header(
        stored,
        bits_stored=bits_stored,
        photometric=photometric,
        instance_uid=generate_uid(entropy_srcs=[str(seed), str(image_id)]),
    )
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(seed), "study", str(patient_id)])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(seed), "series", str(image_id)])
    ds.PatientID = str(patient_id)
    ds.PatientName = f"SYNTHETIC^{patient_id}"
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.PresentationIntentType = "FOR PRESENTATION"
    if rescale == "slope_intercept":
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleType = "US"
    _set_voi(ds, voi, m_low=m_low, m_high=m_high, monochrome1=photometric == "MONOCHROME1")
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, generate_instance_uid=False)
    return ds


def mammogram_header(
    stored: np.ndarray,
    *,
    bits_stored: int,
    photometric: str = "MONOCHROME2",
    instance_uid: str | None = None,
) -> Dataset:
    """A minimal MG dataset (file meta, SOP and image pixel modules) holding ``stored`` natively.

    16 bits allocated; signed (PixelRepresentation 1) when ``stored`` has a signed dtype.
    Callers add the rest of the header, then ``compress`` if they want another syntax.
    """
    signed = np.issubdtype(stored.dtype, np.signedinteger)
    instance_uid = instance_uid or generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.SOPInstanceUID = instance_uid
    ds.Modality = "MG"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = stored.astype("<i2" if signed else "<u2").tobytes()
    return ds


def _set_voi(ds: Dataset, voi: str, *, m_low: float, m_high: float, monochrome1: bool) -> None:
    """Window the tissue brightness range [0.35, 0.95] (mirrored for MONOCHROME1)."""
    span = m_high - m_low
    low, high = (0.05, 0.65) if monochrome1 else (0.35, 0.95)
    center, width = m_low + span * (low + high) / 2, span * (high - low)
    if voi == "window":
        ds.WindowCenter, ds.WindowWidth = f"{center:.1f}", f"{width:.1f}"
        ds.VOILUTFunction = "LINEAR"
    elif voi == "multi_window":
        ds.WindowCenter = [f"{center:.1f}", f"{m_low + span / 2:.1f}"]
        ds.WindowWidth = [f"{width:.1f}", f"{span:.1f}"]
        ds.WindowCenterWidthExplanation = ["TISSUE", "FULL"]
    elif voi == "sigmoid":
        ds.WindowCenter, ds.WindowWidth = f"{center:.1f}", f"{width:.1f}"
        ds.VOILUTFunction = "SIGMOID"
    elif voi == "linear_exact":
        ds.WindowCenter, ds.WindowWidth = f"{center:.1f}", f"{width:.1f}"
        ds.VOILUTFunction = "LINEAR_EXACT"
    elif voi == "lut":
        # 16-bit output entries over the window only; below it LUT[0], above it LUT[-1].
        first = max(0, int(np.floor(center - width / 2)))
        entries = min(int(np.ceil(width)) + 1, 65536)
        ramp = np.clip((first + np.arange(entries) - (center - width / 2)) / width, 0, 1)
        item = Dataset()
        item.add_new(0x00283002, "US", [entries % 65536, first, 16])  # LUTDescriptor
        item.add_new(0x00283006, "OW", np.rint(ramp * 65535).astype("<u2").tobytes())  # LUTData
        item.LUTExplanation = "TISSUE"
        ds.VOILUTSequence = Sequence([item])
