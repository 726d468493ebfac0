# The study the config describes, checked whole before any job runs, and the input functions of every rule.
# Paths are mammoscale.files' templates; the logic is mammoscale.plan's (tested without Snakemake).
import functools
import os
import sys

from mammoscale import files
from mammoscale.dataset import chestxray14, sources
from mammoscale.errors import UserError
from mammoscale.plan import sizing
from mammoscale.plan.digest import digest
from mammoscale.plan.grid import profile_settings
from mammoscale.plan.launch import job_request
from mammoscale.plan.study import Study
from mammoscale.report.captions import CAPTIONS, CATEGORY, FIGURES, drawn

try:
    STUDY = Study.from_config(config, need_cells=False)  # the cache needs none: rule all asks for them
except UserError as error:  # a user's mistake: one line, no traceback
    sys.exit(f"error: {error}")
config.update(STUDY.config)  # every default filled in, validated


wildcard_constraints:
    shard=r"\d{4}",
    seed=r"\d+",
    image_size=r"\d+",
    patch=files.PATCH_PATTERN,
    hardware=r"[A-Za-z0-9_-]+",
    variant=r"[A-Za-z0-9_-]+",
    figure="|".join(FIGURES),


if STUDY.missing_note:
    print(f"note: {STUDY.missing_note}", file=sys.stderr)

CACHE = STUDY.cache_root
RUN = files.RUN
FIGURE_FORMAT = config["figures"]["vector_format"]
STUDY_FIGURES = drawn(STUDY.variants)  # the figures whose subject the grid has (a CNN-only grid: no Figures 3, 4)
REPORT_CODE = digest()  # tables, figures and report redo when the code that makes them changes


def cache_path(template, **fields):
    """A file of the cache: ``template`` under cache.root, ``fields`` filled, the others left wildcards."""
    return f"{CACHE}/{files.partial(template, **fields)}"


def log_of(name):
    return files.log_file(name)


def benchmark_of(name):
    return files.benchmark_file(name)


def get_data_root():
    """The RSNA-layout directory: generated under results/ for synthetic data, the user's for rsna."""
    return config["data"]["root"]


def get_train_csv():
    return f"{get_data_root()}/{files.TRAIN_CSV}"


def get_data(wildcards):
    """train.csv, for a job that reads the data: an RSNA data.root must be there (one line before any job, asked
    only of the targets that read the data: ``snakemake plan`` plans a cluster's study on a laptop without it)."""
    try:
        STUDY.check_data()
    except UserError as error:
        sys.exit(f"error: {error}")
    return get_train_csv()


def get_chestxray14_files():
    """A ChestX-ray14 data.root's CSV and official lists (the PNGs are found beside them)."""
    names = {"entries": files.CHEST_ENTRIES, "train_val": files.CHEST_TRAIN_VAL, "test": files.CHEST_TEST}
    return {key: f"{get_data_root()}/{name}" for key, name in names.items()}


def get_chestxray14_data(wildcards):
    """The CSV and lists, for the job that reads them: a ChestX-ray14 data.root must hold them (get_data's check)."""
    try:
        STUDY.check_data()
    except UserError as error:
        sys.exit(f"error: {error}")
    return get_chestxray14_files()


def is_synthetic():
    return STUDY.source.synthetic


def is_chestxray14():
    return STUDY.source.layout == "chestxray14"


def get_manifest():
    """The manifest's table: breasts.csv (RSNA) or images.csv (ChestX-ray14)."""
    return files.CHEST_IMAGES if is_chestxray14() else files.BREASTS


@functools.cache
def get_sources():
    """Each shard's fingerprint of the files it reads, and of the absent ones (mammoscale.dataset.sources, or
    .chestxray14's): a replaced file reruns its shard. None for a synthetic set, which this workflow writes itself."""
    if is_chestxray14():
        if is_synthetic() or not os.path.isfile(get_chestxray14_files()["entries"]):
            return None
        return chestxray14.fingerprints(get_data_root(), config["cache"]["shards"])
    if is_synthetic() or not os.path.isfile(get_train_csv()):
        return None
    return sources.fingerprints(get_data_root(), config["cache"]["shards"])


def get_shard_sources(wildcards):
    return get_sources().shards[wildcards.shard] if get_sources() else ""


def get_absent_sources(wildcards):
    return get_sources().absent if get_sources() else ""


def get_all_sources(wildcards):
    return " ".join(get_sources().shards.values()) if get_sources() else ""


def get_views(template):
    """Every stage-1 shard's file of one kind (files.VIEWS_SHARD, VIEWS_INDEX or VIEWS_IMAGES)."""
    return [cache_path(template, shard=shard) for shard in STUDY.shards]


def get_tiles(template):
    """Every stage-2 shard's file of one kind (files.TILES_SHARD or TILES_INDEX) at the job's image size."""
    return lambda wildcards: [
        cache_path(template, image_size=wildcards.image_size, shard=shard) for shard in STUDY.shards
    ]


def get_contact_sheets():
    return {size: files.fill(files.CONTACT_SHEET, image_size=size) for size in STUDY.image_sizes}


def get_cache_output():
    return [
        get_manifest(),
        files.DECODE_ERRORS,
        *[cache_path(files.TILE_INDEX, image_size=size) for size in STUDY.image_sizes],
        *get_contact_sheets().values(),
    ]


def get_run_outputs():
    """Every configured cell's metrics.json (patch sizes that do not divide an image size make no cell)."""
    return [f"{cell.run_dir()}/{files.METRICS}" for cell in STUDY.cells]


def get_seed_outputs():
    """The records of every configured quality cell's extra seeds (train.seeds)."""
    return [f"{run}/{files.METRICS}" for run in STUDY.seed_runs]


def get_seed_cell(wildcards):
    """A quality cell's settings, trained with another seed."""
    return {**get_cell(wildcards), "seed": int(wildcards.seed)}


def get_plan_rows():
    """plan.csv's rows: every configured cell's plan (mammoscale.plan.sizing)."""
    return [plan.row() for plan in STUDY.plans.values()]


def get_predicted_oom_outputs():
    """The records the plan writes: the cells predicted out of memory and not submitted."""
    return [f"{cell.run_dir()}/{files.METRICS}" for cell in STUDY.predicted_oom_cells]


def get_predicted_oom_records():
    return {
        f"{cell.run_dir()}/{files.METRICS}": {"row": STUDY.plans[cell].row(), "settings": STUDY.cell_settings(cell)}
        for cell in STUDY.predicted_oom_cells
    }


def cell_of(wildcards):
    return STUDY.cell(wildcards.hardware, wildcards.variant, wildcards.image_size, files.patch_size_of(wildcards.patch))


def get_cell(wildcards):
    """The cell's own settings, and nothing else: a config change reruns only the cells it concerns."""
    return STUDY.cell_settings(cell_of(wildcards))


def get_profile_cell(wildcards):
    """The cell's settings as its profile runs them (profile.steps after profile.warmup_steps)."""
    profile = config["profile"]
    return profile_settings(get_cell(wildcards), steps=profile["steps"], warmup_steps=profile["warmup_steps"])


def get_profile_runtime(wildcards):
    """A profile job's time limit: profile.runtime_min and its steps' predicted time (mammoscale.plan.sizing)."""
    return STUDY.plan_of(cell_of(wildcards)).profile_runtime_min(config["profile"])


def get_launch(wildcards):
    return STUDY.launch(cell_of(wildcards).hardware)


def get_threads(wildcards):
    """The CPUs of a cell's job: its profile's cpus_per_task."""
    return STUDY.profiles[cell_of(wildcards).hardware]["cpus_per_task"]


def get_request(key):
    """One resource of what a cell's job asks SLURM for (mammoscale.plan.launch.job_request), signalled ahead of its
    time limit as its plan says."""

    def request(wildcards):
        cell = cell_of(wildcards)
        return job_request(STUDY.profiles[cell.hardware], STUDY.plan_of(cell).signal_before_limit_s)[key]

    return request


def get_cell_mem_mb(wildcards, attempt):
    """The profile's memory, doubled on each retry."""
    return STUDY.profiles[cell_of(wildcards).hardware]["mem_mb"] * attempt


def grow_with_attempt(mem_mb):
    """``mem_mb`` (per thread where the rule has threads), doubled on each retry."""
    return lambda wildcards, threads, attempt: mem_mb * threads * attempt


def get_cache_root(wildcards, input):
    """cache.root, as the job's input names it."""
    return str(files.root_of(input.index, files.TILE_INDEX, image_size=wildcards.image_size))


def get_runs_root(wildcards, input):
    """results/runs, as the job's input (the first cell's metrics.json) names it."""
    return str(files.root_of(input[0], f"{files.CELL}/{files.METRICS}", **STUDY.cells[0]._asdict()))


def get_invocation():
    """The command line that reruns a target under this config ({profile} is filled in per cell)."""
    return "snakemake {profile}" + "".join(f" --configfile {path}" for path in workflow.config_settings.configfiles)


def get_report_context(wildcards):
    """What the report says of the study beyond its tables (mammoscale.report.page.Context)."""
    return {
        "run_config": STUDY.run_config(workflow.config_settings.configfiles),
        "reference": STUDY.reference,
        "baseline": STUDY.baseline,
        "tolerance": config["figures"]["tolerance"],
        "invocation": get_invocation(),
        "train_examples": get_train_examples(),
        "task": STUDY.task.name,
    }


def get_pipeline_jobs():
    """Stage-1 jobs (shard, image table, benchmark) and stage-2 jobs (size, shard, tile table, benchmark); a
    ChestX-ray14 cache has one stage, each shard's job decoding and tiling at every size."""
    if is_chestxray14():
        return {
            "stage1": [
                (
                    shard,
                    cache_path(files.CHEST_DECODED, shard=shard),
                    benchmark_of(files.fill(files.CHEST_TILES_JOB, shard=shard)),
                )
                for shard in STUDY.shards
            ],
            "stage2": [],
        }
    return {
        "stage1": [
            (shard, cache_path(files.VIEWS_IMAGES, shard=shard), benchmark_of(f"cache_views/shard{shard}"))
            for shard in STUDY.shards
        ],
        "stage2": [
            (
                size,
                shard,
                cache_path(files.TILES_INDEX, image_size=size, shard=shard),
                benchmark_of(files.fill(files.TILES_JOB, image_size=size, shard=shard)),
            )
            for size in STUDY.image_sizes
            for shard in STUDY.shards
        ],
    }


def get_pipeline_inputs(wildcards):
    return [path for jobs in get_pipeline_jobs().values() for job in jobs for path in job[-2:]]


def get_figure_inputs(wildcards):
    inputs = {"runs": files.RUNS_CSV, "speedups": files.SPEEDUPS_CSV}
    if wildcards.figure == "data_pipeline":
        inputs["pipeline"] = files.PIPELINE_CSV
    return inputs


def get_figure_category(wildcards):
    return CATEGORY[wildcards.figure]


def get_figure_caption(wildcards):
    return CAPTIONS[wildcards.figure]


def get_report_inputs(wildcards):
    return {
        "runs": files.RUNS_CSV,
        "speedups": files.SPEEDUPS_CSV,
        "quality": files.QUALITY_CSV,
        "findings": files.FINDINGS_CSV,
        "figures": [files.fill(files.FIGURE, figure=name, ext="png") for name in STUDY_FIGURES],
        "contact_sheets": list(get_contact_sheets().values()),
        "counts": files.MANIFEST_COUNTS,
        "preprocess": files.PREPROCESS_SUMMARY,
        "plan": files.PLAN_CSV,
        "scaling": files.SCALING_CSV,
        "profile_figure": get_reference_profile()["figure"],
        "profile_operators": get_reference_profile()["operators"],
    }


def get_train_examples():
    """The data source's training examples an epoch, as the plan counts them: the scaling table's time to train."""
    return sizing.nominal_train_breasts(config)


def get_reference_profile():
    """The reference cell's profile files the report shows (its breakdown figure, its operators) and its trace."""
    profile = files.fill(files.PROFILE, **STUDY.reference)
    return {
        "cell": files.fill(files.CELL, **STUDY.reference),
        "figure": f"{profile}/{files.fill(files.PROFILE_FIGURE, ext='png')}",
        "operators": f"{profile}/{files.PROFILE_OPERATORS}",
        "trace": f"{profile}/{files.PROFILE_TRACE}",
    }


def get_profile_outputs(cell):
    """A cell's profile (rules/profile.smk): its trace, operators and breakdown figure; ``cell``: its four wildcards
    (``STUDY.reference`` for the rule profile_reference)."""
    profile = files.fill(files.PROFILE, **cell)
    names = (files.PROFILE_TRACE, files.PROFILE_OPERATORS, files.fill(files.PROFILE_FIGURE, ext="png"))
    return [f"{profile}/{name}" for name in names]


def get_final_output(wildcards=None):
    if not STUDY.cells:  # called only when "all" is asked for; the cache and the dataset need no cell
        sys.exit(f"error: {STUDY.no_cell()}")
    return [
        files.PLAN_CSV,
        *get_cache_output(),
        *get_run_outputs(),
        *get_seed_outputs(),
        *[files.fill(files.FIGURE, figure=name, ext=ext) for name in STUDY_FIGURES for ext in ("png", FIGURE_FORMAT)],
        files.REPORT,
    ]
