# mammoscale: how far vision transformers scale on full-resolution mammograms.
# A table of contents: the rules live in rules/, the logic in the mammoscale package.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/plan.smk"
include: "rules/dataset.smk"
include: "rules/preprocess.smk"
include: "rules/train.smk"
include: "rules/profile.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output,
