"""How long Snakemake takes to plan the cache for the full RSNA set (a dry run, no pixel data).

Writes a train.csv of 54,706 rows for 11,913 patients (the RSNA set's counts: four standard
views each, plus a second image of some views) and an empty file at each row's path (a stat costs
the same on an empty file: what parsing the Snakefile reads of them), points data.root at it, and
times `snakemake -n <target>` with the paper's image sizes and shard count, three times. With
--paper, times `snakemake --profile slurm -n all`: the study's whole grid (config/paper.yaml)
through the SLURM profile, as a user types it. It also times the part of it that finds changed
DICOM files (:func:`mammoscale.dataset.sources.fingerprints`, a stat per file) alone, in this
process; --no-files leaves the files out (every stat then fails: the fingerprint is cheaper).

With --chestxray14, the second study's layout at NIH's size instead: a Data_Entry_2017.csv of 112,120 rows for
30,805 patients, its two lists (86,524 train_val images, split by patient) and an empty PNG at each row's place in
images_001/images ... images_012/images; it times `snakemake --profile slurm -n all --configfile
config/chexnet.yaml` (the reproduction as a user types it) and
:func:`mammoscale.dataset.chestxray14.fingerprints` (a directory scan and a stat per PNG) and the manifest's job
(:func:`mammoscale.dataset.chestxray14.main`) alone.

Run: python bench/dag.py [--shards 64] [--sizes 384,512,1024,2048] [--target cache] [--paper | --chestxray14]
     [--no-files]
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

from mammoscale import config, files
from mammoscale.dataset import chestxray14, sources

REPO = Path(__file__).resolve().parents[1]
IMAGES, PATIENTS = 54_706, 11_913
CHEST_IMAGES, CHEST_PATIENTS, CHEST_PARTS = 112_120, 30_805, 12


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


def chestxray14_like(root: Path, with_files: bool) -> None:
    """NIH's layout at its size: every patient's images numbered as NIH's are (``00000001_000.png``), the first
    86,524 images' patients in train_val_list.txt, the rest in test_list.txt, the PNGs in 12 parts."""
    per_patient = [CHEST_IMAGES // CHEST_PATIENTS + (p < CHEST_IMAGES % CHEST_PATIENTS) for p in range(CHEST_PATIENTS)]
    rows = [(f"{p + 1:08d}_{k:03d}.png", p + 1) for p, n in enumerate(per_patient) for k in range(n)]
    frame = pd.DataFrame(dict.fromkeys(files.CHEST_COLUMNS, ""), index=range(len(rows)))
    frame["Image Index"], frame["Patient ID"] = [r[0] for r in rows], [r[1] for r in rows]
    frame["Finding Labels"] = "No Finding"
    root.mkdir(parents=True)
    frame.to_csv(root / files.CHEST_ENTRIES, index=False)
    split = next(i for i in range(chestxray14.NIH_TRAIN_VAL_IMAGES, len(rows)) if rows[i][1] != rows[i - 1][1])
    names = [r[0] for r in rows]
    (root / files.CHEST_TRAIN_VAL).write_text("\n".join(names[:split]) + "\n")
    (root / files.CHEST_TEST).write_text("\n".join(names[split:]) + "\n")
    part_size = -(-len(names) // CHEST_PARTS)
    for k in range(CHEST_PARTS):
        directory = root / files.fill(files.CHEST_PART, part=f"{k + 1:03d}")
        directory.mkdir(parents=True)
        for name in names[k * part_size : (k + 1) * part_size] if with_files else []:
            (directory / name).touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--sizes", default="384,512,1024,2048")
    parser.add_argument("--target", default="cache")
    parser.add_argument("--paper", action="store_true", help="snakemake --profile slurm -n all (config/paper.yaml)")
    parser.add_argument("--chestxray14", action="store_true", help="NIH's layout (config/chexnet.yaml)")
    parser.add_argument("--no-files", action="store_true", help="no file at the rows' paths")
    args = parser.parse_args()
    if args.chestxray14:
        chest(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copy_workflow(work)
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
        times, output = thrice(lambda: run(command, work))
        fingerprint, _ = thrice(lambda: sources.fingerprints(work / "rsna", args.shards))
    print(f"train.csv: {IMAGES} rows, {PATIENTS} patients; shards {args.shards}; sizes {args.sizes}")
    print(f"snakemake -n {args.target}: {jobs(output)} jobs; wall seconds {seconds(times)}")
    print(
        f"finding changed DICOM files ({'no files' if args.no_files else 'a stat per file'}): "
        f"seconds {seconds(fingerprint)}"
    )


def chest(args) -> None:
    """--chestxray14: plan config/chexnet.yaml over NIH's layout at its size, and time its fingerprint alone."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copy_workflow(work)
        root = work / "chestxray14"
        chestxray14_like(root, with_files=not args.no_files)
        (work / "densenet121.pth").write_bytes(b"")  # the plan checks it is there; its hash, where it is loaded
        command = [
            *("snakemake", "--profile", "slurm", "-n", "all", "--configfile", "config/chexnet.yaml", "--config"),
            f"data={{source: chestxray14, root: {root}}}",
            f"grid={{variants: {{densenet: {{family: densenet, weights: {{path: {work / 'densenet121.pth'}, "
            "sha256: e3b0c442}}}}",
            f"cache={{shards: {args.shards}}}",
        ]
        times, output = thrice(lambda: run([sys.executable, "-m", *command], work))
        fingerprint, found = thrice(lambda: chestxray14.fingerprints(root, args.shards))
        manifest = config.with_defaults({"data": {"source": "chestxray14", "root": str(root)}})["manifest"]
        out = [work / name for name in ("images.csv", "excluded.csv", "counts.json")]
        kept = {"split_fractions": manifest["split"], "seed": manifest["seed"], "n_shards": args.shards}
        manifest_times, counts = thrice(lambda: chestxray14.main(root, *out, **kept))
    print(f"{files.CHEST_ENTRIES}: {found.files} rows, {CHEST_PATIENTS} patients; shards {args.shards}")
    print(
        f"snakemake --profile slurm -n all --configfile config/chexnet.yaml: {jobs(output)} jobs; "
        f"wall seconds {seconds(times)}"
    )
    print(
        f"finding changed PNGs ({'no files' if args.no_files else 'a scan and a stat per file'}): "
        f"seconds {seconds(fingerprint)}"
    )
    print(f"the manifest (rule manifest's job, {counts['images']} images kept): seconds {seconds(manifest_times)}")


def copy_workflow(work: Path) -> None:
    for name in ("Snakefile", "rules", "workflow", "config", "envs", "slurm"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)


def run(command: list[str], work: Path) -> str:
    """``command``'s output, run in ``work``; a failure stops the benchmark with its output's tail."""
    result = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"error: {' '.join(command[2:6])} failed:\n{(result.stdout + result.stderr)[-2000:]}")
    return result.stdout + result.stderr


def thrice(call):
    """Three calls of ``call``: their wall seconds, and the last one's result."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    return times, result


def seconds(times: list[float]) -> str:
    return f"{', '.join(f'{t:.2f}' for t in times)} (median {sorted(times)[1]:.2f})"


def jobs(output: str) -> str:
    """The jobs a dry run lists (its job stats' total)."""
    totals = [line for line in output.splitlines() if line.strip().startswith("total")]
    return totals[-1].split()[-1] if totals else "?"


if __name__ == "__main__":
    main()
