# One training rule: a grid cell (hardware x variant x image size x patch size) -> its metrics.json.


rule train_cell:
    input:
        index=cache_path(files.TILE_INDEX),
    output:
        metrics=f"{RUN}/{files.METRICS}",
    log:
        log_of(f"train/{files.CELL}"),
    benchmark:
        benchmark_of(f"train/{files.CELL}")
    conda:
        "../envs/train.yaml"
    threads: get_threads
    resources:
        mem_mb=get_cell_mem_mb,
        runtime=get_request("runtime"),
        nodes=get_request("nodes"),
        tasks=get_request("tasks"),
        gpu=get_request("gpu"),
        gpu_model=get_request("gpu_model"),
        slurm_extra=get_request("slurm_extra"),
        slurm_partition=get_request("slurm_partition"),
        slurm_account=get_request("slurm_account"),
        constraint=get_request("constraint"),
        mpi=get_request("mpi"),
        cpus_per_task=get_request("cpus_per_task"),
    params:
        cell=get_cell,
        launch=get_launch,
    script:
        "../workflow/scripts/train_cell.py"


# A quality cell trained again with another seed (train.seeds): the same job, its record under the cell's directory.
use rule train_cell as train_seed with:
    output:
        metrics=f"{files.SEED_RUN}/{files.METRICS}",
    log:
        log_of(f"train/{files.CELL}/seed{{seed}}"),
    benchmark:
        benchmark_of(f"train/{files.CELL}/seed{{seed}}")
    params:
        cell=get_seed_cell,
        launch=get_launch,


rule runs:
    input:
        get_run_outputs(),
        get_seed_outputs(),
