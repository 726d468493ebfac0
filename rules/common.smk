# Configuration, validated before any job runs, and the input functions of every rule.
from snakemake.utils import validate

from mammoscale.config import coerce_scalars


config.update(coerce_scalars(config))
validate(config, schema="../workflow/schemas/config.schema.yaml")


wildcard_constraints:
    shard=r"\d{4}",
    size=r"\d+",


IMAGE_SIZES = sorted(config["grid"]["image_sizes"])
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


def get_final_output():
    return get_cache_output()
