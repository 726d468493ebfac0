"""Shared test helpers: DICOM files with exactly the stored values and headers a test needs, and tile caches
built by the real preprocessing chain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from mammoscale import synthetic
from mammoscale.preprocess.chain import build_cache as build_chain
from mammoscale.synthetic import mammogram_header

REPO = Path(__file__).resolve().parents[1]
SIZES = (64, 128)


def dataset_from_stored(
    stored: np.ndarray,
    *,
    bits_stored: int = 12,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
    transfer_syntax=ExplicitVRLittleEndian,
    **attributes,
) -> Dataset:
    """A minimal MG dataset holding ``stored`` as its pixel values, plus any ``attributes``."""
    ds = mammogram_header(
        np.asarray(stored).astype(np.int16 if signed else np.uint16), bits_stored=bits_stored, photometric=photometric
    )
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, generate_instance_uid=False)
    return ds


@pytest.fixture
def write_dicom(tmp_path):
    """write_dicom(stored, name=..., **kwargs) -> Path of a DICOM file made by dataset_from_stored."""
    counter = iter(range(10**6))

    def write(stored: np.ndarray, name: str | None = None, **kwargs) -> Path:
        ds = dataset_from_stored(np.asarray(stored), **kwargs)
        path = tmp_path / (name or f"image{next(counter)}.dcm")
        ds.save_as(path, enforce_file_format=True)
        return path

    return write


def ramp(rows: int = 32, cols: int = 64, top: int = 4095) -> np.ndarray:
    """Stored values 0..top spread over an image, every row the same."""
    return np.tile(np.round(np.linspace(0, top, cols)).astype(np.int64), (rows, 1))


CACHE_CONFIG = {
    "grid": {"image_sizes": list(SIZES)},
    "manifest": {"split": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 1},
}


def build_cache(data: Path, out: Path, *, n_shards: int = 2, workers: int = 1) -> Path:
    """The whole preprocessing chain through the library (the steps the Snakemake rules run)."""
    return build_chain(data, out, config={**CACHE_CONFIG, "cache": {"shards": n_shards}}, workers=workers)


@pytest.fixture(scope="session")
def train_cache(tmp_path_factory) -> Path:
    """A tile cache (img64, img128) of 16 synthetic patients: 19 train, 8 val, 4 test breasts."""
    out = tmp_path_factory.mktemp("train-cache")
    data = synthetic.generate(out / "rsna", n_patients=16, image_shape=(192, 144), seed=9, cancer_rate=0.3)
    return build_cache(data, out, workers=2)


class Preempted(BaseException):
    """Stands for the SIGKILL of a preemption, raised right after a checkpoint is on disk."""


def preempt_after_checkpoint(monkeypatch, when=lambda state: True) -> None:
    """Make the first checkpoint whose state satisfies ``when`` the last thing the run does (:class:`Preempted`)."""
    from mammoscale.train import checkpoint

    save = checkpoint.save

    def save_then_die(out_dir, state):
        save(out_dir, state)
        if when(state):
            monkeypatch.setattr(checkpoint, "save", save)
            raise Preempted

    monkeypatch.setattr(checkpoint, "save", save_then_die)
