# The dataset: generated (synthetic) or the user's RSNA-layout directory, and its decode QC.


if is_synthetic():

    rule synthetic_data:
        output:
            csv=f"{get_data_root()}/train.csv",
            truth=f"{get_data_root()}/synthetic_truth.csv",
            images=directory(f"{get_data_root()}/train_images"),
        params:
            n_patients=config["synthetic"]["n_patients"],
            image_shape=config["synthetic"]["image_shape"],
            cancer_rate=config["synthetic"]["cancer_rate"],
            seed=config["synthetic"]["seed"],
        threads: 2
        log:
            "results/logs/synthetic_data.log",
        benchmark:
            "results/benchmarks/synthetic_data.tsv"
        conda:
            "../envs/mammoscale.yaml"
        script:
            "../workflow/scripts/synthetic_data.py"


rule decode_qc:
    input:
        csv=get_train_csv(),
    output:
        summary="results/qc/decode_summary.csv",
        counts="results/qc/decode_summary.json",
    params:
        max_pixels=config["decode"]["max_pixels"],
    threads: 2
    resources:
        mem_mb=4000,
    log:
        "results/logs/decode_qc.log",
    benchmark:
        "results/benchmarks/decode_qc.tsv"
    conda:
        "../envs/mammoscale.yaml"
    script:
        "../workflow/scripts/decode_qc.py"
