"""The benchmark instruments: the GPU grid script in its tiny CPU mode, and its parts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from mammoscale import bench, cache


def test_the_grid_script_runs_in_tiny_cpu_mode(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "grid.py"), "--tiny", "--sizes", "32",
                           "--patches", "16", "8", "--variants", "flash", "hf-eager", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "grid.csv")
    assert len(table) == 4 and set(table["status"]) == {"ok"}
    assert set(table["attention_backend"]) == {"sdpa-flash-cpu", "materialised"}
    assert (table["throughput_img_s"] > 0).all()
    assert "| image_size | patch_size | flash/hf-eager |" in proc.stdout
    assert sorted(p.parent.name for p in (tmp_path / "runs").rglob("metrics.json")) == ["img32_p16", "img32_p16",
                                                                                         "img32_p8", "img32_p8"]


def test_a_cell_that_cannot_start_is_a_failed_row(tmp_path):
    cells = bench.grid_cells(sizes=[32], patches=[12], variants=["flash"], model_size="vit-tiny", token_budget=64,
                             global_batch=4, warmup_steps=1, timed_steps=1, device="cpu", peak_tflops=None,
                             cache_root=tmp_path / "cache", hardware="cpu")
    table = bench.run_grid(cells, tmp_path / "runs", log=lambda *_: None)
    assert table.loc[0, "status"] == "failed" and pd.isna(table.loc[0, "throughput_img_s"])


def test_random_cache_is_a_valid_cache(tmp_path):
    root = bench.random_cache(tmp_path, 32, 6)
    tiles = cache.open_tiles(root, 32, verify=True)
    assert len(tiles) == 6 and tiles[5].shape == (32, 32) and set(tiles.index["split"]) == {"train"}


@pytest.mark.parametrize("tokens, budget, largest, micro", [(4096, 1 << 16, 64, 16), (65536, 1 << 16, 64, 1),
                                                           (144, 1 << 16, 64, 64), (1024, 3000, 64, 2),
                                                           (10**6, 1 << 16, 64, 1)])
def test_micro_batches_hold_the_token_budget(tokens, budget, largest, micro):
    assert bench.micro_batch_for(tokens, budget, largest) == micro


def test_speedups_over_the_baseline_and_markdown():
    table = pd.DataFrame({"variant": ["flash", "hf-eager", "flash", "hf-eager"], "image_size": [384, 384, 2048, 2048],
                          "patch_size": [16, 16, 16, 16], "throughput_img_s": [30.0, 10.0, 2.0, None]})
    out = bench.speedups(table, "hf-eager")
    assert out.loc[0, "flash/hf-eager"] == 3.0 and np.isnan(out.loc[1, "flash/hf-eager"])
    text = bench.markdown(out)
    assert text.splitlines()[2] == "| 384 | 16 | 3 |" and text.splitlines()[3].endswith("| - |")
