"""How long Snakemake takes to plan the cache for the full RSNA set (a dry run, no pixel data).

Writes a train.csv of 54,706 rows for 11,913 patients (the RSNA set's counts: four standard
views each, plus a second image of some views) and an empty file at each row's path (a stat costs
the same on an empty file: what parsing the Snakefile reads of them), points data.root at it, and
times `snakemake -n <target>` with the paper's image sizes and shard count, three times. With
--paper, times `snakemake --profile slurm -n all`: the study's whole grid (config/paper.yaml)
through the SLURM profile, as a user types it. It also times the part of it that finds changed
DICOM files (:func:`mammoscale.dataset.sources.fingerprints`, a stat per file) alone, in this
process; --no-files leaves the files out (every stat then fails: the fingerprint is cheaper).

Run: python bench/dag.py [--shards 64] [--sizes 384,512,1024,2048] [--target cache] [--paper] [--no-files]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from mammoscale import files
from mammoscale.dataset import sources

REPO = Path(__file__).resolve().parents[1]
IMAGES, PATIENTS = 54_706, 11_913


def rsna_like_csv(path: Path) -> None:
    rows = []
    for p in range(PATIENTS):
        for side in "LR":
            for view in ("CC", "MLO"):
                rows.append((p, side, view))
    extra = IMAGES - len(rows)
    rows += [(p, "L", "MLO") for p in range(extra)]
    frame = pd.DataFrame(rows, columns=["patient", "laterality", "view"])
    frame.insert(0, "site_id", 1 + frame["patient"] % 2)
    frame.insert(1, "patient_id", 10_000 + frame.pop("patient"))
    frame.insert(2, "image_id", range(1_000_000, 1_000_000 + len(frame)))
    frame = frame.assign(
        age=60,
        cancer=0,
        biopsy=0,
        invasive=0,
        BIRADS="",
        implant=0,
        density="",
        machine_id=49,
        difficult_negative_case=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def empty_files(root: Path) -> None:
    """An empty file at the path of every row of ``root``'s train.csv."""
    for patient, image in sources.listed(root):
        path = files.under(root, files.IMAGE, patient_id=patient, image_id=image)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--sizes", default="384,512,1024,2048")
    parser.add_argument("--target", default="cache")
    parser.add_argument("--paper", action="store_true", help="snakemake --profile slurm -n all (config/paper.yaml)")
    parser.add_argument("--no-files", action="store_true", help="no file at the rows' paths")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("Snakefile", "rules", "workflow", "config", "envs", "slurm"):
            source = REPO / name
            (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)
        rsna_like_csv(work / "rsna" / "train.csv")
        if not args.no_files:
            empty_files(work / "rsna")
        data = f"data={{source: rsna, root: {work / 'rsna'}}}"
        if args.paper:
            args.target = "all (--profile slurm, config/paper.yaml)"
            command = [sys.executable, "-m", "snakemake", "--profile", "slurm", "-n", "all", "--config", data]
        else:
            command = [
                sys.executable,
                "-m",
                "snakemake",
                "-n",
                args.target,
                "--config",
                data,
                f"grid={{image_sizes: [{args.sizes}]}}",
                f"cache={{shards: {args.shards}}}",
            ]
        times, output = [], ""
        for _ in range(3):
            started = time.perf_counter()
            result = subprocess.run(command, cwd=work, capture_output=True, text=True, check=True)
            times.append(time.perf_counter() - started)
            output = result.stdout + result.stderr
        fingerprint = []
        for _ in range(3):
            started = time.perf_counter()
            sources.fingerprints(work / "rsna", args.shards)
            fingerprint.append(time.perf_counter() - started)
    jobs = [line for line in output.splitlines() if line.strip().startswith("total")]
    print(f"train.csv: {IMAGES} rows, {PATIENTS} patients; shards {args.shards}; sizes {args.sizes}")
    print(
        f"snakemake -n {args.target}: {jobs[-1].split()[-1] if jobs else '?'} jobs; "
        f"wall seconds {', '.join(f'{t:.2f}' for t in times)} (median {sorted(times)[1]:.2f})"
    )
    print(
        f"finding changed DICOM files ({'no files' if args.no_files else 'a stat per file'}): seconds "
        f"{', '.join(f'{t:.2f}' for t in fingerprint)} (median {sorted(fingerprint)[1]:.2f})"
    )


if __name__ == "__main__":
    main()
