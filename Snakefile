# mammoscale: how far vision transformers scale on full-resolution mammograms.
# A table of contents: the rules live in rules/, the logic in the mammoscale package.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/plan.smk"


if is_chestxray14():  # the data source's layout: NIH's PNGs, or RSNA's DICOM files

    include: "rules/chestxray14.smk"

else:

    include: "rules/dataset.smk"
    include: "rules/preprocess.smk"


include: "rules/train.smk"
include: "rules/profile.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output,


rule cache:
    default_target: False
    input:
        get_cache_output(),
