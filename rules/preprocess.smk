# Manifest, stage 1 (canonical views per shard), stage 2 (tiles per shard and size), indexes, QC.


rule manifest:
    input:
        csv=get_train_csv(),
    output:
        breasts="results/manifest/breasts.csv",
        excluded="results/manifest/excluded.csv",
        counts="results/manifest/counts.json",
    params:
        split=config["manifest"]["split"],
        seed=config["manifest"]["seed"],
        shards=config["cache"]["shards"],
    log:
        "results/logs/manifest.log",
    benchmark:
        "results/benchmarks/manifest.tsv"
    conda:
        "../envs/mammoscale.yaml"
    script:
        "../workflow/scripts/manifest.py"


rule cache_views:
    input:
        csv=get_train_csv(),
        breasts="results/manifest/breasts.csv",
    output:
        npy=f"{CACHE}/views/shard{{shard}}.npy",
        csv=f"{CACHE}/views/shard{{shard}}.csv",
        images=f"{CACHE}/views/shard{{shard}}.images.csv",
    params:
        canonical_size=get_canonical_size(),
        roi=config["preprocess"]["roi"],
        trust_pixels_for_flip=config["preprocess"]["trust_pixels_for_flip"],
        resample=config["preprocess"]["resample"],
        max_pixels=config["decode"]["max_pixels"],
    threads: 4
    resources:
        mem_mb=lambda wildcards, threads: 1500 * threads,
    log:
        "results/logs/cache_views/shard{shard}.log",
    benchmark:
        "results/benchmarks/cache_views/shard{shard}.tsv"
    conda:
        "../envs/mammoscale.yaml"
    script:
        "../workflow/scripts/cache_views.py"


rule preprocess_qc:
    input:
        images=get_view_shards("images.csv"),
    output:
        errors="results/qc/decode_errors.csv",
        summary="results/qc/preprocess_summary.json",
    log:
        "results/logs/preprocess_qc.log",
    benchmark:
        "results/benchmarks/preprocess_qc.tsv"
    conda:
        "../envs/mammoscale.yaml"
    script:
        "../workflow/scripts/preprocess_qc.py"


rule cache_tiles:
    input:
        npy=f"{CACHE}/views/shard{{shard}}.npy",
        csv=f"{CACHE}/views/shard{{shard}}.csv",
    output:
        npy=f"{CACHE}/img{{size}}/shard{{shard}}.npy",
        csv=f"{CACHE}/img{{size}}/shard{{shard}}.csv",
    params:
        resample=config["preprocess"]["resample"],
    resources:
        mem_mb=2000,
    log:
        "results/logs/cache_tiles/img{size}_shard{shard}.log",
    benchmark:
        "results/benchmarks/cache_tiles/img{size}_shard{shard}.tsv"
    conda:
        "../envs/mammoscale.yaml"
    script:
        "../workflow/scripts/cache_tiles.py"


rule cache_index:
    input:
        shards=get_tile_shards,
        summary="results/qc/preprocess_summary.json",
        errors="results/qc/decode_errors.csv",
    output:
        index=f"{CACHE}/img{{size}}/index.csv",
    params:
        max_failure_fraction=config["cache"]["max_failure_fraction"],
    log:
        "results/logs/cache_index/img{size}.log",
    benchmark:
        "results/benchmarks/cache_index/img{size}.tsv"
    conda:
        "../envs/mammoscale.yaml"
    script:
        "../workflow/scripts/cache_index.py"


rule contact_sheet:
    input:
        index=f"{CACHE}/img{{size}}/index.csv",
    output:
        report(
            "results/qc/contact_sheet_img{size}.png",
            caption="../workflow/report/contact_sheet.rst",
            category="Data QC",
        ),
    params:
        tiles=config["qc"]["contact_sheet_tiles"],
        seed=config["manifest"]["seed"],
    log:
        "results/logs/contact_sheet/img{size}.log",
    benchmark:
        "results/benchmarks/contact_sheet/img{size}.tsv"
    conda:
        "../envs/mammoscale.yaml"
    script:
        "../workflow/scripts/contact_sheet.py"


rule cache:
    input:
        get_cache_output(),
    default_target: False
