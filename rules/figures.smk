# After the cells: the tables, the figures and the standalone report (and a snapshot while cells still run).
# All light (seconds): on a cluster they run where snakemake runs instead of waiting in the queue.


localrules:
    aggregate,
    pipeline_table,
    figure,
    study_report,
    snapshot,


rule aggregate:
    input:
        get_run_outputs(),
    output:
        runs=report("results/tables/runs.csv", caption="../workflow/report/runs.rst", category="Performance"),
        speedups="results/tables/speedups.csv",
    params:
        code=POST_CELL_CODE,
        cells=CELLS,
        variants=VARIANTS,
    log:
        "results/logs/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate.tsv"
    conda:
        "../envs/mammoscale.yaml"
    script:
        "../workflow/scripts/aggregate.py"


rule pipeline_table:
    input:
        unpack(get_pipeline_inputs),
    output:
        "results/tables/pipeline.csv",
    params:
        code=POST_CELL_CODE,
        sizes=IMAGE_SIZES,
    log:
        "results/logs/pipeline_table.log",
    benchmark:
        "results/benchmarks/pipeline_table.tsv"
    conda:
        "../envs/mammoscale.yaml"
    script:
        "../workflow/scripts/pipeline_table.py"


rule figure:
    input:
        unpack(get_figure_inputs),
    output:
        png=report(
            "results/figures/{figure}.png",
            caption="../workflow/report/figure.rst",
            category=get_figure_category,
            labels={"figure": "{figure}"},
        ),
        vector=f"results/figures/{{figure}}.{FIGURE_FORMAT}",
    params:
        code=POST_CELL_CODE,
        caption=get_figure_caption,
        reference=get_reference(),
        variants=list(VARIANTS),
        profiles=get_selected_hardware(),
        dpi=config["figures"]["dpi"],
    log:
        "results/logs/figures/{figure}.log",
    benchmark:
        "results/benchmarks/figures/{figure}.tsv"
    conda:
        "../envs/mammoscale.yaml"
    script:
        "../workflow/scripts/figure.py"


rule study_report:
    input:
        unpack(get_report_inputs),
    output:
        report("results/report/report.html", caption="../workflow/report/report.rst", category="Report"),
    params:
        code=POST_CELL_CODE,
        run_config=get_run_config(),
        reference=get_reference(),
        baseline=get_baseline(),
        tolerance=config["figures"]["tolerance"],
        invocation=lambda wildcards: get_invocation(),
    log:
        "results/logs/study_report.log",
    benchmark:
        "results/benchmarks/study_report.tsv"
    conda:
        "../envs/mammoscale.yaml"
    script:
        "../workflow/scripts/study_report.py"


rule snapshot:
    output:
        "results/snapshot/report.html",
    params:
        cells=CELLS,
        variants=VARIANTS,
        runs_root=RUNS_ROOT,
        pipeline=get_pipeline_inputs(None),
        contact_sheets=get_contact_sheets(),
        counts="results/manifest/counts.json",
        preprocess="results/qc/preprocess_summary.json",
        run_config=get_run_config(),
        reference=get_reference(),
        baseline=get_baseline(),
        tolerance=config["figures"]["tolerance"],
        invocation=lambda wildcards: get_invocation(),
        dpi=config["figures"]["dpi"],
        vector_format=FIGURE_FORMAT,
    log:
        "results/logs/snapshot.log",
    benchmark:
        "results/benchmarks/snapshot.tsv"
    conda:
        "../envs/mammoscale.yaml"
    script:
        "../workflow/scripts/snapshot.py"
