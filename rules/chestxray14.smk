# The ChestX-ray14 layout (data.source chestxray14 or synthetic-chestxray14): the data, its manifest, the tile cache.
# The Snakefile includes this file or the RSNA layout's (rules/dataset.smk, rules/preprocess.smk). Rules keep the
# RSNA layout's names for the same roles, so the commands a cache error prints (mammoscale.cache.REBUILD_*) rebuild
# either layout's cache.
from mammoscale.synthetic import chestxray14 as synthetic_chestxray14

if is_synthetic():

    rule synthetic_data:
        output:
            [directory(f"{get_data_root()}/{part}") for part in synthetic_chestxray14.part_directories()],
            **get_chestxray14_files(),
            truth=f"{get_data_root()}/{files.SYNTHETIC_TRUTH}",
        log:
            log_of("synthetic_data"),
        benchmark:
            benchmark_of("synthetic_data")
        conda:
            "../envs/mammoscale.yaml"
        params:
            n_patients=config["synthetic_chestxray14"]["n_patients"],
            images_per_patient=config["synthetic_chestxray14"]["images_per_patient"],
            image_size=config["synthetic_chestxray14"]["image_size"],
            seed=config["synthetic_chestxray14"]["seed"],
            test_fraction=config["manifest"]["split"]["test"],
        script:
            "../workflow/scripts/chestxray14_synthetic.py"


rule manifest:
    input:
        unpack(get_chestxray14_data),
    output:
        images=files.CHEST_IMAGES,
        excluded=files.EXCLUDED,
        counts=files.MANIFEST_COUNTS,
    log:
        log_of("manifest"),
    benchmark:
        benchmark_of("manifest")
    conda:
        "../envs/mammoscale.yaml"
    params:
        absent=get_absent_sources,
        split=config["manifest"]["split"],
        seed=config["manifest"]["seed"],
        shards=config["cache"]["shards"],
    script:
        "../workflow/scripts/chestxray14_manifest.py"


rule cache_tiles:
    input:
        images=files.CHEST_IMAGES,
    output:
        npy=[cache_path(files.TILES_SHARD, image_size=size) for size in STUDY.image_sizes],
        csv=[cache_path(files.TILES_INDEX, image_size=size) for size in STUDY.image_sizes],
        decoded=cache_path(files.CHEST_DECODED),
    log:
        log_of(files.CHEST_TILES_JOB),
    benchmark:
        benchmark_of(files.CHEST_TILES_JOB)
    conda:
        "../envs/mammoscale.yaml"
    resources:
        mem_mb=grow_with_attempt(1000),
    params:
        data_root=get_data_root(),
        sources=get_shard_sources,
        image_sizes=STUDY.image_sizes,
        resample=config["preprocess"]["resample"],
        max_pixels=config["decode"]["max_pixels"],
    script:
        "../workflow/scripts/chestxray14_tiles.py"


rule preprocess_summary:
    input:
        decoded=[cache_path(files.CHEST_DECODED, shard=shard) for shard in STUDY.shards],
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
        "../workflow/scripts/chestxray14_summary.py"


rule cache_index:
    input:
        arrays=get_tiles(files.TILES_SHARD),
        tables=get_tiles(files.TILES_INDEX),
        summary=files.PREPROCESS_SUMMARY,
        errors=files.DECODE_ERRORS,
        images=files.CHEST_IMAGES,
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
        "../workflow/scripts/chestxray14_index.py"


rule contact_sheet:
    input:
        index=cache_path(files.TILE_INDEX),
    output:
        report(
            files.CONTACT_SHEET,
            caption="../workflow/report/chestxray14_contact_sheet.rst",
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
        "../workflow/scripts/chestxray14_contact_sheet.py"
