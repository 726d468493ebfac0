# Stage 1 (canonical views per shard), their summary, stage 2 (tiles per shard and size), indexes, contact sheets.


rule cache_views:
    input:
        csv=get_data,
        breasts=files.BREASTS,
    output:
        npy=cache_path(files.VIEWS_SHARD),
        csv=cache_path(files.VIEWS_INDEX),
        images=cache_path(files.VIEWS_IMAGES),
    log:
        log_of("cache_views/shard{shard}"),
    benchmark:
        benchmark_of("cache_views/shard{shard}")
    conda:
        "../envs/mammoscale.yaml"
    threads: 4
    resources:
        mem_mb=grow_with_attempt(2000),
    params:
        sources=get_shard_sources,
        canonical_size=STUDY.canonical_size,
        preprocess=config["preprocess"],
        decode=config["decode"],
    script:
        "../workflow/scripts/cache_views.py"


rule preprocess_summary:
    input:
        images=get_views(files.VIEWS_IMAGES),
        excluded=files.EXCLUDED,
    output:
        errors=files.DECODE_ERRORS,
        summary=files.PREPROCESS_SUMMARY,
    log:
        log_of("preprocess_summary"),
    benchmark:
        benchmark_of("preprocess_summary")
    conda:
        "../envs/mammoscale.yaml"
    script:
        "../workflow/scripts/preprocess_summary.py"


rule cache_tiles:
    input:
        npy=cache_path(files.VIEWS_SHARD),
        csv=cache_path(files.VIEWS_INDEX),
    output:
        npy=cache_path(files.TILES_SHARD),
        csv=cache_path(files.TILES_INDEX),
    log:
        log_of(files.TILES_JOB),
    benchmark:
        benchmark_of(files.TILES_JOB)
    conda:
        "../envs/mammoscale.yaml"
    resources:
        mem_mb=grow_with_attempt(2000),
    params:
        resample=config["preprocess"]["resample"],
    script:
        "../workflow/scripts/cache_tiles.py"


rule cache_index:
    input:
        arrays=get_tiles(files.TILES_SHARD),
        tables=get_tiles(files.TILES_INDEX),
        summary=files.PREPROCESS_SUMMARY,
        errors=files.DECODE_ERRORS,
        breasts=files.BREASTS,
    output:
        index=cache_path(files.TILE_INDEX),
        check=cache_path(files.TILE_INDEX_CHECK),
    log:
        log_of(f"cache_index/{files.SIZE_LABEL}"),
    benchmark:
        benchmark_of(f"cache_index/{files.SIZE_LABEL}")
    conda:
        "../envs/mammoscale.yaml"
    params:
        max_failure_fraction=config["cache"]["max_failure_fraction"],
    script:
        "../workflow/scripts/cache_index.py"


rule contact_sheet:
    input:
        index=cache_path(files.TILE_INDEX),
    output:
        report(
            files.CONTACT_SHEET,
            caption="../workflow/report/contact_sheet.rst",
            category="Data QC",
        ),
    log:
        log_of(f"contact_sheet/{files.SIZE_LABEL}"),
    benchmark:
        benchmark_of(f"contact_sheet/{files.SIZE_LABEL}")
    conda:
        "../envs/mammoscale.yaml"
    params:
        cache_root=get_cache_root,
        tiles=config["qc"]["contact_sheet_tiles"],
        seed=config["manifest"]["seed"],
    script:
        "../workflow/scripts/contact_sheet.py"
