"""Orient a decoded view (tissue on the left) and find its breast region of interest.

The study flips right-breast images so that tissue is on the left, and crops to the breast,
excluding black background, burned-in labels and film/detector edge artefacts. Both steps
run on a reduced copy of the image (its long side about ``work_size`` pixels): tissue is
large, so the region found at low resolution is the region at full resolution, at a
fraction of the cost of labelling 8 million pixels.

Finding the region:
1. a band of ``border`` (fraction of the short side) along every edge is cleared and is never
   part of the region: detector edges and frames live there. The price is that much of the
   chest wall; ``border: 0`` keeps it, edges and all;
2. threshold: a fixed fraction of full white (default 0.08: after the VOI and MONOCHROME1
   inversion the background is near black, and the skin line is dimmer than dense tissue),
   or Otsu's (``threshold="otsu"``), which can split bright pectoral muscle from the rest of
   an MLO view rather than tissue from background, so it is not the default;
3. a small opening detaches thin bridges, then the largest connected component (8-connected)
   is the breast; labels and other blobs are smaller and separate;
4. a component smaller than ``min_area`` (fraction of the image) means nothing breast-like
   was found: the full frame is used and the fallback is recorded;
5. the box grows by ``margin`` (fraction of the long side) on each side, within the band.

The component's mask, dilated by the margin, travels with the box so that pixels outside
the tissue (a label inside the box) can be zeroed in the tile (``mask_outside``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu

from mammoscale.config import defaults

_ROI = defaults()["preprocess"]["roi"]


@dataclasses.dataclass(frozen=True)
class RoiSettings:
    """``preprocess.roi.*`` (their defaults are the configuration's), and the working resolution."""

    threshold: str | float = _ROI["threshold"]
    """A fixed fraction (0-1) of full white, or ``"otsu"``."""
    border: float = _ROI["border"]
    margin: float = _ROI["margin"]
    min_area: float = _ROI["min_area"]
    mask_outside: bool = _ROI["mask_outside"]
    work_size: int = 512

    def __post_init__(self):
        if self.threshold != "otsu" and not (isinstance(self.threshold, (int, float)) and 0 < self.threshold < 1):
            raise ValueError(f"roi threshold must be 'otsu' or a fraction in (0, 1), got {self.threshold!r}")
        for name in ("border", "margin", "min_area"):
            value = getattr(self, name)
            if not 0 <= value < 0.5:
                raise ValueError(f"roi {name} must be a fraction in [0, 0.5), got {value!r}")
        if self.work_size < 32:
            raise ValueError(f"roi work_size must be >= 32, got {self.work_size!r}")


@dataclasses.dataclass(frozen=True)
class Roi:
    box: tuple[int, int, int, int]
    """(row0, col0, row1, col1), end-exclusive, in full-resolution pixels."""
    mask: np.ndarray
    """bool, the tissue inside ``box`` at reduced resolution (resize it to the crop's shape)."""
    fallback: bool
    """No breast-like component was found: ``box`` is the full frame."""
    tissue_fraction: float
    """Area of the component over the image's area."""


def reduce(image: np.ndarray, work_size: int) -> tuple[np.ndarray, int]:
    """Box-average ``image`` by an integer factor so its long side is about ``work_size``."""
    factor = max(1, math.ceil(max(image.shape) / work_size))
    if factor == 1:
        return image, 1
    return np.asarray(Image.fromarray(image).reduce(factor)), factor


@dataclasses.dataclass(frozen=True)
class Located:
    """Where a view's breast is, and how the view must be turned to put it on the left."""

    flip: bool
    disagrees: bool
    """The CSV's laterality and the side the tissue is on do not match."""
    roi: Roi
    """In the coordinates of the flipped view when ``flip``."""


def tissue_on_left(image: np.ndarray, *, work_size: int = 256, border: float = 0.02) -> bool:
    """True when the left half of ``image`` (uint8) holds more intensity than the right half.

    Edges are ignored (a bright frame weighs on both sides alike anyway).
    """
    small, _ = reduce(image, work_size)
    return _left_heavier(small, border)


def _left_heavier(small: np.ndarray, border: float) -> bool:
    b = max(1, round(border * min(small.shape)))
    inner = small[b:-b, b:-b].astype(np.float64)
    half = inner.shape[1] // 2
    return float(inner[:, :half].sum()) >= float(inner[:, -half:].sum())


def orient(image: np.ndarray, laterality: str, *, trust_pixels: bool = False) -> tuple[np.ndarray, bool, bool]:
    """Flip so tissue is on the left: right breasts by the CSV, or by the pixels when trusted.

    Returns (image, flipped, disagrees): ``disagrees`` when the CSV's laterality and the side
    the tissue is on do not match (a left breast with tissue on the right, or vice versa).
    """
    flip, disagrees = _flip_decision(tissue_on_left(image), laterality, trust_pixels)
    return (np.ascontiguousarray(image[:, ::-1]) if flip else image), flip, disagrees


def _flip_decision(left: bool, laterality: str, trust_pixels: bool) -> tuple[bool, bool]:
    """(flip, disagrees) for a view whose tissue is on the left (``left``) or not."""
    if laterality not in ("L", "R"):
        raise ValueError(f"laterality must be 'L' or 'R', not {laterality!r}")
    return ((not left) if trust_pixels else laterality == "R"), left == (laterality == "R")


def locate(
    image: np.ndarray, laterality: str, settings: RoiSettings = RoiSettings(), *, trust_pixels: bool = False
) -> Located:
    """:func:`orient` and :func:`find_roi` in one, without flipping ``image`` itself.

    Both run on one reduced copy; the full-resolution view is flipped only after it has been
    cropped and resized (see :func:`mammoscale.preprocess.tiling.canonical_view`).
    """
    small, factor = reduce(image, settings.work_size)
    flip, disagrees = _flip_decision(_left_heavier(small, settings.border), laterality, trust_pixels)
    oriented = small[:, ::-1] if flip else small
    return Located(flip=flip, disagrees=disagrees, roi=_roi_of_reduced(oriented, factor, image.shape, settings))


def find_roi(image: np.ndarray, settings: RoiSettings = RoiSettings()) -> Roi:
    """The breast's bounding box and mask in ``image`` (uint8, tissue on the left)."""
    small, factor = reduce(image, settings.work_size)
    return _roi_of_reduced(small, factor, image.shape, settings)


def _roi_of_reduced(small: np.ndarray, factor: int, shape: tuple[int, int], settings: RoiSettings) -> Roi:
    rows, cols = shape
    h, w = small.shape
    b = max(1, round(settings.border * min(h, w)))
    inner = small.copy()
    inner[:b], inner[-b:], inner[:, :b], inner[:, -b:] = 0, 0, 0, 0

    if settings.threshold == "otsu":
        values = inner[b:-b, b:-b]
        level = threshold_otsu(values) if values.size and values.min() != values.max() else 255
        level = max(level, 5)
    else:
        level = settings.threshold * 255
    mask = ndimage.binary_opening(inner > level, structure=np.ones((3, 3), bool))
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())[1:] if n else np.array([0])
    biggest = int(np.argmax(sizes)) + 1 if n else 0
    fraction = float(sizes.max()) / (h * w) if n else 0.0
    if not n or fraction < settings.min_area:
        return Roi(box=(0, 0, rows, cols), mask=np.ones((h, w), bool), fallback=True, tissue_fraction=fraction)

    component = labels == biggest
    r_any, c_any = np.flatnonzero(component.any(axis=1)), np.flatnonzero(component.any(axis=0))
    r0, r1, c0, c1 = int(r_any[0]), int(r_any[-1]) + 1, int(c_any[0]), int(c_any[-1]) + 1

    grow = max(1, round(settings.margin * max(h, w)))
    component = ndimage.binary_dilation(component, structure=np.ones((3, 3), bool), iterations=grow)
    component[:b], component[-b:], component[:, :b], component[:, -b:] = False, False, False, False
    r0, c0 = max(b, r0 - grow), max(b, c0 - grow)
    r1, c1 = min(h - b, r1 + grow), min(w - b, c1 + grow)
    box = (r0 * factor, c0 * factor, min(rows, r1 * factor), min(cols, c1 * factor))
    return Roi(box=box, mask=component[r0:r1, c0:c1], fallback=False, tissue_fraction=fraction)
