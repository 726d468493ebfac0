"""Draw synthetic mammogram views that exercise what real ones throw at a pipeline.

A view is a float32 image in [0, 1] (bright = dense, MONOCHROME2 sense) in acquisition
orientation: the chest wall is on the left for a left breast and on the right for a right
breast. It has a breast-shaped tissue region on a black background, fibroglandular texture,
detector noise, a pectoral-muscle wedge on MLO-like views, a burned-in view label away from
the breast, optionally a bright detector-edge artefact, and for a cancer-positive breast a
small dense lesion at the same place in every view of that breast, so that a model can learn
the labels and ROI cropping can be checked against known geometry.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

MLO_LIKE = frozenset({"MLO", "ML", "LM", "LMO"})
ARTEFACTS = ("none", "frame", "edge")
"""``frame``: a bright band around all four borders; ``edge``: a bright band along the top
border, across the chest wall, so that it touches the breast region."""


@dataclasses.dataclass(frozen=True)
class Breast:
    """What all views of one breast share."""

    depth: float
    """How far the tissue reaches from the chest wall, as a fraction of the image width."""
    height: float
    """Tissue height at the chest wall, as a fraction of the image height (CC)."""
    density: float
    """Amount of fibroglandular texture, 0 (fatty) to 1 (extremely dense)."""
    lesion: tuple[float, float] | None
    """Lesion position in breast coordinates: (along the depth 0..1, across -1..1); None if benign."""
    seed: int


@dataclasses.dataclass(frozen=True)
class ViewTruth:
    """Where things were drawn, in the pixel grid of the returned (acquisition-oriented) view."""

    breast_box: tuple[int, int, int, int]
    """(row0, col0, row1, col1), end-exclusive: bounding box of the tissue region."""
    label_box: tuple[int, int, int, int]
    lesion_center: tuple[int, int] | None
    lesion_radius: float
    artefact: str


def random_breast(rng: np.random.Generator, *, cancer: bool) -> Breast:
    """Draw the shared geometry of one breast."""
    lesion = (float(rng.uniform(0.35, 0.7)), float(rng.uniform(-0.45, 0.45))) if cancer else None
    return Breast(
        depth=float(rng.uniform(0.55, 0.72)),
        height=float(rng.uniform(0.62, 0.8)),
        density=float(rng.uniform(0.1, 1.0)),
        lesion=lesion,
        seed=int(rng.integers(2**31)),
    )


def draw_view(
    shape: tuple[int, int],
    breast: Breast,
    *,
    view: str,
    laterality: str,
    artefact: str = "none",
    rng: np.random.Generator,
) -> tuple[np.ndarray, ViewTruth]:
    """Draw one view of ``breast`` as an image of ``shape`` (rows, columns), values in [0, 1]."""
    if artefact not in ARTEFACTS:
        raise ValueError(f"artefact must be one of {ARTEFACTS}, not {artefact!r}")
    if laterality not in ("L", "R"):
        raise ValueError(f"laterality must be 'L' or 'R', not {laterality!r}")
    rows, cols = shape
    mlo = view in MLO_LIKE
    outline = _outline(shape, breast, mlo)
    tissue, rho = outline.tissue, outline.rho
    thickness = np.sqrt(np.clip(1 - rho**2, 0, 1))
    texture = _texture(shape, breast.seed + (1 if mlo else 0))
    image = np.where(
        tissue,
        0.4 + 0.15 * thickness + breast.density * 0.25 * texture * np.clip(1.2 - rho, 0, 1),
        0.02,
    ).astype(np.float32)

    if mlo:
        pec_w, pec_h = 0.28 * cols, 0.55 * rows
        pectoral = (outline.x / pec_w + outline.y / pec_h <= 1.0) & tissue
        image[pectoral] = 0.88 + 0.04 * texture[pectoral]
    lesion_center, lesion_radius = _add_lesion(image, breast, outline)

    # Quantum noise: a few grey levels in tissue, less over the unexposed background.
    image += rng.normal(0, 1, shape).astype(np.float32) * np.where(tissue, 0.006, 0.002).astype(np.float32)

    if laterality == "R":
        image = image[:, ::-1]
        tissue = tissue[:, ::-1]
        if lesion_center is not None:
            lesion_center = (lesion_center[0], cols - 1 - lesion_center[1])

    label_box = _burn_label(image, f"{laterality}{view}", chest_wall_left=laterality == "L")
    _add_artefact(image, artefact)
    np.clip(image, 0.0, 1.0, out=image)

    rows_any, cols_any = np.flatnonzero(tissue.any(axis=1)), np.flatnonzero(tissue.any(axis=0))
    truth = ViewTruth(
        breast_box=(int(rows_any[0]), int(cols_any[0]), int(rows_any[-1]) + 1, int(cols_any[-1]) + 1),
        label_box=label_box,
        lesion_center=lesion_center,
        lesion_radius=float(lesion_radius),
        artefact=artefact,
    )
    return np.ascontiguousarray(image), truth


@dataclasses.dataclass(frozen=True)
class _Outline:
    """Where the tissue is: the pixel grid, the ellipse's axes and centre, the normalised radius."""

    x: np.ndarray
    y: np.ndarray
    a: float
    b: float
    cy: float
    rho: np.ndarray
    tissue: np.ndarray


def _outline(shape: tuple[int, int], breast: Breast, mlo: bool) -> _Outline:
    """A half-ellipse anchored on the chest wall (x = 0 before the flip), its outline wobbling like a
    real skin line. MLO views are taller and sit higher."""
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    a = breast.depth * cols
    b = (breast.height * (1.12 if mlo else 1.0)) * rows / 2
    cy = rows * (0.46 if mlo else 0.5)
    theta = np.arctan2((y - cy) / b, x / a)
    shape_rng = np.random.default_rng(breast.seed)
    phases = shape_rng.uniform(0, 2 * np.pi, 3)
    wobble = 1 + sum(0.025 * np.sin(k * theta + p) for k, p in zip((3, 5, 7), phases, strict=True))
    rho = np.sqrt((x / a) ** 2 + ((y - cy) / b) ** 2) / wobble
    return _Outline(x=x, y=y, a=a, b=b, cy=cy, rho=rho, tissue=rho <= 1.0)


def _add_lesion(image: np.ndarray, breast: Breast, outline: _Outline) -> tuple[tuple[int, int] | None, float]:
    """A dense spiculated mass in the tissue of a positive breast; its centre (row, col) and radius."""
    if breast.lesion is None:
        return None, 0.0
    rows, cols = image.shape
    x, y = outline.x, outline.y
    u, v = breast.lesion
    ly, lx = outline.cy + v * outline.b * 0.75, u * outline.a
    radius = 0.045 * min(rows, cols)
    spiky = 1 + 0.25 * np.sin(9 * np.arctan2(y - ly, x - lx) + breast.seed % 7)
    dist = np.sqrt((x - lx) ** 2 + (y - ly) ** 2) / (radius * spiky)
    image += (0.38 * np.exp(-(dist**4)) * outline.tissue).astype(np.float32)
    return (int(round(ly)), int(round(lx))), radius


def _texture(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Fibroglandular-like texture in [0, 1]: smoothed noise at two scales, made coarse then zoomed.

    Drawing at 1/8 resolution keeps a 3328 x 2560 view cheap to make.
    """
    rows, cols = shape
    coarse = (max(rows // 8, 8), max(cols // 8, 8))
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=coarse), 3) + 0.5 * ndimage.gaussian_filter(
        rng.normal(size=coarse), 1
    )
    noise = (noise - noise.min()) / max(float(np.ptp(noise)), 1e-9)
    zoomed = ndimage.zoom(noise, (rows / coarse[0], cols / coarse[1]), order=1)
    return np.clip(zoomed[:rows, :cols], 0, 1).astype(np.float32)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _burn_label(image: np.ndarray, text: str, *, chest_wall_left: bool) -> tuple[int, int, int, int]:
    """Burn ``text`` in full white near the top corner away from the chest wall; return its box."""
    rows, cols = image.shape
    size = max(8, rows // 22)
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    w, h = right - left + 2, bottom - top + 2
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), text, fill=255, font=font)
    mask = np.asarray(canvas) > 127
    margin = max(4, cols // 30)
    r0 = max(4, rows // 25)
    c0 = cols - margin - w if chest_wall_left else margin
    h, w = min(h, rows - r0), min(w, cols - c0)
    region = image[r0 : r0 + h, c0 : c0 + w]
    region[mask[:h, :w]] = 1.0
    return (r0, c0, r0 + h, c0 + w)


def _add_artefact(image: np.ndarray, artefact: str) -> None:
    rows, cols = image.shape
    band = max(2, min(rows, cols) // 80)
    if artefact == "frame":
        image[:band] = image[-band:] = 0.95
        image[:, :band] = image[:, -band:] = 0.95
    elif artefact == "edge":
        image[:band] = 0.97
