# Configuration, validated before any job runs, and the input functions of every rule.
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../workflow/schemas/config.schema.yaml")


def get_data_root():
    """The RSNA-layout directory: generated under results/ for synthetic data, the user's for rsna."""
    return config["data"]["root"]


def get_train_csv():
    return f"{get_data_root()}/train.csv"


def is_synthetic():
    return config["data"]["source"] == "synthetic"


def get_final_output():
    return [
        "results/qc/decode_summary.csv",
        "results/qc/decode_summary.json",
    ]
