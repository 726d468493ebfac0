"""The DICOM decoder: every transfer syntax, every VOI branch, every error, with actual values."""

from __future__ import annotations

import hashlib
import importlib.metadata

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from mammoscale import dicom
from mammoscale.synthetic import make_dataset, phantom

from conftest import dataset_from_stored, ramp

SYNTAXES = [JPEG2000Lossless, RLELossless, ExplicitVRLittleEndian, JPEGLSLossless]


def linear(x, center, width):
    """PS3.3 C.11.2.1.2.1, written out independently of the module."""
    out = np.empty(np.shape(x))
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    for i, v in np.ndenumerate(x):
        out[i] = 0.0 if v <= low else 1.0 if v > high else (v - (center - 0.5)) / (width - 1) + 0.5
    return out


# round trips: every transfer syntax x photometric interpretation


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name.split()[0])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_known_stored_values_decode_through_the_window(write_dicom, syntax, photometric):
    stored = ramp()
    path = write_dicom(stored, transfer_syntax=syntax, photometric=photometric, WindowCenter="2048", WindowWidth="2048")
    decoded = dicom.decode_with_report(path, output="float32")
    expected = linear(stored[0], 2048, 2048)
    if photometric == "MONOCHROME1":
        expected = 1.0 - expected
    np.testing.assert_allclose(decoded.image[0], expected, atol=1e-6)
    assert decoded.image.dtype == np.float32 and decoded.image.shape == stored.shape
    assert decoded.report.transfer_syntax == str(syntax)
    assert decoded.report.voi == "window:LINEAR"
    as_uint8 = dicom.decode(path)
    assert as_uint8.dtype == np.uint8
    np.testing.assert_array_equal(as_uint8[0], np.rint(expected * 255).astype(np.uint8))


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name.split()[0])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("bits", [12, 16])
def test_synthetic_writer_and_decoder_round_trip_brightness(tmp_path, syntax, photometric, bits):
    brightness = np.tile(np.linspace(0.0, 1.0, 97, dtype=np.float32), (64, 1))
    ds = make_dataset(brightness, bits_stored=bits, photometric=photometric, voi="linear_exact", transfer_syntax=syntax)
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    got = dicom.decode(path, output="float32")
    # the writer windows brightness 0.35..0.95 to the full display range
    np.testing.assert_allclose(got[0], np.clip((brightness[0] - 0.35) / 0.6, 0, 1), atol=2e-3)


def test_jpeg_lossless_sv1_reference_file():
    """JPEG Lossless SV1 (the RSNA set's syntax) has no encoder here: pydicom's reference file."""
    path = get_testdata_file("JPEG-LL.dcm", download=False)
    assert path is not None, "pydicom-data is part of the test extra"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    stored, clipped, decoder, *_ = dicom.stored_values(ds, path, max_pixels=dicom.DEFAULT_MAX_PIXELS)
    assert stored.shape == (1024, 256) and clipped == 0
    assert decoder == f"python-gdcm {importlib.metadata.version('python-gdcm')}"  # chosen by bench/jpeg_lossless.py
    assert (int(stored.min()), int(stored.max()), int(stored.sum())) == (0, 278, 3596452)
    decoded = dicom.decode_with_report(path)
    assert decoded.report.voi == "minmax"
    np.testing.assert_array_equal(decoded.image, np.rint(stored / 278 * 255).astype(np.uint8))
    assert dicom.codestream_shape(next(generate_frames(ds.PixelData, number_of_frames=1))) == (1024, 256)


@pytest.mark.parametrize("damage", ["cut", "noise"])
def test_a_damaged_jpeg_lossless_frame_is_refused(tmp_path, damage):
    """pylibjpeg-libjpeg returns an image for a cut SV1 codestream; GDCM, first for JPEG Lossless, refuses it,
    and no other plugin gets the frame."""
    ds = pydicom.dcmread(get_testdata_file("JPEG-LL.dcm", download=False))
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    n = len(frame)
    if damage == "cut":
        frame = frame[: n * 3 // 5]
    else:
        frame[n // 2 - n // 16 : n // 2 + n // 16] = (
            np.random.default_rng(0).integers(0, 256, n // 8, np.uint8).tobytes()
        )
    ds.PixelData = encapsulate([bytes(frame)])
    path = tmp_path / "damaged.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(dicom.CorruptPixelDataError, match="decoding failed: gdcm"):
        dicom.decode(path)


# modality LUT and VOI branches


def test_rescale_is_applied_before_the_window(write_dicom):
    stored = ramp(top=4095)
    path = write_dicom(stored, RescaleSlope="2", RescaleIntercept="-1000", WindowCenter="3000", WindowWidth="4001")
    got = dicom.decode_with_report(path, output="float32")
    np.testing.assert_allclose(got.image[0], linear(stored[0] * 2 - 1000, 3000, 4001), atol=1e-6)
    assert got.report.rescaled


def test_multi_valued_window_uses_the_first_pair(write_dicom):
    stored = ramp()
    multi = write_dicom(stored, WindowCenter=["1000", "3000"], WindowWidth=["500", "2000"])
    single = write_dicom(stored, WindowCenter="1000", WindowWidth="500")
    np.testing.assert_array_equal(dicom.decode(multi), dicom.decode(single))
    np.testing.assert_allclose(dicom.decode(multi, output="float32")[0], linear(stored[0], 1000, 500), atol=1e-6)


def test_linear_exact_and_sigmoid_follow_the_standard(write_dicom):
    stored = ramp()
    x = stored[0].astype(float)
    exact = write_dicom(stored, WindowCenter="2000", WindowWidth="1000", VOILUTFunction="LINEAR_EXACT")
    sigmoid = write_dicom(stored, WindowCenter="2000", WindowWidth="1000", VOILUTFunction="SIGMOID")
    np.testing.assert_allclose(
        dicom.decode(exact, output="float32")[0], np.clip((x - 2000) / 1000 + 0.5, 0, 1), atol=1e-6
    )
    np.testing.assert_allclose(
        dicom.decode(sigmoid, output="float32")[0], 1 / (1 + np.exp(-4 * (x - 2000) / 1000)), atol=1e-6
    )
    assert dicom.decode_with_report(sigmoid).report.voi == "window:SIGMOID"


def test_voi_lut_sequence_is_preferred_and_indexed_from_first_mapped(write_dicom):
    stored = np.array([[0, 99, 100, 101, 102, 103, 500]])
    item = pydicom.Dataset()
    item.add_new(0x00283002, "US", [4, 100, 8])
    item.add_new(0x00283006, "OW", np.array([10, 20, 30, 255], "<u2").tobytes())
    path = write_dicom(stored, VOILUTSequence=Sequence([item]), WindowCenter="50", WindowWidth="10")
    got = dicom.decode_with_report(path, output="float32")
    np.testing.assert_allclose(got.image[0], np.array([10, 10, 10, 20, 30, 255, 255]) / 255)
    assert got.report.voi == "lut"
    window_only = dicom.decode_with_report(path, voi="window", output="float32")
    assert window_only.report.voi == "window:LINEAR"
    np.testing.assert_allclose(window_only.image, [[0, 1, 1, 1, 1, 1, 1]])


def test_a_voi_lut_item_without_lut_data_falls_back_to_the_window_and_says_so(write_dicom):
    item = pydicom.Dataset()
    item.add_new(0x00283002, "US", [4, 100, 8])  # a descriptor, and no LUT Data
    path = write_dicom(ramp(), VOILUTSequence=Sequence([item]), WindowCenter="2048", WindowWidth="4096")
    got = dicom.decode_with_report(path)
    assert got.report.voi == "window:LINEAR"
    assert got.report.notes == ("VOI LUT ignored (VOI LUT Sequence item has no LUT Data)",)
    assert dicom.decode_with_report(path, voi="lut").report.voi == "minmax"


@pytest.mark.parametrize(
    "item",
    [{}, {"LUTDescriptor": [4, 0, 16]}, {"LUTDescriptor": [4, 0, 16], "LUTData": b"\x01"}],
    ids=["empty-item", "no-lut-data", "short-lut-data"],
)
def test_a_malformed_modality_lut_sequence_is_an_invalid_header(write_dicom, item):
    lut = pydicom.Dataset()
    if "LUTDescriptor" in item:
        lut.add_new(0x00283002, "US", item["LUTDescriptor"])
        lut.ModalityLUTType = "OD"
    if "LUTData" in item:
        lut.add_new(0x00283006, "OW", item["LUTData"])
    path = write_dicom(ramp(), ModalityLUTSequence=Sequence([lut]))
    with pytest.raises(dicom.InvalidHeaderError, match="Modality LUT Sequence unusable"):
        dicom.decode(path)


def test_no_window_uses_min_max(write_dicom):
    stored = np.array([[100, 150, 200]])
    got = dicom.decode_with_report(write_dicom(stored), output="float32")
    np.testing.assert_allclose(got.image, [[0.0, 0.5, 1.0]])
    assert got.report.voi == "minmax"


def test_monochrome1_inverts_against_the_output_range_not_the_image_max(write_dicom):
    """A MONOCHROME1 image whose values never reach the window's top still maps as the window says."""
    stored = np.array([[1000, 2000]])
    got = dicom.decode(
        write_dicom(stored, photometric="MONOCHROME1", WindowCenter="2048", WindowWidth="4096"), output="float32"
    )
    np.testing.assert_allclose(got, 1 - linear(stored, 2048, 4096), atol=1e-6)


def test_invalid_window_falls_back_to_min_max_and_says_so(write_dicom):
    got = dicom.decode_with_report(
        write_dicom(np.array([[0, 10, 20]]), WindowCenter="10", WindowWidth="0"), output="float32"
    )
    np.testing.assert_allclose(got.image, [[0, 0.5, 1]])
    assert got.report.voi == "minmax"
    assert any("window ignored" in note for note in got.report.notes)


def test_window_functions_do_not_modify_their_input():
    values = np.arange(10.0)
    before = values.copy()
    dicom.window(values, 5, 4, "LINEAR")
    dicom.minmax(values)
    np.testing.assert_array_equal(values, before)


def test_decoding_does_not_change_the_file(write_dicom):
    path = write_dicom(ramp(), transfer_syntax=JPEG2000Lossless)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    dicom.decode(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


# out-of-range and degenerate pixel values


def test_values_beyond_bits_stored_are_clipped_and_reported(write_dicom):
    stored = np.array([[0, 4095, 5000, 65535]])
    got = dicom.decode_with_report(write_dicom(stored, bits_stored=12), output="float32")
    assert got.report.clipped_pixels == 2
    np.testing.assert_allclose(got.image, [[0, 1, 1, 1]])
    assert any("clipped" in n for n in got.report.notes)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless], ids=["native", "rle"])
def test_signed_values_are_bits_stored_twos_complement_whatever_lies_above_high_bit(write_dicom, syntax):
    """PS3.5 8.1.1: a signed stored value is the BitsStored-bit two's complement number; the bits above
    HighBit are not part of it. Words written without sign extension (0x0FFB for -5 in 12 bits) are
    common: read whole, every negative value would become a large positive one."""
    words = np.array([[0x0FFB, 0xFFFB, 0x0800, 0x0000, 0x07FF, 0xF7FF, 0x0BB8, 0xF448]], dtype=np.uint16)
    path = write_dicom(words.view(np.int16), bits_stored=12, signed=True, transfer_syntax=syntax)
    ds = pydicom.dcmread(path)
    values, clipped, decoder, foreign, _ = dicom.stored_values(ds, path, max_pixels=100)
    np.testing.assert_array_equal(values, [[-5, -5, -2048, 0, 2047, 2047, -1096, 1096]])
    assert clipped == 0
    if syntax == ExplicitVRLittleEndian:  # read as stored; pydicom's codecs hand back corrected values
        assert foreign == 5  # 0x0FFB, 0x0800, 0xF7FF, 0x0BB8 and 0xF448 are not sign-extended
        report = dicom.decode_with_report(path, voi="minmax").report
        assert report.clipped_pixels == 0 and "5 signed values not sign-extended above HighBit" in report.notes[0]


def test_constant_image_is_flagged_or_rejected(write_dicom):
    path = write_dicom(np.zeros((16, 16)))
    got = dicom.decode_with_report(path)
    assert got.report.constant and not got.image.any()
    with pytest.raises(dicom.ConstantImageError) as err:
        dicom.decode(path, reject_constant=True)
    assert err.value.kind == "constant_image"


# bad input: typed errors with clear messages


def test_missing_file(tmp_path):
    with pytest.raises(dicom.MissingFileError, match="no such file"):
        dicom.decode(tmp_path / "absent.dcm")


def test_not_a_dicom_file(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("patient_id,image_id\n1,2\n" * 20)
    with pytest.raises(dicom.NotDicomError) as err:
        dicom.decode(path)
    assert err.value.kind == "not_dicom" and "DICM" in err.value.message


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, JPEG2000Lossless], ids=["native", "j2k"])
@pytest.mark.parametrize("keep", [0.05, 0.5, 0.97])
def test_truncated_files(write_dicom, syntax, keep):
    noise = np.random.default_rng(0).integers(0, 4096, (64, 64))  # incompressible: pixel data dominates the file
    path = write_dicom(noise, transfer_syntax=syntax)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(dicom.DicomError) as err:
        dicom.decode(path)
    # a cut in the preamble is "not DICOM", one before the Pixel Data element cannot be told from
    # a file without one; inside native pixel data the sizes disagree
    assert err.value.kind in {"truncated", "not_dicom", "no_pixel_data", "shape_mismatch"}
    if keep >= 0.5:
        assert err.value.kind == ("shape_mismatch" if syntax == ExplicitVRLittleEndian else "truncated")


def test_truncated_header_after_the_prefix(write_dicom):
    path = write_dicom(ramp())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(dicom.TruncatedError):
        dicom.decode(path)


def test_missing_pixel_data(write_dicom, tmp_path):
    ds = dataset_from_stored(ramp())
    del ds.PixelData
    path = tmp_path / "nopixels.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(dicom.MissingPixelDataError, match="7FE0,0010"):
        dicom.decode(path)


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.4.100", "1.2.3.4.5"])
def test_unsupported_transfer_syntax(write_dicom, tmp_path, uid):
    ds = dataset_from_stored(ramp())
    ds.file_meta.TransferSyntaxUID = uid
    ds.PixelData = encapsulate([b"\x00" * 16])
    path = tmp_path / "mpeg.dcm"
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    with pytest.raises(dicom.UnsupportedTransferSyntaxError):
        dicom.decode(path)


def test_missing_codec_names_the_package_to_install(write_dicom, monkeypatch):
    path = write_dicom(ramp(), transfer_syntax=JPEG2000Lossless)
    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("numpy", "pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0")})
    with pytest.raises(dicom.MissingCodecError) as err:
        dicom.decode(path)
    assert "pip install" in err.value.message and "pylibjpeg-openjpeg" in err.value.message


def test_rows_columns_inconsistent_with_native_data(write_dicom, tmp_path):
    ds = dataset_from_stored(ramp(32, 64))
    ds.Rows = 40
    path = tmp_path / "bigger.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(dicom.ShapeMismatchError, match="40 x 64"):
        dicom.decode(path)
    ds.Rows = 16
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(dicom.ShapeMismatchError):
        dicom.decode(path)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless], ids=["j2k", "jpegls"])
def test_rows_columns_inconsistent_with_the_codestream(tmp_path, syntax):
    ds = dataset_from_stored(ramp(32, 64), transfer_syntax=syntax)
    ds.Rows, ds.Columns = 64, 64
    path = tmp_path / "liar.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(dicom.ShapeMismatchError, match="codestream is 32 x 64"):
        dicom.decode(path)


def test_pixel_limit_refuses_large_headers_and_decompression_bombs(write_dicom, tmp_path):
    path = write_dicom(ramp(32, 64))
    with pytest.raises(dicom.TooLargeError, match="2,047"):
        dicom.decode(path, max_pixels=2047)
    assert dicom.decode(path, max_pixels=2048).shape == (32, 64)
    # a small header over a large codestream: refused before the codec runs
    bomb = dataset_from_stored(ramp(256, 256), transfer_syntax=JPEG2000Lossless)
    bomb.Rows, bomb.Columns = 4, 4
    bomb_path = tmp_path / "bomb.dcm"
    bomb.save_as(bomb_path, enforce_file_format=True)
    with pytest.raises(dicom.TooLargeError, match="codestream is 256 x 256"):
        dicom.decode(bomb_path, max_pixels=1000)


def test_corrupt_compressed_pixel_data(tmp_path):
    noise = np.random.default_rng(1).integers(0, 4096, (64, 64))
    ds = dataset_from_stored(noise, transfer_syntax=JPEG2000Lossless)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 3]])
    path = tmp_path / "corrupt.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(dicom.CorruptPixelDataError, match="decoding failed"):
        dicom.decode(path)


@pytest.mark.parametrize(
    "damage, error, message",
    [
        ("rows", dicom.ShapeMismatchError, r"RLE segment 1 holds 196,608 pixels; Rows x Columns \(500 x 384\)"),
        ("middle", dicom.CorruptPixelDataError, r"pylibjpeg found the frame inconsistent \(PanicException"),
        ("second-segment", dicom.CorruptPixelDataError, "RLE Lossless decoding failed"),
    ],
)
def test_a_damaged_rle_frame_is_refused_not_a_panic(tmp_path, damage, error, message):
    """pylibjpeg-rle panics (pyo3's PanicException, a BaseException) on some damaged frames; pydicom's own RLE
    decoder turns the same bytes into an image without a word, so it never gets a frame another refused."""
    ds = dataset_from_stored(ramp(512, 384), transfer_syntax=RLELossless)
    path = tmp_path / "rle.dcm"
    if damage == "rows":
        ds.Rows = 500
    elif damage == "second-segment":  # segment 1 (the high bytes) intact: the codec itself meets the damage
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        second = int.from_bytes(frame[8:12], "little")
        ds.PixelData = encapsulate([bytes(frame[: second + 10])])  # the second segment cut short
    ds.save_as(path, enforce_file_format=True)
    if damage == "middle":  # the case: the middle quarter of the file overwritten with noise
        data = bytearray(path.read_bytes())
        n = len(data)
        data[n // 2 - n // 8 : n // 2 + n // 8] = np.random.default_rng(0).integers(0, 256, n // 4, np.uint8).tobytes()
        path.write_bytes(bytes(data))
    with pytest.raises(error, match=message):
        dicom.decode(path)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless], ids=["native", "rle"])
def test_rows_and_columns_swapped_give_an_implausible_shape_not_a_striped_view(tmp_path, syntax):
    """Native and RLE pixel data carry no shape of their own: swapped Rows and Columns fit the data's length."""
    rng = np.random.default_rng(4)
    brightness, _ = phantom.draw_view(
        (256, 192), phantom.random_breast(rng, cancer=False), view="CC", laterality="L", rng=rng
    )
    ds = make_dataset(brightness, transfer_syntax=syntax)
    good = tmp_path / "good.dcm"
    ds.save_as(good, enforce_file_format=True)
    assert dicom.decode(good).shape == (256, 192)
    ds.Rows, ds.Columns = ds.Columns, ds.Rows
    swapped = tmp_path / "swapped.dcm"
    ds.save_as(swapped, enforce_file_format=True)
    with pytest.raises(dicom.ImplausibleShapeError, match=r"rows do not continue each other .* Rows \(192\)"):
        dicom.decode(swapped)


def test_a_file_the_system_will_not_read_is_unreadable(write_dicom, monkeypatch):
    path = write_dicom(ramp())

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pydicom, "dcmread", refuse)
    with pytest.raises(dicom.UnreadableFileError, match="cannot be read: Permission denied"):
        dicom.decode(path)


@pytest.mark.parametrize(
    "change, error",
    [
        ({"PhotometricInterpretation": "RGB"}, dicom.UnsupportedImageError),
        ({"NumberOfFrames": 2}, dicom.UnsupportedImageError),
        ({"BitsAllocated": 32}, dicom.UnsupportedImageError),
        ({"BitsStored": 17}, dicom.InvalidHeaderError),
        ({"Columns": None}, dicom.InvalidHeaderError),
    ],
    ids=["rgb", "multiframe", "bits32", "bits-stored-over-allocated", "no-columns"],
)
def test_headers_that_are_not_a_grayscale_mammogram(tmp_path, change, error):
    ds = dataset_from_stored(ramp())
    for keyword, value in change.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path = tmp_path / "odd.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(error) as err:
        dicom.decode(path)
    assert err.value.kind in dicom.ERROR_KINDS
    assert str(path) in str(err.value)


def test_codestream_shape_of_each_family():
    stored = ramp(48, 80)
    for syntax in (JPEG2000Lossless, JPEGLSLossless):
        ds = dataset_from_stored(stored, transfer_syntax=syntax)
        assert dicom.codestream_shape(next(generate_frames(ds.PixelData, number_of_frames=1))) == (48, 80)
    rle = dataset_from_stored(stored, transfer_syntax=RLELossless)
    assert dicom.codestream_shape(next(generate_frames(rle.PixelData, number_of_frames=1))) is None


def test_bad_options_are_refused(write_dicom):
    path = write_dicom(ramp())
    with pytest.raises(ValueError, match="output"):
        dicom.decode(path, output="int16")
    with pytest.raises(ValueError, match="voi"):
        dicom.decode(path, voi="magic")


# command line


def test_cli_reports_each_file_and_fails_without_a_traceback(write_dicom, tmp_path, capsys):
    good = write_dicom(ramp(), WindowCenter="2048", WindowWidth="4096")
    bad = tmp_path / "bad.dcm"
    bad.write_text("not dicom")
    code = dicom.cli([str(good), str(bad), "--png-dir", str(tmp_path / "png")])
    out = capsys.readouterr().out
    assert code == 1
    assert "window:LINEAR" in out and "ERROR not_dicom" in out and "Traceback" not in out
    assert (tmp_path / "png" / f"{good.stem}.png").is_file()
