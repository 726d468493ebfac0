"""Resize views keeping their aspect ratio and tile a breast's CC and MLO into one square.

A tile of size S is S x S uint8: the CC view in the left half (S x S/2), the MLO view in the
right half, each scaled to fit its half without distortion, the chest wall against the
half's left edge, centred vertically, zero elsewhere.

Resizing uses Pillow: ``area`` (box filter, the default: each output pixel averages the
input pixels under it, so downscaling does not alias) is 10x faster than scikit-image's
anti-aliased resize on a 3000 x 1800 crop (bench/README.md); ``bilinear`` and ``lanczos``
are there for comparison.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

RESAMPLE = {"area": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS}


def fit(shape: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The largest (rows, cols) with ``shape``'s aspect ratio that fits in ``box``, at least 1 x 1."""
    rows, cols = shape
    scale = min(box[0] / rows, box[1] / cols)
    return max(1, min(box[0], round(rows * scale))), max(1, min(box[1], round(cols * scale)))


def resize(image: np.ndarray, shape: tuple[int, int], method: str = "area") -> np.ndarray:
    """Resize a uint8 image to ``shape`` (rows, cols)."""
    if image.shape == tuple(shape):
        return image
    if method not in RESAMPLE:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLE)}, not {method!r}")
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), RESAMPLE[method]))


def canonical_view(
    image: np.ndarray,
    mask: np.ndarray | None,
    size: int,
    method: str = "area",
    *,
    box: tuple[int, int, int, int] | None = None,
    flip: bool = False,
) -> np.ndarray:
    """``image`` (or its ``box``) fitted into a half tile of ``size`` (size x size/2), zero where ``mask`` is false.

    ``box`` (row0, col0, row1, col1) and ``mask`` are in the coordinates of the view after the
    horizontal ``flip``; the full-resolution image is neither copied nor flipped: Pillow
    resizes the box straight from it, and only the small result is flipped.
    """
    rows, cols = image.shape
    r0, c0, r1, c1 = box or (0, 0, rows, cols)
    if flip:
        c0, c1 = cols - c1, cols - c0
    shape = fit((r1 - r0, c1 - c0), (size, size // 2))
    if method not in RESAMPLE:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLE)}, not {method!r}")
    view = np.asarray(
        Image.fromarray(np.ascontiguousarray(image)).resize(
            (shape[1], shape[0]), RESAMPLE[method], box=(c0, r0, c1, r1)
        )
    )
    if flip:
        view = view[:, ::-1]
    if mask is not None and not mask.all():
        full = np.asarray(Image.fromarray(mask).resize((shape[1], shape[0]), Image.Resampling.NEAREST))
        view = np.where(full, view, 0).astype(np.uint8)
    return np.ascontiguousarray(view)


def tile(cc: np.ndarray, mlo: np.ndarray, size: int, method: str = "area") -> np.ndarray:
    """The S x S tile of a breast from its two views (any size; each is fitted to its half)."""
    if size < 2 or size % 2:
        raise ValueError(f"tile size must be an even number >= 2, got {size}")
    out = np.zeros((size, size), np.uint8)
    half = size // 2
    for view, col0 in ((cc, 0), (mlo, half)):
        placed = resize(view, fit(view.shape, (size, half)), method)
        row0 = (size - placed.shape[0]) // 2
        out[row0 : row0 + placed.shape[0], col0 : col0 + placed.shape[1]] = placed
    return out
