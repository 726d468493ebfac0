"""The benchmark instruments: the GPU grid script in its tiny CPU mode, the harness-overhead script, and their
parts."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from mammoscale import cache, files, records
from mammoscale.train import bench

from conftest import REPO


def test_the_grid_script_runs_in_tiny_cpu_mode(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "grid.py"),
            "--tiny",
            "--sizes",
            "32",
            "--patches",
            "16",
            "8",
            "--variants",
            "flash",
            "hf-eager",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "grid.csv")
    assert len(table) == 4 and set(table["status"]) == {"ok"}
    assert set(table["attention_backend"]) == {"sdpa-flash-cpu", "matmul-softmax"}
    assert (table["throughput_img_s"] > 0).all()
    assert "| image_size | patch_size | flash_variant | baseline_variant | throughput_ratio |" in proc.stdout
    pairs = files.SPEEDUP_TABLE.read(tmp_path / "speedups.csv")
    assert len(pairs) == 2 and pairs["throughput_ratio"].notna().all()
    assert sorted(p.parent.name for p in (tmp_path / "runs").rglob("metrics.json")) == [
        "img32_p16",
        "img32_p16",
        "img32_p8",
        "img32_p8",
    ]


def test_a_cell_that_cannot_start_is_a_failed_record(tmp_path):
    cell = {"cache_root": str(tmp_path / "cache"), "image_size": 32, "patch_size": 12, "device": "cpu"}
    record = bench.run_in_process(cell, tmp_path / "run")
    assert record["status"] == "failed" and "patch size 12 does not divide image size 32" in record["message"]
    assert records.read_cell_record(tmp_path / "run")["status"] == "failed"


def test_random_cache_is_a_valid_cache(tmp_path):
    root = bench.random_cache(tmp_path, 32, 6)
    tiles = cache.open_tiles(root, 32, verify=True)
    assert len(tiles) == 6 and tiles[5].shape == (32, 32) and set(tiles.index["split"]) == {"train"}


def test_markdown():
    table = pd.DataFrame({"image_size": [384, 2048], "patch_size": [16, 16], "ratio": [3.0, float("nan")]})
    text = bench.markdown(table)
    assert text.splitlines()[2] == "| 384 | 16 | 3 |" and text.splitlines()[3].endswith("| - |")


def test_the_bare_loop_times_its_steps():
    times = bench.bare_steps(image_size=64, patch_size=32, micro_batch=1, global_batch=2, steps=2, warmup=1)
    assert len(times) == 2 and all(t > 0 for t in times)


def test_the_harness_script_runs_end_to_end(tmp_path):
    # --max-overhead -1 cannot be met (a ratio is positive): the table, then the one-line refusal and exit 1
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "harness.py"),
            *("--image-size", "64", "--patch-size", "32", "--steps", "2", "--warmup", "1", "--repeats", "1"),
            *("--max-overhead", "-1", "--out", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    header = lines.index("| round | bare_step_s | harness_step_s | harness_over_bare | overhead_pct |")
    ratio = float(lines[header + 2].split("|")[4])
    assert ratio > 0 and lines[header + 3].startswith("harness/bare: median ")
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "more than --max-overhead" in proc.stderr
    assert records.read_cell_record(tmp_path / "runs" / "round1")["status"] == "ok"
