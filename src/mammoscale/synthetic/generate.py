"""A synthetic dataset in the RSNA Screening Mammography layout: the embedded default's data.

``generate`` writes ``train.csv`` (the competition's columns) and
``train_images/<patient_id>/<image_id>.dcm``, plus ``synthetic_truth.csv`` (what was drawn
where, and how each file was encoded) for tests. It is deterministic from a seed: each image
has its own random stream, so the bytes do not depend on the number of worker processes.

What real data throws at a pipeline is all here, spread across images so that any set of at
least a dozen images has every variation (``VARIATIONS``): JPEG 2000 Lossless, RLE Lossless,
Explicit VR Little Endian and JPEG-LS Lossless pixel data; 12, 14 and 16 stored bits;
MONOCHROME1 and MONOCHROME2; single and multi-valued windows with LINEAR, LINEAR_EXACT and
SIGMOID functions, VOI LUT sequences, and no window at all; rescale slope/intercept on some;
detector-edge artefacts. Patients have extra non-standard views (AT, LM, ML, LMO); one breast
in about twenty has only one of CC/MLO; some breasts have two CC images. Cancer-positive
breasts carry a lesion in every view.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.pixels import get_encoder
from pydicom.uid import UID

from mammoscale import config, files
from mammoscale.logs import configure
from mammoscale.synthetic import phantom
from mammoscale.synthetic.encode import TRANSFER_SYNTAXES, VARIATIONS, make_dataset

log = logging.getLogger(__name__)

EXTRA_VIEWS = ("AT", "LM", "ML", "LMO")
MACHINES = {1: (21, 29, 48, 49, 93), 2: (170, 190, 197, 210, 216)}
REALISTIC_SHAPES = ((3328, 2560), (2776, 2082))
"""Sizes of real RSNA mammograms, for benchmarks."""


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """Everything needed to make one file, independently of every other."""

    path: str
    patient_id: int
    image_id: int
    laterality: str
    view: str
    breast: phantom.Breast
    transfer_syntax: str
    bits_stored: int
    photometric: str
    voi: str
    rescale: str
    artefact: str
    seed: int


# public API


def generate(
    root: Path | str,
    *,
    n_patients: int,
    image_shape: tuple[int, int] | None = None,
    seed: int | None = None,
    cancer_rate: float | None = None,
    workers: int = 1,
    overwrite: bool = False,
    transfer_syntaxes: tuple[str, ...] | None = None,
) -> Path:
    """Write a synthetic RSNA-layout directory at ``root`` and return ``root``.

    ``n_patients`` patients, each with CC and MLO views of both breasts (plus the exceptions
    described in the module docstring); ``cancer_rate`` of the breasts (at least one) are
    positive. ``image_shape`` is (rows, columns) of every image. ``workers`` processes encode
    in parallel; the output is identical for any ``workers``. An existing non-empty ``root``
    is refused unless ``overwrite`` is true, in which case its dataset files are replaced.
    ``transfer_syntaxes`` narrows the encodings (UIDs of ``TRANSFER_SYNTAXES``), e.g. to
    JPEG 2000 alone to mimic the RSNA set in a benchmark. ``image_shape``, ``seed`` and
    ``cancer_rate`` default to the configuration's (``synthetic.*``).
    """
    root = Path(root)
    defaults = config.defaults()["synthetic"]
    image_shape = tuple(image_shape or defaults["image_shape"])
    seed = defaults["seed"] if seed is None else seed
    cancer_rate = defaults["cancer_rate"] if cancer_rate is None else cancer_rate
    _check_arguments(n_patients=n_patients, image_shape=image_shape, cancer_rate=cancer_rate, workers=workers)
    _prepare_root(root, overwrite=overwrite)
    missing = [str(ts) for ts in TRANSFER_SYNTAXES if ts.is_compressed and not get_encoder(ts).is_available]
    if missing:
        raise RuntimeError(f"no encoder available for transfer syntaxes {missing}: reinstall mammoscale's dependencies")

    table, specs = plan(n_patients=n_patients, seed=seed, cancer_rate=cancer_rate, transfer_syntaxes=transfer_syntaxes)
    started = time.perf_counter()
    log.info(
        "writing %d images of %d patients (%dx%d) to %s with %d worker(s)",
        len(specs),
        n_patients,
        *image_shape,
        root,
        workers,
    )
    truths = _write_all(root, specs, image_shape, workers)
    files.write_csv(table, root / files.TRAIN_CSV)
    files.write_csv(pd.DataFrame(truths), root / files.SYNTHETIC_TRUTH)
    log.info("wrote %s in %.1f s", root, time.perf_counter() - started)
    return root


def _write_all(root: Path, specs: list[ImageSpec], image_shape: tuple[int, int], workers: int) -> list[dict]:
    """Every image written, in ``workers`` processes; their truth rows in the order of ``specs``."""
    started, truths = time.perf_counter(), []
    if workers == 1:
        for done, spec in enumerate(specs, 1):
            truths.append(write_image(root, spec, image_shape))
            _progress(done, len(specs), started)
        return truths
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(write_image, root, spec, image_shape) for spec in specs]
        for done, future in enumerate(futures, 1):
            truths.append(future.result())
            _progress(done, len(specs), started)
    return truths


def plan(
    *, n_patients: int, seed: int, cancer_rate: float, transfer_syntaxes: tuple[str, ...] | None = None
) -> tuple[pd.DataFrame, list[ImageSpec]]:
    """Decide every patient, breast and image (no pixels): the train.csv table and one spec per image."""
    variations = _variations(transfer_syntaxes)
    rng = np.random.default_rng(seed)
    if n_patients > 55_535:
        raise ValueError(f"n_patients must be <= 55,535 (five-digit patient ids), got {n_patients}")
    rows, images = _breasts_and_views(rng, n_patients=n_patients, cancer_rate=cancer_rate)
    return _specs(rng, rows, images, variations)


def _variations(transfer_syntaxes: tuple[str, ...] | None) -> dict:
    variations = dict(VARIATIONS)
    if transfer_syntaxes is not None:
        unknown = set(map(str, transfer_syntaxes)) - set(VARIATIONS["transfer_syntax"])
        if unknown or not transfer_syntaxes:
            raise ValueError(
                f"transfer_syntaxes must be some of {VARIATIONS['transfer_syntax']}, got {transfer_syntaxes}"
            )
        variations["transfer_syntax"] = tuple(map(str, transfer_syntaxes))
    return variations


def _breasts_and_views(rng: np.random.Generator, *, n_patients: int, cancer_rate: float) -> tuple[list, list]:
    """The train.csv rows and (patient, laterality, view, breast) of every image, exceptions included."""
    patient_ids = 10_000 + rng.choice(55_535, size=n_patients, replace=False)
    breasts = [(int(p), lat) for p in patient_ids for lat in ("L", "R")]
    n_cancer = min(len(breasts), max(1, round(cancer_rate * len(breasts))))
    cancer = set(rng.choice(len(breasts), size=n_cancer, replace=False).tolist())

    order = rng.permutation(len(breasts)).tolist()
    # Exceptions go to distinct breasts where there are enough, never to all of them.
    n_single = max(1, len(breasts) // 20) if len(breasts) > 2 else 0
    n_double_cc = max(1, len(breasts) // 15) if len(breasts) > 2 else 0
    single_view = {order[i]: ("CC", "MLO")[i % 2] for i in range(n_single)}
    double_cc = set(order[n_single : n_single + n_double_cc])
    extra_patients = set(rng.choice(n_patients, size=max(1, n_patients // 6), replace=False).tolist())

    rows, images = [], []
    for b_index, (patient_id, laterality) in enumerate(breasts):
        p_index = b_index // 2
        site = 1 + p_index % 2
        is_cancer = b_index in cancer
        breast = phantom.random_breast(rng, cancer=is_cancer)
        views = ["CC", "MLO"]
        if b_index in single_view:
            views.remove(single_view[b_index])
        if b_index in double_cc:
            views.append("CC")
        if p_index in extra_patients and laterality == "L":
            views.append(EXTRA_VIEWS[p_index % len(EXTRA_VIEWS)])
        breast_rows = _breast_rows(rng, patient_id=patient_id, laterality=laterality, site=site, cancer=is_cancer)
        for view in views:
            images.append((patient_id, laterality, view, breast))
            rows.append({**breast_rows, "view": view})
    return rows, images


def _specs(rng: np.random.Generator, rows: list[dict], images: list, variations: dict):
    """Image ids and the header variations dealt to the images: the table and one spec per image."""
    image_ids = 10_000 + rng.choice(2_147_483_647 - 10_000, size=len(images), replace=False)
    variations = {
        name: rng.permutation(np.resize(np.asarray(values, dtype=object), len(images)))
        for name, values in variations.items()
    }
    specs = []
    for i, ((patient_id, laterality, view, breast), image_id) in enumerate(zip(images, image_ids, strict=True)):
        rows[i]["image_id"] = int(image_id)
        specs.append(
            ImageSpec(
                path=files.fill(files.IMAGE, patient_id=patient_id, image_id=int(image_id)),
                patient_id=patient_id,
                image_id=int(image_id),
                laterality=laterality,
                view=view,
                breast=breast,
                transfer_syntax=str(variations["transfer_syntax"][i]),
                bits_stored=int(variations["bits_stored"][i]),
                photometric=str(variations["photometric"][i]),
                voi=str(variations["voi"][i]),
                rescale=str(variations["rescale"][i]),
                artefact=str(variations["artefact"][i]),
                seed=int(rng.integers(2**63)),
            )
        )
    table = pd.DataFrame(rows, columns=list(files.RSNA_COLUMNS))
    return table, specs


def write_image(root: Path, spec: ImageSpec, image_shape: tuple[int, int]) -> dict:
    """Draw, encode and write one image; return its truth row."""
    rng = np.random.default_rng(spec.seed)
    brightness, truth = phantom.draw_view(
        image_shape, spec.breast, view=spec.view, laterality=spec.laterality, artefact=spec.artefact, rng=rng
    )
    ds = make_dataset(
        brightness,
        bits_stored=spec.bits_stored,
        photometric=spec.photometric,
        voi=spec.voi,
        rescale=spec.rescale,
        transfer_syntax=UID(spec.transfer_syntax),
        patient_id=spec.patient_id,
        image_id=spec.image_id,
        laterality=spec.laterality,
        view=spec.view,
        seed=spec.seed,
    )
    path = root / spec.path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".dcm.partial")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
    return {
        "image_id": spec.image_id,
        "patient_id": spec.patient_id,
        "laterality": spec.laterality,
        "view": spec.view,
        "transfer_syntax": spec.transfer_syntax,
        "bits_stored": spec.bits_stored,
        "photometric": spec.photometric,
        "voi": spec.voi,
        "rescale": spec.rescale,
        "artefact": spec.artefact,
        "breast_box": " ".join(map(str, truth.breast_box)),
        "label_box": " ".join(map(str, truth.label_box)),
        "lesion_row": truth.lesion_center[0] if truth.lesion_center else "",
        "lesion_col": truth.lesion_center[1] if truth.lesion_center else "",
        "lesion_radius": round(truth.lesion_radius, 2),
    }


def _breast_rows(rng: np.random.Generator, *, patient_id: int, laterality: str, site: int, cancer: bool) -> dict:
    """The train.csv columns shared by every image of a breast, with the real set's value shapes."""
    age = float(rng.integers(38, 86)) if rng.random() > 0.02 else np.nan
    birads = (0 if cancer else int(rng.choice([0, 1, 1, 1, 2]))) if site == 1 else np.nan
    return {
        "site_id": site,
        "patient_id": patient_id,
        "laterality": laterality,
        "age": age,
        "cancer": int(cancer),
        "biopsy": int(cancer or rng.random() < 0.03),
        "invasive": int(cancer and rng.random() < 0.7),
        "BIRADS": birads,
        "implant": int(rng.random() < 0.02),
        "density": str(rng.choice(list("ABCD"))) if site == 1 else np.nan,
        "machine_id": int(rng.choice(MACHINES[site])),
        "difficult_negative_case": bool(not cancer and rng.random() < 0.1),
    }


def _check_arguments(*, n_patients: int, image_shape: tuple[int, int], cancer_rate: float, workers: int) -> None:
    if not isinstance(n_patients, (int, np.integer)) or n_patients < 1:
        raise ValueError(f"n_patients must be a positive integer, got {n_patients!r}")
    if len(image_shape) != 2 or min(image_shape) < 64:
        raise ValueError(f"image_shape must be (rows, columns), each >= 64, got {image_shape!r}")
    if not 0.0 <= cancer_rate <= 1.0:
        raise ValueError(f"cancer_rate must be in [0, 1], got {cancer_rate!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")


def _prepare_root(root: Path, *, overwrite: bool) -> None:
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} is not empty; pass overwrite=True (--overwrite) to replace it")
        for name in (files.TRAIN_CSV, files.SYNTHETIC_TRUTH):
            (root / name).unlink(missing_ok=True)
        shutil.rmtree(root / files.IMAGES_DIR, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)


def _progress(done: int, total: int, started: float) -> None:
    step = max(1, total // 10)
    if done % step == 0 or done == total:
        elapsed = time.perf_counter() - started
        log.info(
            "%d/%d images (%.0f%%), %.1f s, %.1f images/s",
            done,
            total,
            100 * done / total,
            elapsed,
            done / max(elapsed, 1e-9),
        )


# command line


def parse_shape(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLUMNS such as 3328x2560, got {text!r}") from None
    return rows, cols


def cli(argv: list[str] | None = None) -> int:
    """``mammoscale-synthetic OUT``: write a synthetic RSNA-layout dataset."""
    defaults = config.defaults()["synthetic"]
    parser = argparse.ArgumentParser(prog="mammoscale-synthetic", description=cli.__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--patients", type=int, default=defaults["n_patients"])
    parser.add_argument(
        "--shape", type=parse_shape, default=tuple(defaults["image_shape"]), help="ROWSxCOLUMNS, e.g. 3328x2560"
    )
    parser.add_argument("--seed", type=int, default=defaults["seed"])
    parser.add_argument("--cancer-rate", type=float, default=defaults["cancer_rate"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    configure()
    try:
        generate(
            args.out,
            n_patients=args.patients,
            image_shape=args.shape,
            seed=args.seed,
            cancer_rate=args.cancer_rate,
            workers=args.workers,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))
    return 0
