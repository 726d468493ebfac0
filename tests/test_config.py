"""Typing back nested --config values that Snakemake delivers as strings."""

import pytest

from mammoscale.config import ConfigError, coerce_scalars, defaults, load, reference, schema, with_defaults

from conftest import REPO


def test_numbers_booleans_and_null_get_their_types_back():
    given = {
        "grid": {"image_sizes": ["64", "96"]},
        "cache": {"max_failure_fraction": "0.0", "canonical_size": "null"},
        "preprocess": {"roi": {"mask_outside": "false", "threshold": "otsu"}},
    }
    assert coerce_scalars(given) == {
        "grid": {"image_sizes": [64, 96]},
        "cache": {"max_failure_fraction": 0.0, "canonical_size": None},
        "preprocess": {"roi": {"mask_outside": False, "threshold": "otsu"}},
    }


def test_other_strings_stay_strings():
    for text in ("results/data", "/data/rsna", "a: b", "[1, 2]", "{x: 1}", "[1, 2", "2023-01-01", "otsu", "1e3"):
        assert coerce_scalars(text) == text
    assert coerce_scalars({"root": "/data/rsna", "ids": [1, "x"]}) == {"root": "/data/rsna", "ids": [1, "x"]}


def leaves(node: dict, where: str = ""):
    """Every setting of the schema: (dotted key, its schema node)."""
    for key, child in node.get("properties", {}).items():
        name = f"{where}.{key}" if where else key
        if "properties" in child and child.get("type") == "object" and "default" not in child:
            yield from leaves(child, name)
        else:
            yield name, child


def test_every_setting_has_a_description_and_a_default_or_is_required():
    """The schema owns every key's meaning and default (docs/configuration.md is made from it)."""
    settings = dict(leaves(schema()))
    profile = schema()["properties"]["hardware"]["additionalProperties"]
    assert len(settings) > 40
    assert [name for name, node in settings.items() if not node.get("description")] == []
    without_default = sorted(name for name, node in settings.items() if "default" not in node)
    assert without_default == ["grid.hardware", "hardware"]  # the study's machine: config/config.yaml names it
    assert [key for key, node in profile["properties"].items() if not node.get("description")] == []


def test_defaults_fill_what_a_config_leaves_out_profiles_included():
    filled = with_defaults(
        {
            "train": {"epochs": 3},
            "hardware": {"x": {"launcher": "none", "nodes": 1, "gpus_per_node": 0, "micro_batch": 1}},
        }
    )
    assert filled["train"]["epochs"] == 3 and filled["train"]["lr"] == defaults()["train"]["lr"]
    assert filled["hardware"]["x"]["mem_mb"] == 4000 and filled["hardware"]["x"]["partition"] is None
    assert "precision" not in filled["hardware"]["x"]  # no default: train.precision applies
    assert defaults() == with_defaults({}) and defaults() is not defaults()


def test_a_bad_config_is_one_line_naming_the_key():
    good = {
        "grid": {"hardware": ["a"]},
        "hardware": {"a": {"launcher": "none", "nodes": 1, "gpus_per_node": 0, "micro_batch": 1}},
    }
    load(good)
    with pytest.raises(ConfigError, match=r"^config: unknown key\(s\) 'epoch' \(did you mean 'epochs'\?\) in train"):
        load({**good, "train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"^config: cache.shards: 0 is less than the minimum of 1$"):
        load({**good, "cache": {"shards": "0"}})  # typed back from --config's string first
    with pytest.raises(ConfigError, match="'hardware' is a required property"):
        load({"grid": {"hardware": ["a"]}})


def test_a_renamed_key_says_what_to_write_instead():
    profile = {"launcher": "torchrun", "nodes": 1, "gpus_per_node": 8, "micro_batch": 64, "device_memory_gb": 80}
    with pytest.raises(ConfigError, match=r"^config: hardware.a.device_memory_gb was renamed device_memory_gib: the"):
        load({"grid": {"hardware": ["a"]}, "hardware": {"a": profile}})


def test_the_configuration_reference_is_generated_from_the_schema():
    """docs/configuration.md is tools/config-docs' output: regenerate it after changing the schema."""
    assert (REPO / "docs" / "configuration.md").read_text() == reference()
    assert "| `train.full_mode_at` | `[{image_size: 384, patch_size: 32}]` |" in reference()
    assert "| `hardware.<name>.micro_batch` | required |" in reference()
