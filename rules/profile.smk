# Where a cell's time goes: a few steps of any cell, with its own settings, under torch's profiler (docs/profiling.md).


localrules:
    profile_figure,


rule profile_cell:
    input:
        index=cache_path(files.TILE_INDEX),
    output:
        trace=f"{files.PROFILE}/{files.PROFILE_TRACE}",
        operators=f"{files.PROFILE}/{files.PROFILE_OPERATORS}",
        breakdown=f"{files.PROFILE}/{files.PROFILE_BREAKDOWN}",
    log:
        log_of(f"profile/{files.CELL}"),
    benchmark:
        benchmark_of(f"profile/{files.CELL}")
    conda:
        "../envs/train.yaml"
    threads: get_threads
    resources:
        mem_mb=get_cell_mem_mb,
        runtime=get_profile_runtime,
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
        cell=get_profile_cell,
        launch=get_launch,
    script:
        "../workflow/scripts/profile_cell.py"


rule profile_figure:
    input:
        f"{files.PROFILE}/{files.PROFILE_BREAKDOWN}",
    output:
        png=files.partial(f"{files.PROFILE}/{files.PROFILE_FIGURE}", ext="png"),
        vector=files.partial(f"{files.PROFILE}/{files.PROFILE_FIGURE}", ext=FIGURE_FORMAT),
    log:
        log_of(f"profile/{files.CELL}.figure"),
    benchmark:
        benchmark_of(f"profile/{files.CELL}.figure")
    conda:
        "../envs/mammoscale.yaml"
    params:
        dpi=config["figures"]["dpi"],
    script:
        "../workflow/scripts/profile_figure.py"


rule profile_reference:
    input:
        get_profile_outputs(STUDY.reference),
