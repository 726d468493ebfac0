"""Resize implementations for the canonical views: a 3000 x 1800 uint8 crop to 2048 x 1229 and 512 x 307.

The study's preprocessing downscales every crop once (stage 1) and every canonical view once
per image size (stage 2); this chooses the implementation by time. Each is timed as the mean
of --repeat calls after one warm-up, in one process and run.

Run: python bench/resize.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import PIL
import skimage
from PIL import Image
from skimage.transform import resize


def timed(function, repeat: int) -> float:
    function()
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - started) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    crop = np.clip(np.cumsum(rng.normal(0, 2, (3000, 1800)), axis=1) + 128, 0, 255).astype(np.uint8)
    image = Image.fromarray(crop)
    print(f"scikit-image {skimage.__version__}, Pillow {PIL.__version__}, numpy {np.__version__}")
    print("| implementation | to 2048 x 1229, ms | to 512 x 307, ms |")
    print("|---|---|---|")
    candidates = {
        "scikit-image resize, anti_aliasing=True": lambda shape: resize(
            crop, shape, anti_aliasing=True, preserve_range=True
        ).astype(np.uint8),
        "scikit-image resize, order 1, no anti-aliasing": lambda shape: resize(
            crop, shape, order=1, anti_aliasing=False, preserve_range=True
        ).astype(np.uint8),
        "Pillow LANCZOS": lambda shape: np.asarray(image.resize(shape[::-1], Image.Resampling.LANCZOS)),
        "Pillow BILINEAR": lambda shape: np.asarray(image.resize(shape[::-1], Image.Resampling.BILINEAR)),
        "Pillow BOX (area; mammoscale's default)": lambda shape: np.asarray(
            image.resize(shape[::-1], Image.Resampling.BOX)
        ),
    }
    for name, function in candidates.items():
        big = timed(lambda f=function: f((2048, 1229)), args.repeat)
        small = timed(lambda f=function: f((512, 307)), args.repeat)
        print(f"| {name} | {1000 * big:.1f} | {1000 * small:.1f} |")


if __name__ == "__main__":
    main()
