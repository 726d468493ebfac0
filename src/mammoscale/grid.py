"""The study's grid as data: which cells exist, each cell's own settings, and how a cell is launched.

A cell is (hardware, variant, image size, patch size). Its settings are resolved here from the
config's parts that concern it alone: its hardware profile, its variant, ``train.*`` and the
cache's location. The Snakefile passes them to the training rule as params, so changing one
hardware profile, say, reruns that hardware's cells and no others.

A patch size that does not divide an image size makes no cell (``cells`` leaves it out and
:func:`missing_cells` says which), rather than a cell that can only fail.

The Snakefile imports this module at parse time, and every SLURM job parses the Snakefile
again: nothing here imports torch at module level.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from mammoscale.errors import UserError

log = logging.getLogger(__name__)

BACKEND_OF_LAUNCHER = {"none": "none", "torchrun": "ddp", "horovod": "horovod"}
FAILED_RECORD = "metrics.failed.json"
FLASH_ATTENTIONS = ("flash", "flash_attention_2")  # a failed cell's metrics, kept out of Snakemake's way


def cells(image_sizes, patch_sizes, variants, hardware) -> list[tuple[str, str, int, int]]:
    """Every (hardware, variant, image size, patch size) to run, patches that divide the size only."""
    return [(hw, variant, size, patch) for hw in hardware for variant in variants for size in sorted(image_sizes)
            for patch in sorted(patch_sizes) if size % patch == 0]


def with_extra_cells(cells: list[tuple], extra: list[dict], *, image_sizes, variants, profiles: dict) -> list[tuple]:
    """``cells`` and then ``grid.extra_cells`` (cells outside the product, e.g. Figure 2's reference
    cell on every server), each checked, none twice."""
    result = list(cells)
    for cell in extra:
        key = (cell["hardware"], cell["variant"], cell["image_size"], cell["patch_size"])
        where = f"grid.extra_cells: {cell['hardware']}/{cell['variant']}/img{cell['image_size']}_p{cell['patch_size']}"
        if cell["hardware"] not in profiles:
            raise UserError(f"{where}: no hardware profile {cell['hardware']!r} ({', '.join(profiles)})")
        if cell["variant"] not in variants:
            raise UserError(f"{where}: no variant {cell['variant']!r} in grid.variants ({', '.join(variants)})")
        if cell["image_size"] not in image_sizes:
            raise UserError(f"{where}: image size {cell['image_size']} is not in grid.image_sizes, so it has no cache")
        if cell["image_size"] % cell["patch_size"]:
            raise UserError(f"{where}: patch size {cell['patch_size']} does not divide {cell['image_size']}")
        if key not in result:
            result.append(key)
    return result


def missing_cells(image_sizes, patch_sizes) -> list[str]:
    return [f"img{size}_p{patch}" for size in sorted(image_sizes) for patch in sorted(patch_sizes) if size % patch]


def check_hardware(chosen, profiles: dict) -> None:
    unknown = [name for name in chosen if name not in profiles]
    if unknown:
        raise UserError(f"grid.hardware names {', '.join(unknown)}, not among the hardware profiles "
                        f"({', '.join(profiles)})")


def cell_settings(*, hardware: str, profile: dict, variant: str, variant_spec: dict, image_size: int,
                  patch_size: int, train: dict, cache_root: str, local_scratch: str | None) -> dict:
    """One cell's resolved settings (mammoscale.settings.Settings keys), from the parts that concern it."""
    gpus = profile.get("gpus_per_node", 0)
    settings = {
        **train,
        "hardware": hardware,
        "variant": variant,
        "model": variant_spec["model"],
        "attention": variant_spec["attention"],
        "image_size": image_size,
        "patch_size": patch_size,
        "micro_batch": profile["micro_batch"],
        "backend": BACKEND_OF_LAUNCHER[profile["launcher"]],
        "device": "cuda" if gpus else "cpu",
        "peak_tflops": profile.get("peak_tflops"),
        "cache_root": cache_root,
        "local_scratch": local_scratch,
    }
    for key in ("precision", "data_on_device", "device"):
        if key in profile:
            settings[key] = profile[key]
    return settings


def role(attention: str) -> str:
    """``flash`` for a flash kernel (x-transformers' switch, HF's flash_attention_2), else ``baseline``."""
    return "flash" if attention in FLASH_ATTENTIONS else "baseline"


def choose_baseline(variants: dict, requested: str | None) -> str | None:
    """The claims' baseline: ``requested``, else the study's (HF ViT, eager attention) if in the grid,
    else the first non-flash variant; None without one."""
    if requested:
        if requested not in variants:
            raise UserError(f"figures.baseline is {requested!r}, not one of grid.variants ({', '.join(variants)})")
        return requested
    baselines = [name for name, spec in variants.items() if role(spec["attention"]) == "baseline"]
    study = [name for name in baselines if variants[name] == {"model": "hf", "attention": "eager"}]
    return (study or baselines or [None])[0]


def ranks(profile: dict) -> int:
    return profile["nodes"] * max(1, profile.get("gpus_per_node", 0))


def launch_command(profile: dict, cell_file: Path | str, out_dir: Path | str, env=os.environ) -> list[str]:
    """The command that runs one cell with the profile's launcher, inside the job's allocation.

    - ``none``: one process.
    - ``torchrun``: one node: ``torchrun --standalone``; several: ``srun``, one task per GPU,
      ranks from SLURM's environment (torchrun's rendezvous adds nothing inside an allocation).
    - ``horovod``: ``horovodrun -np ranks``, over the allocation's hosts; Gloo on CPU-only profiles.
    """
    target = ["-m", "mammoscale.train", "--cell", str(cell_file), "--out", str(out_dir)]
    launcher, nodes = profile["launcher"], profile["nodes"]
    per_node = max(1, profile.get("gpus_per_node", 0))
    if launcher == "none":
        if ranks(profile) > 1:
            raise UserError(f"launcher none runs one process, but the profile asks for {ranks(profile)} ranks; "
                            "use torchrun or horovod")
        return [sys.executable, *target]
    if launcher == "torchrun":
        if nodes == 1:
            return [_tool("torchrun"), "--standalone", f"--nproc-per-node={per_node}", *target]
        return ["srun", f"--ntasks={nodes * per_node}", f"--ntasks-per-node={per_node}", sys.executable, *target]
    if nodes == 1:
        hosts = ["localhost"]
    elif "SLURM_JOB_NODELIST" in env:
        from mammoscale.distributed import hostnames

        hosts = hostnames(env["SLURM_JOB_NODELIST"])
    else:
        raise UserError(f"launcher horovod over {nodes} nodes runs inside a SLURM allocation (SLURM_JOB_NODELIST)")
    command = [_tool("horovodrun"), "-np", str(nodes * per_node), "-H", ",".join(f"{h}:{per_node}" for h in hosts)]
    if not profile.get("gpus_per_node"):
        command.append("--gloo")
    return [*command, sys.executable, *target]


def _tool(name: str) -> str:
    """A console script beside this interpreter (the venv's torchrun), else whatever PATH finds."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def run_job(cell: dict, launch: dict, out_dir: Path | str) -> dict:
    """Run one cell as a workflow job: write ``cell.yaml``, launch, and fail the job if the cell failed.

    A checkpoint left in ``out_dir`` is resumed only when it is an unfinished run of these very
    settings (a requeued job); one of other settings, or of a finished run, means the workflow
    asked for this cell anew (a changed config, ``--forcerun``), so it is removed first.
    """
    try:
        from mammoscale import checkpoint, train
    except ModuleNotFoundError as exc:
        raise UserError(f"training needs {exc.name}, which this environment lacks: install the train extra "
                        "(pip install -e '.[train]'; make run does) or run with --software-deployment-method "
                        "conda (envs/train.yaml)") from exc
    from mammoscale.settings import Settings

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_dict(cell)
    _drop_stale_checkpoint(out_dir, settings, checkpoint)
    (out_dir / FAILED_RECORD).unlink(missing_ok=True)
    cell_file = out_dir / "cell.yaml"
    cell_file.write_text(yaml.safe_dump(cell, sort_keys=False))
    if launch["launcher"] == "none" and ranks(launch) == 1:
        result = train.run_cell(cell, out_dir)
    else:
        command = launch_command(launch, cell_file, out_dir)
        log.info("launching: %s", " ".join(command))
        code = subprocess.run(command).returncode
        metrics_file = out_dir / "metrics.json"
        if not metrics_file.is_file():
            raise UserError(f"the cell's launcher exited {code} without writing {metrics_file}; see {out_dir}/train.log")
        result = json.loads(metrics_file.read_text())
    if result["status"] == "failed":
        # Snakemake deletes a failed job's outputs: keep the record where the tables can find it
        os.replace(out_dir / "metrics.json", out_dir / FAILED_RECORD)
        raise UserError(f"cell {out_dir} failed: {result['message']} (record kept in {out_dir / FAILED_RECORD})")
    return result


def _drop_stale_checkpoint(out_dir: Path, settings, checkpoint) -> None:
    path = out_dir / checkpoint.NAME
    if not path.is_file():
        return
    try:
        state = checkpoint.load(out_dir, checkpoint.fingerprint(settings.training_identity()))
        stale = state["epoch"] >= settings.epochs
        reason = "of a finished run"
    except checkpoint.CheckpointError as exc:
        stale, reason = True, str(exc)
    if stale:
        log.warning("removing %s: %s", path, reason)
        path.unlink()
