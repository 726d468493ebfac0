"""The grayscale pipeline against an independent implementation, on every real file at hand.

pydicom's own pipeline (``pixel_array`` with pylibjpeg's codecs where they apply, ``apply_modality_lut``,
``apply_voi_lut``) is written apart from ours, and decodes JPEG Lossless with another codec than ours:
decoding, sign correction, modality LUT or rescale, VOI LUT or window, MONOCHROME1.
Every grayscale single-frame file of pydicom's test data (pydicom-data, part of the test extra:
CT, MR, CR, DX files from several vendors, native and JPEG, JPEG-LS, JPEG 2000 and RLE, signed and
unsigned, 8 to 16 bits stored) that our decoder accepts must give the same image, to float32
precision. pydicom leaves VOI output in the window's output range; it is put into [0, 1] here by
the standard's own output range (PS3.3 C.11.2.1.2), and min-max where there is no VOI.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import data_manager
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from mammoscale import dicom


def _grayscale_single_frame(path: str) -> bool:
    try:
        ds = pydicom.dcmread(path, defer_size="1 KB")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        return (
            ds.get("PhotometricInterpretation") in ("MONOCHROME1", "MONOCHROME2") and frames == 1 and "PixelData" in ds
        )
    except Exception:  # a test file built to be unreadable in some way: not a pipeline comparison
        return False


def _local_test_files() -> list[str]:
    """pydicom's test files and pydicom-data's, from disk (``get_testdata_files`` would try to download)."""
    roots = [Path(data_manager.DATA_ROOT), *(s.data_path for s in data_manager.external_data_sources().values())]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sorted({str(p) for root in roots for p in Path(root).rglob("*.dcm") if _grayscale_single_frame(str(p))})


FILES = _local_test_files()


def _output_range(ds) -> tuple[float, float]:
    """The range a window maps to: the stored (or Modality LUT) range, through the rescale (PS3.3 C.11.2.1.2)."""
    if ds.get("ModalityLUTSequence"):
        low, high = 0, 2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0, 2 ** int(ds.BitsStored) - 1
    else:
        low, high = -(2 ** (int(ds.BitsStored) - 1)), 2 ** (int(ds.BitsStored) - 1) - 1
    if ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        low, high = low * slope + intercept, high * slope + intercept
    return low, high


def reference(path: str) -> np.ndarray:
    """pydicom's pipeline, in [0, 1], MONOCHROME1 inverted."""
    ds = pydicom.dcmread(path)
    ds.pixel_array_options(decoding_plugin="pylibjpeg")  # ours decodes JPEG Lossless with GDCM
    try:
        pixels = ds.pixel_array
    except Exception:  # a syntax pylibjpeg does not read (JPEG-LS: pyjpegls): pydicom's own choice
        ds.pixel_array_options(decoding_plugin="")
        pixels = ds.pixel_array
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if ds.get("VOILUTSequence"):
        unit = apply_voi_lut(values, ds, prefer_lut=True) / (2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        low, high = _output_range(ds)
        unit = (apply_voi_lut(values, ds, prefer_lut=False) - low) / (high - low)
    else:
        spread = values.max() - values.min()
        unit = (values - values.min()) / spread if spread else np.zeros_like(values)
    return 1.0 - unit if ds.PhotometricInterpretation == "MONOCHROME1" else unit


REFUSED = {
    "JPEG-lossy.dcm": "corrupt_pixel_data",  # 12-bit JPEG Extended: no installed codec reads it
    "JPEG2000-embedded-sequence-delimiter.dcm": "too_large",  # its SIZ claims 1024 x 3,722,445,056
    "MR_small_padded.dcm": "shape_mismatch",  # 128 bytes more than Rows x Columns
    "MR_truncated.dcm": "shape_mismatch",  # 62 bytes fewer
    "liver_1frame.dcm": "unsupported_image",  # 1 bit allocated (a segmentation)
    "liver_expb_1frame.dcm": "unsupported_image",
    "rtdose_1frame.dcm": "unsupported_image",  # 32 bits allocated (a dose grid)
    "rtdose_expb_1frame.dcm": "unsupported_image",
    "rtdose_rle_1frame.dcm": "unsupported_image",
}
"""The real test files our decoder refuses, each for the reason it must give: not compared, checked refused."""
COMPARED = [p for p in FILES if Path(p).name not in REFUSED]


def test_there_are_real_files_to_compare():
    assert len(COMPARED) >= 40, "pydicom-data is part of the test extra"


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", COMPARED, ids=[Path(p).name for p in COMPARED])
def test_the_pipeline_equals_pydicoms_on_a_real_file(path):
    ours = dicom.decode_with_report(path, output="float32")
    np.testing.assert_allclose(ours.image, reference(path), rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", [p for p in FILES if Path(p).name in REFUSED], ids=lambda p: Path(p).name)
def test_the_real_files_we_refuse_are_refused_for_their_reason(path):
    with pytest.raises(dicom.DicomError) as refused:
        dicom.decode(path)
    assert refused.value.kind == REFUSED[Path(path).name]
