"""The GPU cluster's build scripts: a Horovod build per operation set, and flash-attn, refused in one line where they
cannot build; and their dry runs, on the CPU: what each would do with torch's CUDA build, the NCCL package it brings,
a CUDA toolkit, a wheel from elsewhere.

The CUDA side is stood in for by a torch package reporting CUDA 13.0, an ``nvidia/nccl`` package laid out as
``nvidia-nccl-cu*`` lays it out, and an ``nvcc`` that prints its release, first on the paths; a dry run reads
them and runs nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

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


PINS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mammoscale"]


def cuda_side(tmp_path: Path, *, cuda: bool = True, nccl: bool = True) -> dict:
    """An environment whose torch is a CUDA 13.0 build (or a CPU one), with (or without) its NCCL package, and nvcc."""
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    version = "2.13.0+cu130" if cuda else "2.13.0+cpu"
    (site / "torch" / "__init__.py").write_text(
        f"import types\n__version__ = {version!r}\nversion = types.SimpleNamespace(cuda={'13.0' if cuda else None!r})\n"
    )
    if nccl:
        for part in ("include", "lib"):
            (site / "nvidia" / "nccl" / part).mkdir(parents=True)
        (site / "nvidia" / "nccl" / "include" / "nccl.h").write_text("#define NCCL_MAJOR 2\n")
        (site / "nvidia" / "nccl" / "lib" / "libnccl.so.2").write_bytes(b"")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "nvcc").write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.48'\n")
    (tools / "nvcc").chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HOROVOD_NCCL", "MAX_JOBS"))}
    return {**env, "PYTHONPATH": str(site), "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}


def script(name: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "tools" / name), *args], capture_output=True, text=True, env=env, timeout=120)


def test_horovods_gpu_build_finds_the_nccl_torch_brings(tmp_path):
    env = cuda_side(tmp_path)
    done = script("build-horovod", "--gpu", "--dry-run", sys.executable, str(tmp_path / "cache"), env=env)
    assert done.returncode == 0, done.stderr
    package = tmp_path / "site" / "nvidia" / "nccl"
    assert f"NCCL from torch's Python package: {package} (libnccl.so.2)" in done.stderr
    key = tmp_path / "cache" / "horovod-0.28.1-torch-2.13.0+cu130-nccl"
    assert f"would build horovod 0.28.1 against torch 2.13.0+cu130 into {key}" in done.stdout
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in done.stdout and "HOROVOD_WITHOUT_MPI=1" in done.stdout
    assert f"would link libnccl.so -> {package}/lib/libnccl.so.2" in done.stdout
    assert f"HOROVOD_NCCL_INCLUDE={package}/include HOROVOD_NCCL_LINK=SHARED" in done.stdout
    assert not (tmp_path / "cache").exists()  # a dry run builds and writes nothing


def test_horovods_gpu_build_takes_the_nccl_the_environment_names_else_the_systems(tmp_path):
    env = cuda_side(tmp_path, nccl=False)
    done = script("build-horovod", "--gpu", "--dry-run", sys.executable, str(tmp_path / "cache"), env=env)
    assert done.returncode == 0 and "Horovod searches the system's paths" in done.stderr
    named = script("build-horovod", "--gpu", "--dry-run", sys.executable, env={**env, "HOROVOD_NCCL_HOME": "/opt/nccl"})
    assert named.returncode == 0 and "NCCL where the environment says: HOROVOD_NCCL_HOME=/opt/nccl" in named.stderr


def test_horovods_builds_refuse_in_one_line_what_cannot_work(tmp_path):
    cpu = script("build-horovod", "--gpu", "--dry-run", sys.executable, env=cuda_side(tmp_path, cuda=False))
    assert cpu.returncode == 1 and cpu.stderr.strip() == (
        "error: --gpu needs torch's CUDA build; this torch is 2.13.0+cpu (docs/gpu-cluster.md)"
    )
    gloo = script("build-horovod", "--dry-run", sys.executable, str(tmp_path / "c"), env=cuda_side(tmp_path / "g"))
    assert gloo.returncode == 0 and "HOROVOD_CPU_OPERATIONS=GLOO" in gloo.stdout and "NCCL" not in gloo.stdout


def test_flash_attns_build_installs_its_tools_and_fits_its_jobs_to_the_memory(tmp_path):
    env = cuda_side(tmp_path)
    done = script("install-flash-attn", "--dry-run", sys.executable, env=env)
    assert done.returncode == 0, done.stderr
    assert f"would run: {sys.executable} -m pip install {' '.join(PINS['flash-attn-build'])}" in done.stdout
    assert (
        f"would run: {sys.executable} -m pip install --no-build-isolation flash-attn=={PINS['flash-attn']}"
        in done.stdout
    )
    assert "GiB available, about 6 GiB an nvcc job" in done.stderr and "MAX_JOBS=" in done.stderr
    chosen = script("install-flash-attn", "--dry-run", sys.executable, env={**env, "MAX_JOBS": "3"})
    assert "MAX_JOBS=3 (from the environment)" in chosen.stderr
    wheels = tmp_path / "wheels"
    built = script("install-flash-attn", "--dry-run", "--build-wheel", str(wheels), sys.executable, env=env)
    assert built.returncode == 0 and f"--no-deps --wheel-dir {wheels} flash-attn=={PINS['flash-attn']}" in built.stdout


def test_flash_attn_installs_offline_from_a_wheel_built_elsewhere(tmp_path):
    env = cuda_side(tmp_path)
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    wheel = tmp_path / f"flash_attn-{PINS['flash-attn']}-{tag}-{tag}-linux_x86_64.whl"
    wheel.write_bytes(b"")
    done = script("install-flash-attn", "--dry-run", "--wheel", str(wheel), sys.executable, env=env)
    assert done.returncode == 0 and f"-m pip install --no-deps --no-index {wheel}" in done.stdout
    other = tmp_path / f"flash_attn-2.7.0-{tag}-{tag}-linux_x86_64.whl"
    other.write_bytes(b"")
    refused = script("install-flash-attn", "--dry-run", "--wheel", str(other), sys.executable, env=env)
    assert refused.returncode == 1 and f"is not flash-attn {PINS['flash-attn']}" in refused.stderr
    cpu = script("install-flash-attn", "--dry-run", sys.executable, env=cuda_side(tmp_path / "cpu", cuda=False))
    assert cpu.returncode == 1 and cpu.stderr.strip() == (
        "error: flash-attn needs torch's CUDA build; this torch is 2.13.0+cpu (docs/gpu-cluster.md)"
    )
