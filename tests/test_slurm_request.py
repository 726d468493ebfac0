"""What each cell's job asks SLURM for, as snakemake-executor-plugin-slurm writes the sbatch line.

The jobs and their resources come from a real dry run of the workflow (the study's
``config/paper.yaml`` and the test profile); the sbatch line from the plugin's own
``get_submit_command`` and ``set_gres_string``. A line is refused when it asks a node for more CPUs
than the profile has, multiplies CPUs by GPUs (the plugin's ``--ntasks-per-gpu``), or has SLURM give the
cell no warning ahead of its time limit.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

from conftest import REPO
from test_workflow import copy_workflow, snakemake


class Resources(dict):
    """A job's resources as the plugin reads them: ``.get(key)`` and ``.key``."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def planned_cells(result) -> list[SimpleNamespace]:
    """The train_cell jobs of a dry run: their wildcards, threads and resources."""
    jobs, current = [], None
    for line in result.stdout.splitlines():
        stripped = line.strip()
        if stripped.startswith("rule train_cell:"):
            current = SimpleNamespace(name="train_cell", threads=1, resources=Resources(), wildcards={})
            jobs.append(current)
        elif stripped.startswith(("rule ", "localrule ")):
            current = None
        elif current is not None and stripped.startswith("wildcards:"):
            pairs = stripped.removeprefix("wildcards:").strip().split(", ")
            current.wildcards = dict(item.split("=", 1) for item in pairs)
        elif current is not None and stripped.startswith("threads:"):
            current.threads = int(stripped.split()[1])
        elif current is not None and stripped.startswith("resources:"):
            for item in re.split(r", (?=\w+=)", stripped.removeprefix("resources:").strip()):
                key, _, value = item.partition("=")
                current.resources[key] = int(value) if value.isdigit() else value
    return jobs


def sbatch_line(job) -> str:
    params = {
        "run_uuid": "uuid",
        "slurm_logfile": "/tmp/x.log",
        "comment_str": "rule_train_cell",
        "account": "",
        "partition": "",
        "workdir": "/work",
    }
    return get_submit_command(job, params) + set_gres_string(job)


def option(line: str, name: str) -> int | None:
    found = re.search(rf"--{name}[= ](\S+)", line)
    return int(found.group(1).split(":")[-1]) if found else None


def study_cells(tmp_path, *configfiles, config=()):
    workdir = copy_workflow(tmp_path / "wf")
    data = tmp_path / "rsna"
    data.mkdir()
    pd.DataFrame(
        {"site_id": [1], "patient_id": [1], "image_id": [2], "laterality": ["L"], "view": ["CC"], "cancer": [0]}
    ).to_csv(data / "train.csv", index=False)
    args = [
        "-n",
        "--cores",
        "1024",
        "runs",
        *[a for f in configfiles for a in ("--configfile", f)],
        "--config",
        f"data={{source: rsna, root: {data}}}",
        *config,
    ]
    return planned_cells(snakemake(workdir, *args))


def profiles(*configfiles) -> dict:
    merged = {}
    for name in ("config/config.yaml", *configfiles):
        merged.update(yaml.safe_load((REPO / name).read_text()).get("hardware", {}))
    return merged


@pytest.mark.parametrize(
    "configfiles, config",
    [
        # 2048 px would take the 4-GPU servers past their time limit (99 h): the plan refuses it
        (
            ("config/paper.yaml",),
            ("grid={hardware: [xe9680, xe8545, r750xa, h100, xe9680x2], image_sizes: [384, 512, 1024]}",),
        ),
        (
            ("config/test.yaml",),
            (
                "grid={hardware: [local-cpu, local-cpu-b, slurm-gpu, slurm-xe8545, slurm-2node-ddp, "
                "slurm-2node-horovod]}",
                "train={global_batch: 4}",
            ),
        ),
    ],
    ids=["paper", "test"],
)
def test_a_task_per_rank_shares_the_profiles_cpus_and_gpus_and_is_warned_ahead_of_its_limit(
    tmp_path, configfiles, config
):
    known = profiles(*configfiles)
    cells = study_cells(tmp_path, *configfiles, config=config)
    seen = set()
    for job in cells:
        profile = {"gpus_per_node": 0, "cpus_per_task": 1, **known[job.wildcards["hardware"]]}
        line = sbatch_line(job)
        seen.add(job.wildcards["hardware"])
        assert "--ntasks-per-gpu" not in line, line
        assert option(line, "nodes") == profile["nodes"], line
        # one task per rank, each node's CPUs shared by its ranks; the job's command runs in the batch script (mpi),
        # where the ranks' srun is the allocation's one step: SLURM's warning signal reaches the ranks alone
        per_node = max(1, profile["gpus_per_node"])
        assert job.resources["mpi"] == ("srun" if profile["nodes"] * per_node > 1 else ""), job.resources
        assert option(line, "ntasks") == profile["nodes"] * per_node, line
        assert option(line, "ntasks-per-node") == per_node, line
        assert option(line, "cpus-per-task") == profile["cpus_per_task"] // per_node, line
        assert option(line, "gpus") is None, line
        assert option(line, "gpus-per-node") == (profile["gpus_per_node"] or None), line
        warning = re.search(r"--signal=USR1@(\d+)", line)
        assert warning and 0 < int(warning.group(1)) <= 60 * profile.get("runtime_min", 60) / 4, line
        assert option(line, "mem") == profile.get("mem_mb", 4000), line
    assert seen == set(config[0].split("[")[1].split("]")[0].split(", "))
