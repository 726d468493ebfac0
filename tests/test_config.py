"""Typing back nested --config values that Snakemake delivers as strings."""

from mammoscale.config import coerce_scalars


def test_numbers_booleans_and_null_get_their_types_back():
    given = {"grid": {"image_sizes": ["64", "96"]}, "cache": {"max_failure_fraction": "0.0", "canonical_size": "null"},
             "preprocess": {"roi": {"mask_outside": "false", "threshold": "otsu"}}}
    assert coerce_scalars(given) == {
        "grid": {"image_sizes": [64, 96]}, "cache": {"max_failure_fraction": 0.0, "canonical_size": None},
        "preprocess": {"roi": {"mask_outside": False, "threshold": "otsu"}}}


def test_other_strings_stay_strings():
    for text in ("results/data", "/data/rsna", "a: b", "[1, 2]", "{x: 1}", "[1, 2", "2023-01-01", "otsu", "1e3"):
        assert coerce_scalars(text) == text
    assert coerce_scalars({"root": "/data/rsna", "ids": [1, "x"]}) == {"root": "/data/rsna", "ids": [1, "x"]}
