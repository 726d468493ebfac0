# Configuration, validated before any job runs, and the input functions of every rule.
import sys

from snakemake.utils import validate

from mammoscale import grid
from mammoscale.config import coerce_scalars


config.update(coerce_scalars(config))
validate(config, schema="../workflow/schemas/config.schema.yaml")


wildcard_constraints:
    shard=r"\d{4}",
    size=r"\d+",
    patch=r"\d+",
    hardware=r"[A-Za-z0-9_-]+",
    variant=r"[A-Za-z0-9_-]+",


IMAGE_SIZES = sorted(config["grid"]["image_sizes"])
PATCH_SIZES = sorted(config["grid"]["patch_sizes"])
VARIANTS = config["grid"]["variants"]
HARDWARE = config["hardware"]
grid.check_hardware(config["grid"]["hardware"], HARDWARE)
CELLS = grid.cells(IMAGE_SIZES, PATCH_SIZES, VARIANTS, config["grid"]["hardware"])
if grid.missing_cells(IMAGE_SIZES, PATCH_SIZES):
    print(f"note: no cell for {', '.join(grid.missing_cells(IMAGE_SIZES, PATCH_SIZES))}: the patch size does "
          "not divide the image size", file=sys.stderr)
RUN = "results/runs/{hardware}/{variant}/img{size}_p{patch}"
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


def get_final_output():
    return [*get_cache_output(), *get_run_outputs()]
