"""Snakemake adapter: rule study_report -> mammoscale.report.page.build (results/report/report.html)."""

from mammoscale.logs import configure
from mammoscale.report.page import Context, build

configure(snakemake.log[0])
given, params = snakemake.input, snakemake.params
build(
    snakemake.output[0],
    runs_csv=given.runs,
    speedups_csv=given.speedups,
    quality_csv=given.quality,
    figure_files=dict(zip(params.figures, given.figures, strict=True)),
    contact_sheets=params.contact_sheets,
    manifest_counts=given.counts,
    preprocess_summary=given.preprocess,
    context=Context(**params.context),
    plan_csv=given.plan,
    scaling_csv=given.scaling,
    findings_csv=given.findings,
    profile={
        "figure": given.profile_figure,
        "operators": given.profile_operators,
        "cell": params.reference_cell,
        "trace": params.profile_trace,
    },
)
