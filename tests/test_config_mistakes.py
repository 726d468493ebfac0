"""Config mistakes found when the config is read, one line each, instead of inside a job or by Snakemake: split
fractions, the RSNA directory, the reference cell, numbers YAML 1.1 reads as strings, and the schema's patterns."""

from __future__ import annotations

import re

import pytest
import yaml

from mammoscale import config as configuration
from mammoscale import synthetic
from mammoscale.config import PATTERNS, ConfigError, load
from mammoscale.dataset.manifest import ManifestError, check_fractions
from mammoscale.errors import UserError
from mammoscale.plan.grid import Cell
from mammoscale.plan.study import Study

from conftest import REPO

EMBEDDED = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
PAPER_CONFIG = {**EMBEDDED, **PAPER, "hardware": {**EMBEDDED["hardware"], **PAPER["hardware"]}}


def merged(base: dict, **overrides) -> dict:
    """``base`` with each override merged one level deep (a section's other keys kept)."""
    raw = dict(base)
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


# (a) split fractions


@pytest.mark.parametrize(
    "split",
    [
        {"train": 0.7, "val": 0.2, "test": 0.15},
        {"train": 0.6, "val": 0.2, "test": 0.1},
        {"train": 0.7, "val": 0.15, "test": 0.15 + 2e-6},
        {"train": 0.7, "val": 0.15, "test": 0.15 + 5e-7},
        {"train": 0.7, "val": 0.15, "test": 0.15},  # 1.0000000000000002 in floating point
        {"train": 1, "val": 0, "test": 0},
    ],
)
def test_split_fractions_are_refused_when_planning_exactly_when_the_manifest_would_refuse_them(split):
    """One rule, the manifest's (its tolerance included), applied before its job."""
    try:
        check_fractions(split)
        manifest_refuses = False
    except ManifestError:
        manifest_refuses = True
    raw = merged(EMBEDDED, manifest={"split": split})
    if not manifest_refuses:
        Study.from_config(raw)
        return
    with pytest.raises(UserError) as refused:
        Study.from_config(raw)
    message = str(refused.value)
    assert message.startswith("manifest.split: train ") and "\n" not in message
    assert message.endswith(", not 1: change the fractions so that they sum to 1")


def test_a_split_message_names_each_fraction_and_their_sum():
    with pytest.raises(UserError, match=r"^manifest\.split: train 0\.7 \+ val 0\.2 \+ test 0\.15 = 1\.05, not 1: "):
        Study.from_config(merged(EMBEDDED, manifest={"split": {"train": 0.7, "val": 0.2, "test": 0.15}}))


# (b) the RSNA directory


def test_an_rsna_root_must_hold_train_csv_when_the_data_is_needed(tmp_path):
    missing = tmp_path / "nowhere" / "rsna"
    with pytest.raises(UserError) as refused:
        Study.from_config(merged(EMBEDDED, data={"source": "rsna", "root": str(missing)}), need_data=True)
    assert str(refused.value).startswith(f"data.root {missing} does not exist, so {missing}/train.csv cannot be read")
    assert str(refused.value).endswith("or data.source to synthetic")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"^{re.escape(str(empty))}/train.csv not found: data.root must be the RSNA"):
        Study.from_config(merged(EMBEDDED, data={"source": "rsna", "root": f"{empty}/"}), need_data=True)

    data = synthetic.generate(tmp_path / "my data" / "rsna", n_patients=4, image_shape=(128, 96), seed=1)
    study = Study.from_config(merged(EMBEDDED, data={"source": "rsna", "root": str(data)}), need_data=True)
    assert study.train_csv == f"{data}/train.csv"


def test_the_data_is_not_needed_to_plan_nor_when_it_is_generated(tmp_path):
    """`snakemake plan --configfile config/paper.yaml` answers on a laptop; synthetic data is made by the workflow."""
    assert PAPER["data"]["source"] == "rsna"
    Study.from_config(PAPER_CONFIG)
    with pytest.raises(UserError, match="does not exist"):
        Study.from_config(PAPER_CONFIG, need_data=True)
    Study.from_config(merged(EMBEDDED, data={"root": str(tmp_path / "not yet")}), need_data=True)


# (c) the reference cell


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            merged(EMBEDDED, grid={"image_sizes": [384]}),
            "figures.reference is local-cpu/flash/img512_p16, not a cell of the grid: image size 512 is not in "
            "grid.image_sizes (384); set figures.reference's image_size and patch_size to one of local-cpu/flash's "
            "cells: img384_p8, img384_p16, img384_p32",
        ),
        (
            merged(EMBEDDED, grid={"patch_sizes": [8, 32]}),
            "figures.reference is local-cpu/flash/img512_p16, not a cell of the grid: patch size 16 is not in "
            "grid.patch_sizes (8, 32); set figures.reference's image_size and patch_size to one of local-cpu/flash's "
            "cells: img384_p8, img384_p32, img512_p8, img512_p32",
        ),
        (
            merged(
                EMBEDDED,
                grid={"image_sizes": [200, 512], "patch_sizes": [8, 16]},
                figures={"reference": {"image_size": 200}},
            ),
            "figures.reference is local-cpu/flash/img200_p16, not a cell of the grid: patch size 16 does not divide "
            "image size 200; set figures.reference's image_size and patch_size to one of local-cpu/flash's cells: "
            "img200_p8, img512_p8, img512_p16",
        ),
        (
            merged(PAPER_CONFIG, figures={"reference": {"hardware": "xe8545", "image_size": 384}}),
            "figures.reference is xe8545/flash/img384_p16, not a cell of the grid: xe8545 is not in grid.hardware, "
            "and grid.extra_cells has no such cell; set figures.reference's image_size and patch_size to one of "
            "xe8545/flash's cells: img512_p16",
        ),
        (
            merged(PAPER_CONFIG, figures={"reference": {"hardware": "xe8545", "variant": "materialised"}}),
            "figures.reference is xe8545/materialised/img512_p16, not a cell of the grid: xe8545 is not in "
            "grid.hardware, and grid.extra_cells has no such cell; set figures.reference's variant, image_size and "
            "patch_size to one of xe8545's cells: flash/img512_p16",
        ),
    ],
    ids=["image-size", "patch-size", "not-dividing", "extra-cell-size", "extra-cell-variant"],
)
def test_a_reference_cell_outside_the_grid_is_refused_naming_it_and_the_grids_cells(raw, message):
    with pytest.raises(UserError) as refused:
        Study.from_config(raw)
    assert str(refused.value) == message


def test_the_shipped_references_are_cells_and_a_grid_without_cells_checks_none():
    test_profile = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    for raw in (
        EMBEDDED,
        PAPER_CONFIG,
        {**EMBEDDED, **test_profile, "hardware": {**EMBEDDED["hardware"], **test_profile["hardware"]}},
    ):
        study = Study.from_config(raw)
        assert Cell(**study.reference) in study.cells
    Study.from_config(merged(EMBEDDED, grid={"patch_sizes": [7]}), need_cells=False)  # the cache needs no cell


# (c') a CNN variant (DenseNet-121): no attention, no patch size

VITS = EMBEDDED.get("grid", {}).get("variants") or configuration.defaults()["grid"]["variants"]
DENSENET = {"family": "densenet"}


def with_cnn(cnn: dict = DENSENET, **overrides) -> dict:
    """The embedded study with its ViTs and a CNN variant ``densenet``; ``overrides`` merged as :func:`merged`."""
    grid = {"variants": {**VITS, "densenet": cnn}, **overrides.pop("grid", {})}
    return merged(EMBEDDED, grid=grid, **overrides)


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            with_cnn({"family": "densenet", "attention": "flash"}),
            "grid.variants.densenet: family densenet has no attention: leave attention out (not 'flash')",
        ),
        (
            merged(EMBEDDED, grid={"variants": {"flash": {"family": "xtransformers"}}}),
            "grid.variants.flash: family xtransformers needs an attention, one of flash, materialised, cudnn, "
            "mem_efficient",
        ),
        (
            merged(EMBEDDED, grid={"variants": {"flash": {"family": "hf", "attention": "none"}}}),
            "grid.variants.flash: family hf needs an attention, one of eager, sdpa, flash_attention_2 (not 'none')",
        ),
        (
            with_cnn({"family": "densenet", "model_size": "vit-base"}),
            "grid.variants.densenet: model_size 'vit-base' is not a densenet size (densenet-121)",
        ),
        (
            merged(
                EMBEDDED, grid={"variants": {"flash": {**VITS["flash"], "weights": {"path": "w", "sha256": "a" * 8}}}}
            ),
            "grid.variants.flash: weights (a pretrained file) are for the CNN family only, not xtransformers",
        ),
        (
            with_cnn(
                grid={
                    "extra_cells": [
                        {"hardware": "local-cpu", "variant": "densenet", "image_size": 384, "patch_size": 16}
                    ]
                }
            ),
            "grid.extra_cells: local-cpu/densenet/img384_p16: variant densenet (densenet) has no patch size: leave "
            "patch_size out (not 16)",
        ),
        (
            with_cnn(grid={"extra_cells": [{"hardware": "local-cpu", "variant": "flash", "image_size": 384}]}),
            "grid.extra_cells: local-cpu/flash/img384: variant flash (xtransformers) is a vision transformer: give its "
            "patch_size",
        ),
        (
            with_cnn(figures={"reference": {"variant": "densenet"}}),
            "figures.reference: variant densenet (densenet) has no patch size: set its patch_size: null (not 16)",
        ),
        (
            with_cnn(figures={"reference": {"patch_size": None}}),
            "figures.reference: variant flash (xtransformers) is a vision transformer: give its patch_size",
        ),
        (
            with_cnn(figures={"reference": {"variant": "densenet", "image_size": 256, "patch_size": None}}),
            "figures.reference is local-cpu/densenet/img256, not a cell of the grid: image size 256 is not in "
            "grid.image_sizes (384, 512); set figures.reference's image_size and patch_size to one of "
            "local-cpu/densenet's cells: img384, img512",
        ),
        (
            with_cnn(figures={"baseline": "densenet"}),
            "figures.baseline is 'densenet', a variant without attention (family densenet): the baseline of a "
            "speed-up has a materialised attention; choose one of materialised, or null",
        ),
        (
            with_cnn(grid={"image_sizes": [48, 384, 512]}),
            "cell local-cpu/densenet/img48: image size 48 is too small for densenet-121: its last dense block would be "
            "1x1 pixels, and its batch norms need more than one value a channel; use at least 61",
        ),
    ],
    ids=[
        "cnn-attention",
        "vit-no-attention",
        "vit-attention-none",
        "cnn-vit-size",
        "vit-weights",
        "cnn-extra-cell-patch",
        "vit-extra-cell-no-patch",
        "cnn-reference-patch",
        "vit-reference-no-patch",
        "cnn-reference-size",
        "cnn-baseline",
        "cnn-image-too-small",
    ],
)
def test_a_cnn_or_vit_variant_given_the_others_axes_is_refused_in_one_line(raw, message):
    with pytest.raises(UserError) as refused:
        Study.from_config(raw)
    assert str(refused.value) == message


# (d) numbers without a dot


def test_a_number_yaml_11_reads_as_a_string_is_a_number_where_the_schema_wants_one():
    text = """
    train: {lr: 1e-4, weight_decay: 5E-3, checkpoint_every_min: 1e+1}
    preprocess: {roi: {threshold: 8e-2}}
    hardware: {local-cpu: {peak_tflops: 3.12e2, device_memory_gib: 8e1}}
    synthetic: {cancer_rate: 25e-2}
    """
    given = yaml.safe_load(text)  # PyYAML: YAML 1.1, as Snakemake reads a config file
    assert given["train"]["lr"] == "1e-4" and given["preprocess"]["roi"]["threshold"] == "8e-2"
    given["hardware"]["local-cpu"] = {**EMBEDDED["hardware"]["local-cpu"], **given["hardware"]["local-cpu"]}
    config = load(merged(EMBEDDED, **given))
    assert config["train"]["lr"] == 1e-4 and config["train"]["weight_decay"] == 5e-3
    assert config["train"]["checkpoint_every_min"] == 10.0 and config["synthetic"]["cancer_rate"] == 0.25
    assert config["preprocess"]["roi"]["threshold"] == 0.08  # one of its alternatives is a number
    profile = config["hardware"]["local-cpu"]
    assert profile["peak_tflops"] == 312.0 and profile["device_memory_gib"] == 80.0
    assert all(type(value) is float for value in (config["train"]["lr"], profile["peak_tflops"]))


def test_only_numbers_become_numbers_and_only_where_the_schema_wants_one():
    assert configuration.coerce_yaml11({"train": {"lr": "-1e+2"}}) == {"train": {"lr": -100.0}}
    for text in ("1e", "e3", "1e-4x", "0x10", "1_0e3", ".inf", "nan", "1e-4 "):
        assert configuration.coerce_yaml11({"train": {"lr": text}}) == {"train": {"lr": text}}
    strings = {
        "data": {"root": "1e3"},  # a path
        "grid": {"variants": {"1e3": {"family": "hf", "attention": "eager"}}},
        "hardware": {"h": {"partition": "1e3", "gpu_model": "5E3"}},
    }
    assert configuration.coerce_yaml11(strings) == strings
    with pytest.raises(ConfigError, match=r"^config: train\.epochs: '1e3' is not of type 'integer'$"):
        load(merged(EMBEDDED, train={"epochs": "1e3"}))  # an integer is not guessed from an exponent
    with pytest.raises(ConfigError, match=r"^config: train\.lr: -100\.0 is less than or equal to the minimum of 0$"):
        load(merged(EMBEDDED, train={"lr": "-1e+2"}))


# (e) patterns, and paths with spaces


def patterns(node, where=""):
    """Every (place, pattern) of the schema."""
    if isinstance(node, dict):
        if "pattern" in node:
            yield where, node["pattern"]
        for key, child in node.items():
            yield from patterns(child, f"{where}.{key}" if where else key)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from patterns(child, f"{where}[{index}]")


def test_every_pattern_of_the_schema_has_a_sentence():
    found = dict(patterns(configuration.schema()))
    assert len(found) >= 10
    assert sorted({pattern for pattern in found.values() if pattern not in PATTERNS}) == []
    assert set(PATTERNS) == set(found.values())  # no sentence left for a pattern that is gone


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"hardware": {"my cpu": EMBEDDED["hardware"]["local-cpu"]}},
            "config: hardware: the name 'my cpu' is not allowed: use letters, digits, _ and - only",
        ),
        (
            {"grid": {"variants": {"flash/2": {"family": "hf", "attention": "sdpa"}}}},
            "config: grid.variants: the name 'flash/2' is not allowed: use letters, digits, _ and - only",
        ),
        ({"grid": {"hardware": ["local cpu"]}}, "config: grid.hardware.0: 'local cpu' is not allowed: use letters"),
        ({"figures": {"baseline": "hf eager"}}, "config: figures.baseline: 'hf eager' is not allowed: use letters"),
        (
            {"hardware": {"local-cpu": {**EMBEDDED["hardware"]["local-cpu"], "network_interface": "ib 0"}}},
            "config: hardware.local-cpu.network_interface: 'ib 0' is not allowed: write a network interface's name",
        ),
        ({"data": {"root": " /data/rsna"}}, "config: data.root: ' /data/rsna' is not allowed: write a path on one"),
        ({"cache": {"root": "cache\nroot"}}, "config: cache.root: 'cache\\nroot' is not allowed: write a path on one"),
    ],
    ids=["profile-name", "variant-name", "grid-hardware", "baseline", "interface", "data-root", "cache-root"],
)
def test_a_value_that_does_not_match_its_pattern_is_told_what_to_write_not_the_regex(overrides, message):
    with pytest.raises(ConfigError) as refused:
        load(merged(EMBEDDED, **overrides))
    said = str(refused.value)
    assert said.startswith(message) and "\n" not in said
    assert "does not match" not in said and "^" not in said and "$" not in said


def test_paths_with_spaces_are_accepted():
    config = load(merged(EMBEDDED, data={"root": "/my data/rsna set"}, cache={"root": "results/my cache"}))
    assert config["data"]["root"] == "/my data/rsna set" and config["cache"]["root"] == "results/my cache"


@pytest.mark.workflow
def test_a_dry_run_reads_a_config_file_with_1e_4_over_a_data_root_and_a_cache_with_spaces(tmp_path):
    from test_workflow import copy_workflow, planned_jobs, snakemake

    data = synthetic.generate(tmp_path / "my data" / "rsna", n_patients=4, image_shape=(128, 96), seed=1)
    workdir = copy_workflow(tmp_path / "work")
    (workdir / "mine.yaml").write_text(
        f"data: {{source: rsna, root: '{data}'}}\ncache: {{root: results/my cache}}\ntrain: {{lr: 1e-4}}\n"
    )
    result = snakemake(workdir, "-n", "all", "--configfile", "config/test.yaml", "mine.yaml")
    jobs = planned_jobs(result)
    assert jobs["manifest"] == 1 and jobs["train_cell"] > 0 and "synthetic_data" not in jobs
    assert "error:" not in result.stdout + result.stderr


def test_yes_and_no_yaml_11_reads_as_booleans_are_the_words_where_the_schema_wants_them():
    """``data_on_device: yes`` in a config file: PyYAML (YAML 1.1) reads ``yes`` as True."""
    for word in ("yes", "no"):
        read = yaml.safe_load(f"hardware:\n  local-cpu:\n    data_on_device: {word}\n")
        assert read["hardware"]["local-cpu"]["data_on_device"] is (word == "yes")  # what YAML 1.1 gives
        assert configuration.coerce_yaml11(read) == {"hardware": {"local-cpu": {"data_on_device": word}}}
    assert configuration.coerce_yaml11({"cache": {"local_scratch": True}}) == {"cache": {"local_scratch": True}}
