"""Stage 1 at a coarser JPEG 2000 resolution level: the same tiles and boxes as at full resolution, for less.

Reduced decodes must give tiles within a mean absolute difference of 2 grey levels of the
full-resolution path's, per tile, and ROI boxes within 1 % of the image size: on a synthetic J2K
set through the whole cache, and on real radiographs encoded as JPEG 2000 by their producers
(pydicom-data's CR radiographs).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.data import data_manager
from pydicom.uid import JPEG2000Lossless

from mammoscale import cache, dicom, files, synthetic
from mammoscale.preprocess import levels, tiling, views
from mammoscale.preprocess.chain import build_cache

from conftest import dataset_from_stored

SIZES = (128, 256)


def test_the_level_a_crop_needs():
    # a 2400 x 1500 crop into a 512 half tile: view 410 x 256, level 2 (600 x 375) is the coarsest that holds it
    assert tiling.fit((2400, 1500), (512, 256)) == (410, 256)
    assert levels.level_for((2400, 1500), 512, 5) == 2
    assert levels.level_for((2400, 1500), 512, 1) == 1  # the configured bound
    assert levels.level_for((2400, 1500), 2048, 5) == 0  # view 1638 x 1024: only the full image holds it
    assert levels.coarse_level((2776, 2082), 5) == 3 and levels.coarse_level((2776, 2082), 2) == 2
    assert levels.coarse_level((200, 150), 5) == 0


def test_decode_with_report_gives_the_level_asked_for_jpeg_2000_only(tmp_path):
    ramp = np.tile(np.linspace(0, 4095, 384).astype(np.uint16), (512, 1))
    full = dicom.decode_with_report(_j2k(ramp, tmp_path / "j2k.dcm"))
    half = dicom.decode_with_report(_j2k(ramp, tmp_path / "j2k.dcm"), level=1)
    assert (full.report.level, half.report.level) == (0, 1) and half.image.shape == (256, 192)
    assert half.report.decoder.startswith("pillow ") and full.report.decoder.startswith("pylibjpeg-openjpeg")
    box = full.image.reshape(256, 2, 192, 2).mean(axis=(1, 3))
    assert np.abs(half.image - box).mean() < 1.0  # the low-pass band: a box-filter downsample, within a grey level
    assert dicom.decode(tmp_path / "j2k.dcm").shape == (512, 384)  # decode() keeps its contract
    native = tmp_path / "native.dcm"
    dataset_from_stored(ramp).save_as(native, enforce_file_format=True)
    assert dicom.decode_with_report(native, level=2).report.level == 0  # not JPEG 2000: the full image


def _j2k(stored: np.ndarray, path: Path) -> Path:
    dataset_from_stored(stored, transfer_syntax=JPEG2000Lossless).save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def two_caches(tmp_path_factory):
    """The same J2K-only synthetic set cached at reduced levels (the default) and at full resolution."""
    base = tmp_path_factory.mktemp("levels")
    data = synthetic.generate(
        base / "rsna", n_patients=8, image_shape=(1024, 768), seed=5, transfer_syntaxes=(str(JPEG2000Lossless),)
    )
    config = {"grid": {"image_sizes": list(SIZES)}, "cache": {"shards": 1}}
    reduced = build_cache(data, base / "reduced", config=config, workers=2)
    full = build_cache(data, base / "full", config={**config, "preprocess": {"max_decode_level": 0}}, workers=2)
    again = build_cache(data, base / "again", config=config, workers=1)
    return reduced, full, again


def test_the_reduced_cache_is_the_same_bytes_whatever_the_workers(two_caches):
    reduced, _, again = two_caches
    for size in SIZES:
        for template in (files.TILES_SHARD, files.TILE_INDEX):
            a, b = (files.under(root, template, image_size=size, shard="0000") for root in (reduced, again))
            assert a.read_bytes() == b.read_bytes(), a.name


def test_reduced_tiles_equal_full_resolution_tiles_within_two_grey_levels(two_caches):
    reduced, full, _ = two_caches
    for size in SIZES:
        a, b = cache.open_tiles(reduced, size), cache.open_tiles(full, size)
        assert a.index["breast_id"].tolist() == b.index["breast_id"].tolist()
        mad = [np.abs(a[i].astype(np.int16) - b[i]).mean() for i in range(len(a))]
        assert max(mad) <= 2.0, (size, max(mad))


def test_reduced_levels_were_used_and_boxes_agree_within_one_percent(two_caches):
    reduced, full = (_images(root) for root in two_caches[:2])
    assert set(full["decode_level"]) == {"0"} and set(reduced["decode_level"]) - {"0"}, "no image was reduced"
    assert all(d.startswith("pillow ") for d in reduced.loc[reduced["decode_level"] != "0", "decoder"])
    for a, b in zip(reduced.itertuples(), full.itertuples(), strict=True):
        box_a, box_b = (np.array(x.split(), int) for x in (a.roi_box, b.roi_box))
        assert np.abs(box_a - box_b).max() <= 0.01 * max(int(b.rows), int(b.columns)), (a.image_id, box_a, box_b)


def _images(root: Path) -> pd.DataFrame:
    return files.IMAGE_TABLE.read(files.under(root, files.VIEWS_IMAGES, shard="0000"))


def _real_j2k() -> list[str]:
    roots = [Path(data_manager.DATA_ROOT), *(s.data_path for s in data_manager.external_data_sources().values())]
    names = ("RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm")  # CR radiographs (MR: docs/decoder.md)
    return sorted(str(p) for root in roots for p in Path(root).rglob("*.dcm") if p.name in names)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", _real_j2k(), ids=lambda p: Path(p).name)
@pytest.mark.parametrize("canonical", [128, 256])
def test_real_jpeg_2000_radiographs_give_the_same_view_at_a_reduced_level(path, canonical):
    """CR radiographs (1955 x 1841 and 1760 x 1760) encoded as JPEG 2000 by their producers, lossless and lossy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        settings = views.ViewSettings(canonical_size=canonical)
        decoded, located, image = levels.decode_view(Path(path), "L", settings)
        reference, ref_located, ref_image = levels.decode_view(
            Path(path), "L", views.ViewSettings(canonical_size=canonical, max_decode_level=0)
        )
    assert decoded.report.level >= 1 and reference.report.level == 0
    scale = 1 << decoded.report.level
    box = np.array(located.roi.box) * scale
    assert np.abs(box - np.array(ref_located.roi.box)).max() <= 0.01 * max(reference.image.shape)
    view, ref_view = (
        tiling.canonical_view(img, None, canonical, box=loc.roi.box, flip=loc.flip)
        for img, loc in ((image, located), (ref_image, ref_located))
    )
    common = tuple(min(a, b) for a, b in zip(view.shape, ref_view.shape, strict=True))
    assert np.abs(view[: common[0], : common[1]].astype(np.int16) - ref_view[: common[0], : common[1]]).mean() <= 2.0
