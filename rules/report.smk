# After the cells: the tables, the figures and the standalone report (and a snapshot while cells still run).
# All light (seconds): on a cluster they run where snakemake runs instead of waiting in the queue.


localrules:
    aggregate,
    pipeline_table,
    scaling_table,
    figure,
    study_report,
    snapshot,


rule aggregate:
    input:
        get_run_outputs(),
        get_seed_outputs(),
    output:
        runs=report(files.RUNS_CSV, caption="../workflow/report/runs.rst", category="Performance"),
        speedups=files.SPEEDUPS_CSV,
        quality=files.QUALITY_CSV,
        findings=files.FINDINGS_CSV,
    log:
        log_of("aggregate"),
    benchmark:
        benchmark_of("aggregate")
    conda:
        "../envs/mammoscale.yaml"
    params:
        code=REPORT_CODE,
        cells=STUDY.cells,
        variants=STUDY.variants,
        runs_root=get_runs_root,
        seeds=config["train"]["seeds"],
    script:
        "../workflow/scripts/aggregate.py"


rule pipeline_table:
    input:
        get_pipeline_inputs,
    output:
        files.PIPELINE_CSV,
    log:
        log_of("pipeline_table"),
    benchmark:
        benchmark_of("pipeline_table")
    conda:
        "../envs/mammoscale.yaml"
    params:
        code=REPORT_CODE,
        jobs=get_pipeline_jobs(),
    script:
        "../workflow/scripts/pipeline_table.py"


rule scaling_table:
    input:
        runs=files.RUNS_CSV,
    output:
        report(files.SCALING_CSV, caption="../workflow/report/scaling.rst", category="Performance"),
    log:
        log_of("scaling_table"),
    benchmark:
        benchmark_of("scaling_table")
    conda:
        "../envs/mammoscale.yaml"
    params:
        code=REPORT_CODE,
        profiles=STUDY.selected_profiles,
        epochs=config["train"]["epochs"],
        train_examples=get_train_examples(),
    script:
        "../workflow/scripts/scaling_table.py"


rule figure:
    input:
        unpack(get_figure_inputs),
    output:
        png=report(
            files.partial(files.FIGURE, ext="png"),
            caption="../workflow/report/figure.rst",
            category=get_figure_category,
            labels={"figure": "{figure}"},
        ),
        vector=files.partial(files.FIGURE, ext=FIGURE_FORMAT),
    log:
        log_of("figures/{figure}"),
    benchmark:
        benchmark_of("figures/{figure}")
    conda:
        "../envs/mammoscale.yaml"
    params:
        code=REPORT_CODE,
        caption=get_figure_caption,
        reference=STUDY.reference,
        variants=list(STUDY.variants),
        profiles=STUDY.selected_profiles,
        dpi=config["figures"]["dpi"],
    script:
        "../workflow/scripts/figure.py"


rule study_report:
    input:
        unpack(get_report_inputs),
    output:
        report(files.REPORT, caption="../workflow/report/report.rst", category="Report"),
    log:
        log_of("study_report"),
    benchmark:
        benchmark_of("study_report")
    conda:
        "../envs/mammoscale.yaml"
    params:
        code=REPORT_CODE,
        figures=STUDY_FIGURES,
        contact_sheets=get_contact_sheets(),
        context=get_report_context,
        reference_cell=get_reference_profile()["cell"],
        profile_trace=get_reference_profile()["trace"],
    script:
        "../workflow/scripts/study_report.py"


rule snapshot:
    output:
        f"{files.SNAPSHOT}/report.html",
    log:
        log_of("snapshot"),
    benchmark:
        benchmark_of("snapshot")
    conda:
        "../envs/mammoscale.yaml"
    params:
        cells=STUDY.cells,
        variants=STUDY.variants,
        runs_root=files.RUNS,
        pipeline=get_pipeline_jobs(),
        contact_sheets=get_contact_sheets(),
        counts=files.MANIFEST_COUNTS,
        preprocess=files.PREPROCESS_SUMMARY,
        context=get_report_context,
        dpi=config["figures"]["dpi"],
        vector_format=FIGURE_FORMAT,
        profile=get_reference_profile(),
    script:
        "../workflow/scripts/snapshot.py"
