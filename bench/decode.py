"""Decode cost per transfer syntax on realistic-size synthetic mammograms.

For each transfer syntax: the codec alone (pydicom's decoder, stored values out) and the full
mammoscale.dicom.decode pipeline (codec + clipping check + modality LUT + VOI + MONOCHROME1 +
uint8), per image, on one core, in the same process and run; plus the generator's cost per
image and the peak RSS. Run: python bench/decode.py [--images 4] [--shape 3328x2560]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import get_decoder

from mammoscale import dicom, synthetic
from mammoscale.synthetic import parse_shape, phantom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="images per transfer syntax and shape")
    parser.add_argument("--shape", type=parse_shape, action="append", help="ROWSxCOLUMNS (repeatable)")
    args = parser.parse_args()
    shapes = args.shape or list(synthetic.REALISTIC_SHAPES)
    print(f"python {sys.version.split()[0]}, pydicom {pydicom.__version__}, numpy {np.__version__}")
    print("| shape | transfer syntax | MB/file | write s/img | codec s/img | decode() s/img | decode()/codec |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            for syntax in synthetic.TRANSFER_SYNTAXES:
                paths, write_times = [], []
                for i in range(args.images):
                    rng = np.random.default_rng(i)
                    started = time.perf_counter()
                    breast = phantom.random_breast(rng, cancer=i % 2 == 0)
                    image, _ = phantom.draw_view(
                        shape, breast, view=("CC", "MLO")[i % 2], laterality="LR"[i % 2], artefact="frame", rng=rng
                    )
                    ds = synthetic.make_dataset(image, bits_stored=12, transfer_syntax=syntax, image_id=i)
                    path = Path(tmp) / f"{syntax}-{i}.dcm"
                    ds.save_as(path, enforce_file_format=True)
                    write_times.append(time.perf_counter() - started)
                    paths.append(path)
                codec, full = [], []
                for path in paths:
                    ds = pydicom.dcmread(path)
                    started = time.perf_counter()
                    if syntax.is_compressed:
                        get_decoder(syntax).as_array(ds, index=0)
                    else:
                        np.frombuffer(ds.PixelData, "<u2").reshape(ds.Rows, ds.Columns).copy()
                    codec.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    dicom.decode(path)
                    full.append(time.perf_counter() - started)
                size = statistics.mean(p.stat().st_size for p in paths) / 1e6
                c, f = statistics.median(codec), statistics.median(full)
                print(
                    f"| {shape[0]}x{shape[1]} | {syntax.name} | {size:.1f} | {statistics.median(write_times):.2f} "
                    f"| {c:.3f} | {f:.3f} | {f / c:.2f} |"
                )
                for p in paths:
                    p.unlink()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
