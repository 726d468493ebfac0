"""A synthetic dataset in NIH's ChestX-ray14 layout: the CheXNet study's embedded data, drawn here.

:func:`generate` writes ``Data_Entry_2017.csv`` (NIH's header, its trailing empty column included),
``train_val_list.txt`` and ``test_list.txt`` (split by patient), and the PNGs, spread over
``images_001/images`` and ``images_002/images`` as Kaggle's copy spreads them over twelve; plus
``synthetic_truth.csv`` (each PNG's mode and size) for tests. Deterministic from a seed.

Each patient has 1 to 4 frontal images (``synthetic_chestxray14.images_per_patient``), each a
chest phantom: body, lungs with vessel-like texture, spine, heart, clavicles, with the patient's
own anatomy and detector noise. Findings are drawn with about NIH's frequencies (:data:`PREVALENCE`;
more than half the images have none) and each leaves its mark where a radiologist looks for it: an
enlarged heart, fluid at a lung's base, a dark apex without vessels, a round opacity, so a small CNN
can learn them. Most PNGs are 8-bit grey, as NIH's are; one in twenty each is 16-bit grey, RGB or
RGBA (NIH's set holds a few RGBA), and one in twenty is not square.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from mammoscale import config, files
from mammoscale.tasks import FINDINGS, NO_FINDING

PREVALENCE = {
    "Atelectasis": 0.103,
    "Cardiomegaly": 0.025,
    "Effusion": 0.119,
    "Infiltration": 0.177,
    "Mass": 0.052,
    "Nodule": 0.056,
    "Pneumonia": 0.013,
    "Pneumothorax": 0.047,
    "Consolidation": 0.042,
    "Edema": 0.021,
    "Emphysema": 0.022,
    "Fibrosis": 0.015,
    "Pleural_Thickening": 0.030,
    "Hernia": 0.002,
}
"""Each finding's share of NIH's 112,120 images (Wang et al. 2017, Table 1)."""
NO_FINDING_RATE = 0.538
MIN_PREVALENCE = 0.02
"""The rarer findings are drawn this often at least, so that a set of a few hundred images holds each of them."""
PARTS = ("001", "002")
"""The ``images_<part>/images`` directories the PNGs are spread over, in image order."""
VARIATIONS = ("L",) * 16 + ("I;16", "RGB", "RGBA", "L-oblong")
"""PNG modes dealt to the images: 8-bit grey, 16-bit grey, RGB, RGBA, and 8-bit grey 3/4 as high as wide."""


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """What every image of a patient shares."""

    scale: float
    shift: float
    heart: float
    gamma: float


# public API


def generate(
    root: Path | str,
    *,
    n_patients: int | None = None,
    image_size: int | None = None,
    images_per_patient: tuple[int, int] | None = None,
    test_fraction: float | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic ChestX-ray14-layout directory at ``root`` and return ``root``.

    ``n_patients`` patients of ``images_per_patient`` (lowest, highest) images each, ``image_size`` pixels square;
    ``test_fraction`` of the patients in ``test_list.txt``. Defaults: the configuration's
    (``synthetic_chestxray14.*``, ``manifest.split.test``). An existing non-empty ``root`` is refused unless
    ``overwrite``, which replaces its dataset files.
    """
    root, defaults = Path(root), config.defaults()
    own = defaults["synthetic_chestxray14"]
    n_patients = own["n_patients"] if n_patients is None else n_patients
    image_size = own["image_size"] if image_size is None else image_size
    low, high = images_per_patient or own["images_per_patient"]
    test_fraction = defaults["manifest"]["split"]["test"] if test_fraction is None else test_fraction
    seed = own["seed"] if seed is None else seed
    if n_patients < 1 or image_size < 32 or not 1 <= low <= high or not 0 <= test_fraction <= 1:
        raise ValueError(
            f"need n_patients >= 1, image_size >= 32, 1 <= images_per_patient[0] <= [1], test_fraction in [0, 1]; got "
            f"{n_patients}, {image_size}, {(low, high)}, {test_fraction}"
        )
    _prepare_root(root, overwrite=overwrite)
    rng = np.random.default_rng(seed)
    rows, truths = [], []
    for patient in range(1, n_patients + 1):
        anatomy = Anatomy(*rng.uniform((0.92, -0.03, 0.9, 0.8), (1.05, 0.03, 1.1, 1.25)))
        age, sex = int(rng.integers(18, 90)), str(rng.choice(["M", "F"]))
        for follow_up in range(int(rng.integers(low, high + 1))):
            rows.append(_entry(rng, patient, follow_up, age + follow_up // 2, sex))
            truths.append({"image_id": rows[-1]["Image Index"], "anatomy": anatomy, "seed": int(rng.integers(2**31))})
    modes = rng.permutation(np.resize(np.asarray(VARIATIONS, dtype=object), len(rows)))
    for k, (row, truth) in enumerate(zip(rows, truths, strict=True)):
        part = PARTS[k * len(PARTS) // len(rows)]
        path = Path(files.fill(files.CHEST_PART, part=part)) / row["Image Index"]
        findings = set(row["Finding Labels"].split("|")) - {NO_FINDING}
        shape = _write_png(root / path, truth.pop("anatomy"), findings, image_size, modes[k], truth.pop("seed"))
        truth.update(path=str(path), mode=modes[k], rows=shape[0], cols=shape[1])
    _write_lists(root, rows, test_fraction, rng)
    entries = pd.DataFrame(rows, columns=list(files.CHEST_COLUMNS)).assign(**{"": ""})  # NIH's trailing column
    files.write_csv(entries, root / files.CHEST_ENTRIES)
    files.write_csv(pd.DataFrame(truths), root / files.SYNTHETIC_TRUTH)
    return root


def findings_of(rng: np.random.Generator) -> list[str]:
    """One image's findings, in :data:`~mammoscale.tasks.FINDINGS` order: none with NIH's frequency, else each
    drawn on its own (one at least), so that each has about its :data:`PREVALENCE`."""
    if rng.random() < NO_FINDING_RATE:
        return []
    rates = np.array([max(PREVALENCE[name], MIN_PREVALENCE) for name in FINDINGS]) / (1 - NO_FINDING_RATE)
    drawn = rng.random(len(FINDINGS)) < np.minimum(rates, 0.9)
    if not drawn.any():
        drawn[rng.choice(len(FINDINGS), p=rates / rates.sum())] = True
    return [name for name, on in zip(FINDINGS, drawn, strict=True) if on]


def draw(shape: tuple[int, int], anatomy: Anatomy, findings: set[str], rng: np.random.Generator) -> np.ndarray:
    """A frontal chest phantom of ``shape`` (rows, columns), values in [0, 1] (bright = dense), with ``findings``."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h, xx / w
    s, cy = anatomy.scale, 0.5 + anatomy.shift
    image = np.full(shape, 0.04, np.float32)
    image[_ellipse(yy, xx, cy + 0.06, 0.5, 0.52 * s, 0.45 * s)] = 0.55
    wide = 1.12 if "Emphysema" in findings else 1.0  # hyperinflated, darker lungs
    lungs = [(cy - 0.04, 0.5 + side * 0.19 * s) for side in (-1, 1)]  # the patient's right lung on the image's left
    masks = [_ellipse(yy, xx, ly, lx, 0.29 * s * wide, 0.15 * s * wide) for ly, lx in lungs]
    lung = masks[0] | masks[1]
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), max(h, w) / 96)
    image[lung] = (0.12 if wide > 1 else 0.22) + 0.04 * texture[lung] / max(float(texture.std()), 1e-6)
    image[(np.abs(xx - 0.5) < 0.035 * s) & (yy > cy - 0.4 * s)] = 0.72
    for side in (-1, 1):  # the clavicles
        bone = np.abs(yy - (cy - 0.3 * s) + side * 0.12 * (xx - 0.5)) < 0.015 * s
        image[bone & (np.abs(xx - 0.5) < 0.38 * s)] = 0.68
    heart = anatomy.heart * (1.45 if "Cardiomegaly" in findings else 1.0)
    image[_ellipse(yy, xx, cy + 0.13 * s, 0.55, 0.13 * s * heart, 0.12 * s * heart)] = 0.62
    _findings(image, findings, (yy, xx), lungs, masks, s, rng)
    image = np.clip(image + rng.normal(0, 0.02, shape).astype(np.float32), 0, 1) ** anatomy.gamma
    return image


def part_directories() -> list[str]:
    """The directories the PNGs go to, relative to the set's root (what a rule declares it writes)."""
    return [str(Path(files.fill(files.CHEST_PART, part=part)).parent) for part in PARTS]


# helpers


def _findings(image, findings, grid, lungs, masks, s, rng) -> None:
    """Each finding's mark on ``image`` (in place); a one-sided finding in one lung, drawn at random."""
    (yy, xx), side = grid, int(rng.integers(2))
    (ly, lx), one, lung = lungs[side], masks[side], masks[0] | masks[1]
    outward = np.sign(lx - 0.5)
    if "Effusion" in findings:
        image[one & (yy > ly + 0.12 * s)] = 0.5
    if "Pneumothorax" in findings:
        image[one & (yy < ly - 0.06 * s) & ((xx - lx) * outward > -0.02)] = 0.02
    if "Atelectasis" in findings:
        image[one & _ellipse(yy, xx, ly + 0.08 * s, lx, 0.03 * s, 0.12 * s)] += 0.25
    if "Infiltration" in findings:
        spots = sum(_blob(yy, xx, ly + rng.uniform(-0.15, 0.15), lx + rng.uniform(-0.07, 0.07), 0.035) for _ in "12345")
        image += 0.15 * spots * one
    if "Mass" in findings:
        my, mx = lungs[int(rng.integers(2))]
        image[lung & _ellipse(yy, xx, my + rng.uniform(-0.1, 0.1), mx, 0.055 * s, 0.055 * s)] += 0.38
    if "Nodule" in findings:
        for _ in range(int(rng.integers(2, 4))):
            ny, nx = lungs[int(rng.integers(2))]
            image[_ellipse(yy, xx, ny + rng.uniform(-0.18, 0.12), nx + rng.uniform(-0.06, 0.06), 0.02, 0.02)] += 0.4
    if "Pneumonia" in findings:
        image += 0.3 * _blob(yy, xx, ly + 0.1 * s, lx, 0.07) * one
    if "Consolidation" in findings:
        image[one & _ellipse(yy, xx, ly + rng.uniform(-0.08, 0.08), lx, 0.09 * s, 0.07 * s)] = 0.58
    if "Edema" in findings:
        image += 0.25 * lung * sum(_blob(yy, xx, ly, 0.5 + d * 0.11, 0.09) for d in (-1, 1))
    if "Fibrosis" in findings:
        mesh = np.sin(2 * np.pi * 16 * xx) + np.sin(2 * np.pi * 16 * yy) > 1.2
        image[lung & mesh & (yy < ly)] += 0.15
    if "Pleural_Thickening" in findings:
        rim = one & ~_ellipse(yy, xx, ly, lx, 0.26 * s, 0.12 * s) & ((xx - lx) * outward > 0)
        image[rim] = 0.8
    if "Hernia" in findings:
        image[_ellipse(yy, xx, ly + 0.2 * s, 0.5, 0.06 * s, 0.06 * s)] = 0.5
        image[_ellipse(yy, xx, ly + 0.2 * s, 0.5, 0.025 * s, 0.025 * s)] = 0.1


def _ellipse(yy, xx, cy, cx, ry, rx) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _blob(yy, xx, cy, cx, sigma) -> np.ndarray:
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def _entry(rng: np.random.Generator, patient: int, follow_up: int, age: int, sex: str) -> dict:
    """One row of ``Data_Entry_2017.csv``, with the real file's value shapes."""
    width, spacing = int(rng.integers(2000, 3000)), float(rng.choice([0.139, 0.143, 0.168]))
    return dict(
        zip(
            files.CHEST_COLUMNS,
            (
                f"{patient:08d}_{follow_up:03d}.png",
                "|".join(sorted(findings_of(rng))) or NO_FINDING,
                follow_up,
                patient,
                age,
                sex,
                str(rng.choice(["PA", "AP"], p=[0.6, 0.4])),
                width,
                width + int(rng.integers(-100, 100)),
                spacing,
                spacing,
            ),
            strict=True,
        )
    )


def _write_png(path: Path, anatomy: Anatomy, findings: set[str], size: int, mode: str, seed: int) -> tuple[int, int]:
    """Draw and write one PNG in ``mode`` (:data:`VARIATIONS`); its (rows, columns)."""
    shape = (size * 3 // 4, size) if mode == "L-oblong" else (size, size)
    image = draw(shape, anatomy, findings, np.random.default_rng(seed))
    grey = np.round(image * 255).astype(np.uint8)
    if mode == "I;16":
        picture = Image.fromarray(np.round(image * 65535).astype(np.uint16))
    elif mode in ("RGB", "RGBA"):
        picture = Image.fromarray(grey).convert(mode)
    else:
        picture = Image.fromarray(grey)
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return shape


def _write_lists(root: Path, rows: list[dict], test_fraction: float, rng: np.random.Generator) -> None:
    """``test_list.txt``: every image of ``test_fraction`` of the patients (at least one of two or more, if any);
    ``train_val_list.txt``: the others. Each sorted, as NIH's are."""
    patients = sorted({row["Patient ID"] for row in rows})
    n_test = round(test_fraction * len(patients))
    n_test = max(n_test, 1) if test_fraction > 0 and len(patients) > 1 else n_test
    test = set(rng.permutation(patients)[:n_test].tolist())
    for name, wanted in ((files.CHEST_TEST, True), (files.CHEST_TRAIN_VAL, False)):
        listed = sorted(row["Image Index"] for row in rows if (row["Patient ID"] in test) == wanted)
        files.write_text("".join(f"{image}\n" for image in listed), root / name)


def _prepare_root(root: Path, *, overwrite: bool) -> None:
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} is not empty; pass overwrite=True to replace it")
        for name in (files.CHEST_ENTRIES, files.CHEST_TRAIN_VAL, files.CHEST_TEST, files.SYNTHETIC_TRUTH):
            (root / name).unlink(missing_ok=True)
        for directory in part_directories():
            shutil.rmtree(root / directory, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
