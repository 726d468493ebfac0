# The plan before the spend: each cell's micro-batch, predicted memory and cost (plan.csv). A cell
# predicted out of memory even at micro-batch 1 gets its record here, without a GPU, instead of a
# training job (unless plan.submit_predicted_oom). Light: runs where snakemake runs.


localrules:
    plan,


rule plan:
    output:
        table=files.PLAN_CSV,
        records=get_predicted_oom_outputs(),
    log:
        log_of("plan"),
    conda:
        "../envs/mammoscale.yaml"
    params:
        rows=get_plan_rows(),
        records=get_predicted_oom_records(),
    script:
        "../workflow/scripts/plan.py"


# a cell predicted out of memory: its record is the plan's, not a training job's
ruleorder: plan > train_cell
