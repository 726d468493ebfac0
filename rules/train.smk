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
    threads: get_profile_value("cpus_per_task")
    resources:
        mem_mb=get_cell_mem_mb,
        runtime=get_profile_value("runtime_min"),
        nodes=get_profile_value("nodes"),
        tasks=get_profile_value("nodes"),
        gpu=lambda wildcards: STUDY.profiles[cell_of(wildcards).hardware]["gpus_per_node"],
        gpu_model=get_profile_value("gpu_model"),
        slurm_partition=get_profile_value("partition"),
        slurm_account=get_profile_value("account"),
        constraint=get_profile_value("constraint"),
    params:
        cell=get_cell,
        launch=get_launch,
    script:
        "../workflow/scripts/train_cell.py"


rule runs:
    input:
        get_run_outputs(),
