# One training rule: a grid cell (hardware x variant x image size x patch size) -> its metrics.json.


rule train_cell:
    input:
        index=f"{CACHE}/img{{size}}/index.csv",
    output:
        metrics=f"{RUN}/metrics.json",
    params:
        cell=get_cell,
        launch=get_launch,
    threads: get_resource("cpus_per_task", 1)
    resources:
        mem_mb=get_resource("mem_mb", 4000),
        runtime=get_resource("runtime_min", 60),
        nodes=get_resource("nodes", 1),
        tasks=lambda wildcards: get_profile(wildcards)["nodes"],
        gpu=get_resource("gpus_per_node", 0),
        gpu_model=get_resource("gpu_model", ""),
        slurm_partition=get_resource("partition", ""),
        slurm_account=get_resource("account", ""),
        constraint=get_resource("constraint", ""),
    log:
        "results/logs/train/{hardware}/{variant}/img{size}_p{patch}.log",
    benchmark:
        "results/benchmarks/train/{hardware}/{variant}/img{size}_p{patch}.tsv"
    conda:
        "../envs/train.yaml"
    script:
        "../workflow/scripts/train_cell.py"


rule runs:
    input:
        get_run_outputs(),
