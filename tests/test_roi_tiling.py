"""Orientation, ROI and tiling on synthetic views whose geometry is known."""

from __future__ import annotations

import numpy as np
import pytest

from mammoscale.preprocess import roi, tiling
from mammoscale.synthetic import phantom

SHAPE = (400, 300)


def view(*, laterality="L", view_name="CC", artefact="none", cancer=False, seed=0):
    """A synthetic view as uint8 (what decode returns) and where things were drawn."""
    rng = np.random.default_rng(seed)
    breast = phantom.random_breast(rng, cancer=cancer)
    image, truth = phantom.draw_view(SHAPE, breast, view=view_name, laterality=laterality, artefact=artefact, rng=rng)
    return np.rint(image * 255).astype(np.uint8), truth


# orientation


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_orient_puts_tissue_on_the_left(laterality):
    image, _ = view(laterality=laterality)
    oriented, flipped, disagrees = roi.orient(image, laterality)
    assert flipped == (laterality == "R") and not disagrees
    assert roi.tissue_on_left(oriented)
    half = oriented.shape[1] // 2
    assert oriented[:, :half].mean() > 2 * oriented[:, half:].mean()


def test_a_laterality_the_pixels_contradict_is_counted_and_optionally_trusted():
    image, _ = view(laterality="R")  # tissue on the right, as acquired
    kept, flipped, disagrees = roi.orient(image, "L")
    assert disagrees and not flipped and not roi.tissue_on_left(kept)
    trusted, flipped, disagrees = roi.orient(image, "L", trust_pixels=True)
    assert disagrees and flipped and roi.tissue_on_left(trusted)


def test_orient_refuses_an_unknown_laterality():
    with pytest.raises(ValueError, match="laterality"):
        roi.orient(np.zeros((10, 10), np.uint8), "B")


# region of interest


def overlap(a, b):
    rows = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    cols = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return rows * cols


@pytest.mark.parametrize("artefact", ["none", "frame", "edge"])
@pytest.mark.parametrize("view_name", ["CC", "MLO"])
def test_roi_holds_the_breast_and_excludes_label_and_edges(artefact, view_name):
    image, truth = view(view_name=view_name, artefact=artefact, seed=3)
    found = roi.find_roi(image)
    r0, c0, r1, c1 = found.box
    br0, bc0, br1, bc1 = truth.breast_box
    band = max(2, min(SHAPE) // 80)
    assert not found.fallback
    assert overlap(found.box, truth.label_box) == 0, "the burned-in label is outside the box"
    assert r0 >= band and c0 >= band and r1 <= SHAPE[0] - band and c1 <= SHAPE[1] - band, "edge bands excluded"
    tolerance = round(0.03 * max(SHAPE)) + band
    assert abs(r0 - br0) <= tolerance and abs(r1 - br1) <= tolerance and abs(c1 - bc1) <= tolerance
    assert c0 <= tolerance, "the box starts at the chest wall"
    crop = image[r0:r1, c0:c1]
    canonical = tiling.canonical_view(crop, found.mask, 256)
    assert (canonical > 0).mean() > 0.6, "tissue fills its box"
    assert canonical.max() <= 250 or truth.lesion_center is not None, "no stray white blob left"


def test_label_inside_the_box_is_masked_out():
    image, truth = view(seed=5)
    found = roi.find_roi(image)
    r0, c0, r1, c1 = found.box
    image = image.copy()
    image[r0 + 5 : r0 + 15, c1 - 20 : c1 - 5] = 255  # a blob in the box's corner, outside the tissue
    masked = tiling.canonical_view(
        image[r0:r1, c0:c1], roi.find_roi(image).mask, r1 - r0 if (r1 - r0) % 2 == 0 else r1 - r0 + 1
    )
    assert masked.max() < 250


def test_nothing_breast_like_falls_back_to_the_full_frame():
    blank = np.zeros(SHAPE, np.uint8)
    blank[10:14, 10:30] = 255
    found = roi.find_roi(blank)
    assert found.fallback and found.box == (0, 0, *SHAPE) and found.mask.all()


def test_otsu_threshold_and_large_images_use_the_reduced_copy():
    image, truth = view(seed=2)
    big = np.kron(image, np.ones((4, 4), np.uint8))
    found = roi.find_roi(big, roi.RoiSettings(threshold="otsu"))
    assert not found.fallback
    assert abs(found.box[2] - 4 * truth.breast_box[2]) <= 4 * 20


@pytest.mark.parametrize("field, value", [("threshold", 2), ("threshold", "mean"), ("border", 0.6), ("work_size", 8)])
def test_bad_roi_settings(field, value):
    with pytest.raises(ValueError, match=field):
        roi.RoiSettings(**{field: value})


# tiling


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (1000, 37), (37, 1000), (512, 256)])
@pytest.mark.parametrize("box", [(512, 256), (128, 64)])
def test_fit_keeps_the_aspect_ratio_within_one_pixel(shape, box):
    rows, cols = tiling.fit(shape, box)
    assert rows <= box[0] and cols <= box[1] and (rows == box[0] or cols == box[1])
    assert abs(rows - cols * shape[0] / shape[1]) <= 1 or abs(cols - rows * shape[1] / shape[0]) <= 1


def test_tile_puts_cc_left_and_mlo_right_centred_vertically():
    cc = np.full((100, 40), 100, np.uint8)
    mlo = np.full((50, 50), 200, np.uint8)
    out = tiling.tile(cc, mlo, 128)
    assert out.shape == (128, 128) and out.dtype == np.uint8
    assert set(np.unique(out[:, :64])) == {0, 100} and set(np.unique(out[:, 64:])) == {0, 200}
    cc_rows = np.flatnonzero(out[:, :64].any(axis=1))
    assert cc_rows[0] == 0 and cc_rows[-1] == 127, "CC fills the height"
    cc_cols = np.flatnonzero(out[:, :64].any(axis=0))
    assert cc_cols[0] == 0 and len(cc_cols) == round(128 * 40 / 100), "chest wall at the left edge, aspect kept"
    mlo_rows = np.flatnonzero(out[:, 64:].any(axis=1))
    assert (mlo_rows[0], mlo_rows[-1]) == (32, 95), "a width-bound view is centred vertically"


@pytest.mark.parametrize("method", ["area", "bilinear", "lanczos"])
def test_resize_methods_preserve_a_flat_image(method):
    flat = np.full((300, 200), 77, np.uint8)
    assert (tiling.resize(flat, (120, 80), method) == 77).all()


def test_bad_tiling_arguments():
    with pytest.raises(ValueError, match="even"):
        tiling.tile(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), 7)
    with pytest.raises(ValueError, match="resample"):
        tiling.resize(np.zeros((4, 4), np.uint8), (2, 2), "cubic")


@pytest.mark.parametrize("laterality", ["L", "R"])
@pytest.mark.parametrize("trust_pixels", [False, True])
def test_locate_and_boxed_view_equal_orient_crop_and_resize(laterality, trust_pixels):
    """The fast path (no full-resolution flip or crop copy) gives the straightforward result: exactly
    without a flip; with one, resampling before flipping shifts the box filter's phase, so a few
    pixels at the breast's edge differ by a grey level or a mask pixel."""
    image, _ = view(laterality=laterality, artefact="frame", seed=4)
    located = roi.locate(image, laterality, trust_pixels=trust_pixels)
    fast = tiling.canonical_view(image, located.roi.mask, 256, box=located.roi.box, flip=located.flip)
    oriented, flipped, disagrees = roi.orient(image, laterality, trust_pixels=trust_pixels)
    found = roi.find_roi(oriented)
    r0, c0, r1, c1 = found.box
    slow = tiling.canonical_view(oriented[r0:r1, c0:c1], found.mask, 256)
    assert (located.flip, located.disagrees, located.roi.box) == (flipped, disagrees, found.box)
    assert fast.shape == slow.shape
    if not flipped:
        np.testing.assert_array_equal(fast, slow)
    else:
        diff = np.abs(fast.astype(int) - slow.astype(int))
        assert (diff <= 2).mean() > 0.98 and diff.mean() < 0.5
