"""Preprocessing cost against pure decoding, on real-size synthetic mammograms.

For one image shape and a set of transfer syntaxes, on the same files, in one run:
- pure decode: the full-resolution decode of the pipeline's decoder (its codec plugin, stored values
  out, no VOI), one process;
- pipeline: stage 1 (decode + VOI + flip + ROI + canonical view at --canonical) plus stage 2
  (tiles for every --sizes), with 1 and with 2 worker processes, JPEG 2000 views at the level
  their crop allows (the default); and with 1 worker at full resolution (max_decode_level 0);
- peak RSS of each worker process.
Each measurement runs in a fresh process, so RSS and caches do not carry over.

Run: python bench/preprocessing.py --shape 3328x2560 --patients 4 [--syntaxes j2k,rle]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYNTAXES = {
    "j2k": "1.2.840.10008.1.2.4.90",
    "rle": "1.2.840.10008.1.2.5",
    "jls": "1.2.840.10008.1.2.4.80",
    "native": "1.2.840.10008.1.2.1",
}


def measure_decode(data: str, breasts_csv: str) -> dict:
    import pandas as pd
    import pydicom

    from mammoscale.dicom import DEFAULT_MAX_PIXELS, stored_values
    from mammoscale.files import image_path

    breasts = pd.read_csv(breasts_csv)
    paths = [image_path(data, b.patient_id, i) for b in breasts.itertuples() for i in (b.cc_image_id, b.mlo_image_id)]
    started = time.perf_counter()
    for path in paths:  # the full-resolution decode as the pipeline's decoder does it (its plugin, its checks)
        stored_values(pydicom.dcmread(path), path, max_pixels=DEFAULT_MAX_PIXELS)
    return {"seconds": time.perf_counter() - started, "images": len(paths)}


def measure_steps(data: str, breasts_csv: str, canonical: int) -> dict:
    """Seconds per step of stage 1 over all images, in one process: where the non-codec time goes."""
    import pandas as pd
    import pydicom

    from mammoscale import dicom
    from mammoscale.dicom import DEFAULT_MAX_PIXELS, stored_values
    from mammoscale.files import image_path
    from mammoscale.preprocess import roi, tiling

    breasts = pd.read_csv(breasts_csv)
    steps = dict.fromkeys(("codec", "decode()", "locate (flip + ROI)", "canonical_view"), 0.0)
    for b in breasts.itertuples():
        for image_id in (b.cc_image_id, b.mlo_image_id):
            path = image_path(data, b.patient_id, image_id)
            ds = pydicom.dcmread(path)
            t0 = time.perf_counter()
            stored_values(ds, path, max_pixels=DEFAULT_MAX_PIXELS)
            t1 = time.perf_counter()
            image = dicom.decode(path)
            t2 = time.perf_counter()
            located = roi.locate(image, b.laterality)
            t3 = time.perf_counter()
            tiling.canonical_view(image, located.roi.mask, canonical, box=located.roi.box, flip=located.flip)
            t4 = time.perf_counter()
            for key, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                steps[key] += dt
    return steps


def measure_pipeline(
    data: str, breasts_csv: str, out: str, workers: int, canonical: int, sizes: list[int], max_decode_level: int = 5
) -> dict:
    from mammoscale import files
    from mammoscale.preprocess.tiles import build_tiles
    from mammoscale.preprocess.views import ViewSettings, build_views

    out = Path(out)
    views = {
        name: files.under(out, template, shard=0)
        for name, template in (("npy", files.VIEWS_SHARD), ("csv", files.VIEWS_INDEX), ("images", files.VIEWS_IMAGES))
    }
    started = time.perf_counter()
    build_views(
        data,
        breasts_csv,
        0,
        views["npy"],
        views["csv"],
        views["images"],
        settings=ViewSettings(canonical_size=canonical, max_decode_level=max_decode_level),
        workers=workers,
    )
    stage1 = time.perf_counter() - started
    for size in sizes:
        build_tiles(
            views["npy"],
            views["csv"],
            files.under(out, files.TILES_SHARD, image_size=size, shard=0),
            files.under(out, files.TILES_INDEX, image_size=size, shard=0),
            image_size=size,
        )
    total = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"stage1": stage1, "total": total, "rss_mb_worker": children if workers else own, "rss_mb_main": own}


def in_fresh_process(function: str, *args) -> dict:
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import preprocessing as b; "
        f"print(json.dumps(b.{function}(*{args!r})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    from mammoscale import files, synthetic
    from mammoscale.dataset import manifest
    from mammoscale.synthetic import parse_shape

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=parse_shape, default=(3328, 2560))
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--syntaxes", default="j2k,rle", help=f"comma-separated, of {', '.join(SYNTAXES)}")
    parser.add_argument("--canonical", type=int, default=2048)
    parser.add_argument("--sizes", default="384,512,1024,2048")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    syntaxes = tuple(SYNTAXES[s] for s in args.syntaxes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        started = time.perf_counter()
        synthetic.generate(
            data, n_patients=args.patients, image_shape=args.shape, seed=1, workers=2, transfer_syntaxes=syntaxes
        )
        generated = time.perf_counter() - started
        breasts_csv = Path(tmp) / "breasts.csv"
        breasts, _, _ = manifest.build(
            data, split_fractions={"train": 1.0, "val": 0.0, "test": 0.0}, seed=0, n_shards=1
        )
        files.BREAST_TABLE.write(breasts, breasts_csv)
        decodes, runs = [], {1: [], 2: [], "full": []}
        for repeat in range(args.repeat):  # interleaved, so drifts in machine load hit every measurement alike
            decodes.append(in_fresh_process("measure_decode", str(data), str(breasts_csv)))
            for key, workers, level in ((1, 1, 5), (2, 2, 5), ("full", 1, 0)):
                out = Path(tmp) / f"out{key}-{repeat}"
                out.mkdir()
                runs[key].append(
                    in_fresh_process(
                        "measure_pipeline", str(data), str(breasts_csv), str(out), workers, args.canonical, sizes, level
                    )
                )
                shutil.rmtree(out)
        steps = in_fresh_process("measure_steps", str(data), str(breasts_csv), args.canonical)
    decode = min(decodes, key=lambda d: d["seconds"])
    one = {k: min(r[k] for r in runs[1]) for k in runs[1][0]}
    two = {k: min(r[k] for r in runs[2]) for k in runs[2][0]}
    full = {k: min(r[k] for r in runs["full"]) for k in runs["full"][0]}
    n = decode["images"]
    print(
        f"shape {args.shape[0]}x{args.shape[1]}, syntaxes {args.syntaxes}, {len(breasts)} breasts / {n} images "
        f"(generated in {generated:.0f} s), canonical {args.canonical}, tiles {sizes}"
    )
    print("| measurement | seconds | images/s | ratio |")
    print("|---|---|---|---|")
    print(
        f"| pure decode (full resolution, the pipeline's codec), 1 process | {decode['seconds']:.2f} | "
        f"{n / decode['seconds']:.2f} | 1.00 |"
    )
    print(
        f"| stage 1, 1 worker | {one['stage1']:.2f} | {n / one['stage1']:.2f} | "
        f"{one['stage1'] / decode['seconds']:.2f} x decode |"
    )
    print(
        f"| stage 1 + stage 2, 1 worker | {one['total']:.2f} | {n / one['total']:.2f} | "
        f"{one['total'] / decode['seconds']:.2f} x decode |"
    )
    print(
        f"| stage 1 + stage 2, 1 worker, full resolution (max_decode_level 0) | {full['total']:.2f} | "
        f"{n / full['total']:.2f} | {full['total'] / decode['seconds']:.2f} x decode; reduced levels "
        f"{one['total'] / full['total']:.2f} x this |"
    )
    print(
        f"| stage 1, 2 workers | {two['stage1']:.2f} | {n / two['stage1']:.2f} | "
        f"{one['stage1'] / two['stage1']:.2f} x 1 worker |"
    )
    print(
        f"| stage 1 + stage 2, 2 workers | {two['total']:.2f} | {n / two['total']:.2f} | "
        f"{one['total'] / two['total']:.2f} x 1 worker |"
    )
    all_decode = ", ".join(f"{d['seconds']:.2f}" for d in decodes)
    all_one = ", ".join(f"{r['total']:.2f}" for r in runs[1])
    all_two = ", ".join(f"{r['total']:.2f}" for r in runs[2])
    print(
        f"(minimum of {args.repeat} interleaved runs each; all runs: decode {all_decode} s; "
        f"stage 1+2, 1 worker {all_one} s; 2 workers {all_two} s)"
    )
    print("stage 1 per image, ms: " + ", ".join(f"{k} {1000 * v / n:.0f}" for k, v in steps.items()))
    print(
        f"peak RSS: 1 worker (in-process) {one['rss_mb_worker']:.0f} MB; 2 workers: largest worker "
        f"{two['rss_mb_worker']:.0f} MB, main process {two['rss_mb_main']:.0f} MB"
    )


if __name__ == "__main__":
    main()
