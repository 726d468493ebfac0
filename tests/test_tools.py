"""The build helpers for GPU clusters: a Horovod build per operation set, and flash-attn, refused in one line where
they cannot build."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from conftest import REPO

PYTHON = sys.executable


def tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "tools" / args[0]), *args[1:]], capture_output=True, text=True, timeout=120)


def test_each_horovod_build_has_its_own_cache_key(tmp_path):
    keys = {
        flags: tool("build-horovod", "--print-cache", *flags, PYTHON, str(tmp_path)).stdout.strip()
        for flags in ((), ("--gpu",), ("--gpu", "--mpi"))
    }
    assert len(set(keys.values())) == 3 and all(key.startswith(str(tmp_path)) for key in keys.values())
    assert keys[("--gpu",)].endswith("-nccl") and keys[("--gpu", "--mpi")].endswith("-nccl-mpi")


def test_a_gpu_build_needs_torchs_cuda_build_and_says_so_in_one_line():
    import torch

    if torch.version.cuda:
        pytest.skip("torch is a CUDA build here: there is no refusal to check")
    for script in (("build-horovod", "--gpu"), ("install-flash-attn",)):
        result = tool(*script, PYTHON)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.strip().splitlines() == [
            f"error: {'--gpu needs' if script[0] == 'build-horovod' else 'flash-attn needs'} torch's CUDA build; "
            f"this torch is {torch.__version__} (docs/gpu-cluster.md)"
        ]
    assert tool("build-horovod", "--bogus", PYTHON).stderr.startswith("error: unknown option --bogus")


def test_flash_attn_is_pinned_but_no_extra_pip_would_fail_to_build():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "flash-attn" not in project["project"]["optional-dependencies"]
    assert project["tool"]["mammoscale"]["flash-attn"] == "2.8.3.post2"
