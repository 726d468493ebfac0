# The dataset: generated (synthetic) or the user's RSNA-layout directory; its manifest; its decode audit.


if is_synthetic():

    rule synthetic_data:
        output:
            csv=get_train_csv(),
            truth=f"{get_data_root()}/{files.SYNTHETIC_TRUTH}",
            images=directory(f"{get_data_root()}/{files.IMAGES_DIR}"),
        log:
            log_of("synthetic_data"),
        benchmark:
            benchmark_of("synthetic_data")
        conda:
            "../envs/mammoscale.yaml"
        threads: 2
        params:
            n_patients=config["synthetic"]["n_patients"],
            image_shape=config["synthetic"]["image_shape"],
            cancer_rate=config["synthetic"]["cancer_rate"],
            seed=config["synthetic"]["seed"],
        script:
            "../workflow/scripts/synthetic_data.py"


rule manifest:
    input:
        csv=get_data,
    output:
        breasts=files.BREASTS,
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
        "../workflow/scripts/manifest.py"


rule decode_audit:
    input:
        csv=get_data,
    output:
        audit=files.DECODE_AUDIT,
        counts=files.DECODE_AUDIT_COUNTS,
    log:
        log_of("decode_audit"),
    benchmark:
        benchmark_of("decode_audit")
    conda:
        "../envs/mammoscale.yaml"
    threads: 2
    resources:
        mem_mb=grow_with_attempt(2000),
    params:
        sources=get_all_sources,
        max_pixels=config["decode"]["max_pixels"],
    script:
        "../workflow/scripts/decode_audit.py"
