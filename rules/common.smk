# Configuration, validated before any job runs, and the input functions of every rule.
import sys

from snakemake.utils import validate

from mammoscale import captions, code_version, grid
from mammoscale.config import coerce_scalars


config.update(coerce_scalars(config))
validate(config, schema="../workflow/schemas/config.schema.yaml")


wildcard_constraints:
    shard=r"\d{4}",
    size=r"\d+",
    patch=r"\d+",
    hardware=r"[A-Za-z0-9_-]+",
    variant=r"[A-Za-z0-9_-]+",
    figure="|".join(captions.FIGURES),


IMAGE_SIZES = sorted(config["grid"]["image_sizes"])
PATCH_SIZES = sorted(config["grid"]["patch_sizes"])
VARIANTS = config["grid"]["variants"]
HARDWARE = config["hardware"]
grid.check_hardware(config["grid"]["hardware"], HARDWARE)
CELLS = grid.with_extra_cells(
    grid.cells(IMAGE_SIZES, PATCH_SIZES, VARIANTS, config["grid"]["hardware"]),
    config["grid"]["extra_cells"],
    image_sizes=IMAGE_SIZES,
    variants=VARIANTS,
    profiles=HARDWARE,
)
HARDWARE_USED = list(dict.fromkeys(hw for hw, _, _, _ in CELLS))  # grid.hardware, then extra cells' profiles
if not CELLS:
    raise ValueError(
        f"the grid has no cell: no patch size of {PATCH_SIZES} divides an image size of {IMAGE_SIZES}"
    )
if grid.missing_cells(IMAGE_SIZES, PATCH_SIZES):
    print(f"note: no cell for {', '.join(grid.missing_cells(IMAGE_SIZES, PATCH_SIZES))}: the patch size does "
          "not divide the image size", file=sys.stderr)
RUNS_ROOT = "results/runs"
RUN = f"{RUNS_ROOT}/{{hardware}}/{{variant}}/img{{size}}_p{{patch}}"
FIGURE_FORMAT = config["figures"]["vector_format"]
POST_CELL_CODE = code_version.digest()  # tables, figures and report redo when their code changes
SHARDS = [f"{k:04d}" for k in range(config["cache"]["shards"])]
CACHE = config["cache"]["root"].rstrip("/")


def get_data_root():
    """The RSNA-layout directory: generated under results/ for synthetic data, the user's for rsna."""
    return config["data"]["root"]


def get_train_csv():
    return f"{get_data_root()}/train.csv"


def is_synthetic():
    return config["data"]["source"] == "synthetic"


def get_canonical_size():
    """Size of the stored views: cache.canonical_size, or the largest image size of the grid."""
    size = config["cache"]["canonical_size"] or IMAGE_SIZES[-1]
    if size < IMAGE_SIZES[-1]:
        raise ValueError(
            f"cache.canonical_size ({size}) is smaller than the largest grid.image_sizes ({IMAGE_SIZES[-1]}): "
            "raise it or set it to null"
        )
    return size


def get_view_shards(kind):
    """Every stage-1 shard's file of one kind: npy, csv or images.csv."""
    return expand(f"{CACHE}/views/shard{{shard}}.{kind}", shard=SHARDS)


def get_tile_shards(wildcards):
    return expand(f"{CACHE}/img{wildcards.size}/shard{{shard}}.{{kind}}", shard=SHARDS, kind=("npy", "csv"))


def get_cache_output():
    return [
        "results/manifest/breasts.csv",
        "results/qc/decode_errors.csv",
        *expand(f"{CACHE}/img{{size}}/index.csv", size=IMAGE_SIZES),
        *expand("results/qc/contact_sheet_img{size}.png", size=IMAGE_SIZES),
    ]


def get_run_outputs():
    """Every configured cell's metrics.json (patch sizes that do not divide an image size make no cell)."""
    return [f"results/runs/{hw}/{variant}/img{size}_p{patch}/metrics.json" for hw, variant, size, patch in CELLS]


def get_profile(wildcards):
    if wildcards.hardware not in HARDWARE:
        raise ValueError(f"no hardware profile {wildcards.hardware!r}; profiles: {', '.join(HARDWARE)}")
    return HARDWARE[wildcards.hardware]


def get_cell(wildcards):
    """The cell's own settings, and nothing else: a config change reruns only the cells it concerns."""
    if wildcards.variant not in VARIANTS:
        raise ValueError(f"no variant {wildcards.variant!r} in grid.variants ({', '.join(VARIANTS)})")
    return grid.cell_settings(
        hardware=wildcards.hardware,
        profile=get_profile(wildcards),
        variant=wildcards.variant,
        variant_spec=VARIANTS[wildcards.variant],
        image_size=int(wildcards.size),
        patch_size=int(wildcards.patch),
        train=config["train"],
        cache_root=CACHE,
        local_scratch=config["cache"]["local_scratch"],
    )


def get_launch(wildcards):
    profile = get_profile(wildcards)
    return {key: profile.get(key, 0) for key in ("launcher", "nodes", "gpus_per_node")}


def get_resource(key, default):
    """A SLURM resource from the cell's hardware profile (snakemake-executor-plugin-slurm's names)."""
    return lambda wildcards: get_profile(wildcards).get(key) or default


def get_selected_hardware():
    """The profiles of every cell's hardware (the figures' labels and memory limits), in grid order."""
    return {name: HARDWARE[name] for name in HARDWARE_USED}


def get_reference():
    reference = dict(config["figures"]["reference"])
    reference["hardware"] = reference["hardware"] or config["grid"]["hardware"][0]
    if reference["variant"] not in VARIANTS:
        raise ValueError(f"figures.reference.variant {reference['variant']!r} is not in grid.variants ({', '.join(VARIANTS)})")
    if reference["hardware"] not in HARDWARE_USED:
        raise ValueError(
            f"figures.reference.hardware {reference['hardware']!r} runs no cell (hardware of the grid: {', '.join(HARDWARE_USED)})"
        )
    return reference


def get_baseline():
    return grid.choose_baseline(VARIANTS, config["figures"]["baseline"])


def get_run_config():
    """What the report says was run: data, grid, the chosen hardware profiles, training, config files."""
    return {
        "data": config["data"],
        "grid": config["grid"],
        "hardware": get_selected_hardware(),
        "train": config["train"],
        "configfiles": [str(path) for path in workflow.config_settings.configfiles],
    }


def get_invocation():
    """The command line that reruns a target under this config ({profile} is filled in per cell)."""
    return "snakemake {profile}" + "".join(f" --configfile {path}" for path in get_run_config()["configfiles"])


def get_pipeline_inputs(wildcards):
    """Stage-1 shard records and benchmarks, and stage-2 shards and benchmarks per image size."""
    return {
        "images": get_view_shards("images.csv"),
        "views_benchmarks": expand("results/benchmarks/cache_views/shard{shard}.tsv", shard=SHARDS),
        "tiles": expand(f"{CACHE}/img{{size}}/shard{{shard}}.csv", size=IMAGE_SIZES, shard=SHARDS),
        "tiles_benchmarks": expand(
            "results/benchmarks/cache_tiles/img{size}_shard{shard}.tsv", size=IMAGE_SIZES, shard=SHARDS
        ),
    }


def get_figure_inputs(wildcards):
    inputs = {"runs": "results/tables/runs.csv", "speedups": "results/tables/speedups.csv"}
    if wildcards.figure == "data_pipeline":
        inputs["pipeline"] = "results/tables/pipeline.csv"
    return inputs


def get_figure_category(wildcards):
    return captions.CATEGORY[wildcards.figure]


def get_figure_caption(wildcards):
    return captions.CAPTIONS[wildcards.figure]


def get_contact_sheets():
    return {size: f"results/qc/contact_sheet_img{size}.png" for size in IMAGE_SIZES}


def get_report_inputs(wildcards):
    return {
        "runs": "results/tables/runs.csv",
        "speedups": "results/tables/speedups.csv",
        "figures": expand("results/figures/{figure}.png", figure=captions.FIGURES),
        "contact_sheets": list(get_contact_sheets().values()),
        "counts": "results/manifest/counts.json",
        "preprocess": "results/qc/preprocess_summary.json",
    }


def get_final_output():
    return [
        *get_cache_output(),
        *get_run_outputs(),
        *expand("results/figures/{figure}.{ext}", figure=captions.FIGURES, ext=("png", FIGURE_FORMAT)),
        "results/report/report.html",
    ]
