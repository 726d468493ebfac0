"""The Snakemake workflow end to end on the test profile, as `make run` runs it on the default."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO

pytestmark = pytest.mark.workflow
WORKFLOW_FILES = ("Snakefile", "rules", "workflow", "config", "envs")


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, capture_output=True, text=True,
                            timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def copy_workflow(dest: Path) -> Path:
    for name in WORKFLOW_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("wf"))
    snakemake(workdir, "--cores", "2", "all", "--configfile", "config/test.yaml")
    return workdir


def test_all_builds_the_dataset_and_its_decode_qc(finished_run):
    data = finished_run / "results" / "data" / "synthetic"
    table = pd.read_csv(data / "train.csv")
    counts = json.loads((finished_run / "results" / "qc" / "decode_summary.json").read_text())
    summary = pd.read_csv(finished_run / "results" / "qc" / "decode_summary.csv")
    assert counts["images"] == counts["decoded"] == len(table) == len(summary)
    assert counts["errors"] == 0 and counts["unlisted_files"] == 0
    assert len(counts["transfer_syntaxes"]) == 4
    assert (summary["rows"] == 128).all()
    for rule in ("synthetic_data", "decode_qc"):
        log = (finished_run / "results" / "logs" / f"{rule}.log").read_text()
        assert "100%" in log, f"{rule} reports progress in its log"
        assert (finished_run / "results" / "benchmarks" / f"{rule}.tsv").is_file()


def test_a_finished_run_has_nothing_to_do(finished_run):
    result = snakemake(finished_run, "-n", "all", "--configfile", "config/test.yaml")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_rsna_source_reads_an_existing_directory_without_generating(finished_run, tmp_path):
    workdir = copy_workflow(tmp_path)
    root = finished_run / "results" / "data" / "synthetic"
    result = snakemake(workdir, "-n", "all", "--config", f"data={{source: rsna, root: {root}}}")
    out = result.stdout + result.stderr
    assert "decode_qc" in out and "synthetic_data" not in out
    snakemake(workdir, "-c1", "all", "--config", f"data={{source: rsna, root: {root}}}")
    counts = json.loads((workdir / "results" / "qc" / "decode_summary.json").read_text())
    assert counts["decoded"] == len(pd.read_csv(root / "train.csv"))


def test_a_missing_rsna_directory_fails_before_running(tmp_path):
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "-n", "all", "--config", "data={source: rsna, root: /nonexistent/rsna}", check=False)
    assert result.returncode != 0
    assert "/nonexistent/rsna/train.csv" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "override, message",
    [
        ("data={source: kaggle, root: x}", "kaggle"),
        ("typo_key=1", "typo_key"),
        ("synthetic={n_patients: 0, image_shape: [64, 64], cancer_rate: 0.1, seed: 1}", "n_patients"),
    ],
    ids=["bad-source", "unknown-key", "zero-patients"],
)
def test_invalid_config_is_refused_with_the_offending_value(tmp_path, override, message):
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "-n", "all", "--config", override, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_lint_is_clean(tmp_path):
    workdir = copy_workflow(tmp_path)
    lint = snakemake(workdir, "--lint", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Congratulations" in lint.stdout + lint.stderr
