"""The on-disk contracts' owner: templates filled both ways, tables written in order and read with their types."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

from mammoscale import config, files, records
from mammoscale.plan import families, vit


def test_a_template_fills_as_a_rule_would_and_back():
    path = files.under("/scratch/cache", files.TILES_SHARD, image_size=512, shard=7)
    assert path == Path("/scratch/cache/img512/shard0007.npy")
    assert files.root_of(path, files.TILES_SHARD, image_size=512, shard=7) == Path("/scratch/cache")
    assert files.root_of("img512/index.csv", files.TILE_INDEX, image_size=512) == Path(".")
    with pytest.raises(ValueError, match="not a img"):
        files.root_of(path, files.TILES_SHARD, image_size=384, shard=7)


def test_a_partial_template_keeps_the_other_wildcards():
    assert files.partial(files.TILES_SHARD, shard=3) == "img{image_size}/shard0003.npy"
    assert files.partial(files.FIGURE, ext="png") == "results/figures/{figure}.png"
    assert files.partial(files.RUN) == files.RUN


def test_cells_and_shards_are_named_once():
    assert files.run_dir("xe9680", "flash", 512, 16) == Path("results/runs/xe9680/flash/img512_p16")
    assert files.shard_names(3) == ["0000", "0001", "0002"] and files.fill(files.SHARD, shard=12) == "shard0012"


def test_an_image_size_and_a_cell_are_labelled_by_one_template_each():
    assert files.size_label(512) == "img512" and files.cell_label(512, 16) == "img512_p16"
    assert files.cell_name("xe9680", "flash", 512, 16) == "xe9680/flash/img512_p16"
    assert files.CELL.endswith("/" + files.CELL_LABEL) and files.CELL_LABEL.startswith(files.SIZE_LABEL)
    assert files.fill(files.CONTACT_SHEET, image_size=384) == "results/qc/contact_sheet_img384.png"
    assert files.fill(files.TILES_JOB, image_size=384, shard=2) == "cache_tiles/img384_shard0002"


def test_the_metrics_schema_holds_the_owners_vocabularies():
    """The record's status and OOM basis are the names the code writes and compares; its kernel names are
    those of the ViT catalogue (:mod:`mammoscale.plan.vit`)."""
    properties = records.metrics_schema()["properties"]
    assert properties["status"]["enum"] == list(records.STATUSES)
    assert properties["oom_basis"]["enum"] == [*records.OOM_BASES, None]
    assert records.MISSING not in records.STATUSES and records.MISSING in records.RUN_STATUSES
    backend = properties["attention_backend"]
    assert backend["pattern"] == vit.backend_pattern()
    held = [*vit.FUSED_BACKENDS, vit.UNFUSED_BACKEND, vit.NO_BACKEND, "sdpa-math+sdpa-mem-efficient", None]
    for name in held:
        jsonschema.validate(name, backend)
    for name in ("materialised", "matmul-softmax+sdpa-flash", "sdpa-flash,sdpa-math", "sdpa-flash+", ""):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(name, backend)


def test_the_config_schema_offers_the_catalogues_families_attentions_and_sizes():
    variant = config.schema()["properties"]["grid"]["properties"]["variants"]["additionalProperties"]
    assert variant["properties"]["family"]["enum"] == list(families.FAMILIES)
    assert variant["properties"]["attention"]["enum"] == list(families.ATTENTIONS)
    sizes = [size for family in families.FAMILIES.values() for size in family.sizes]
    assert variant["properties"]["model_size"]["enum"] == list(dict.fromkeys(sizes))
    assert list(families.ATTENTIONS[:-1]) == [a for names in vit.ATTENTIONS.values() for a in names]


def test_a_cell_without_a_patch_size_is_named_by_its_image_size_alone():
    assert files.cell_name("h", "densenet", 224, None) == "h/densenet/img224"
    assert files.cell_name("h", "flash", 224, 16) == "h/flash/img224_p16"
    assert files.patch_size_of(files.patch_label(16)) == 16 and files.patch_size_of(files.patch_label(None)) is None
    assert files.partial(files.RUN, hardware="h", variant="v", image_size=64) == "results/runs/h/v/img64{patch}"
    assert re.fullmatch(files.PATCH_PATTERN, "") and re.fullmatch(files.PATCH_PATTERN, "_p8")
    assert not re.fullmatch(files.PATCH_PATTERN, "_p") and not re.fullmatch(files.PATCH_PATTERN, "p8")


@pytest.mark.parametrize("patient, image", [("1", "../x"), ("1/..", "2"), ("-1", "2"), ("", "2"), ("1", "²")])
def test_only_integer_ids_name_an_image(patient, image):
    assert files.image_path("/data", patient, image) is None
    assert files.image_path("/data", 10, 20) == Path("/data/train_images/10/20.dcm")


def test_a_table_is_written_in_its_order_and_read_with_its_types(tmp_path):
    rows = [
        {
            "split": "train",
            "breast_id": "0001_L",
            "patient_id": 1,
            "laterality": "L",
            "cc_image_id": 10,
            "mlo_image_id": 11,
            "label": 0,
            "site_id": "2",
            "machine_id": "49",
            "shard": 0,
            "extra": "dropped",
        }
    ]
    files.BREAST_TABLE.write(pd.DataFrame(rows), tmp_path / "breasts.csv")
    assert (tmp_path / "breasts.csv").read_text().splitlines()[0] == ",".join(files.BREAST_TABLE.columns)
    back = files.BREAST_TABLE.read(tmp_path / "breasts.csv")
    assert back["breast_id"][0] == "0001_L" and back["site_id"][0] == "2" and back["patient_id"].dtype == "int64"
    with pytest.raises(KeyError):
        files.BREAST_TABLE.write(pd.DataFrame([{"breast_id": "x"}]), tmp_path / "partial.csv")
    assert not (tmp_path / "partial.csv").exists()


def test_a_text_table_keeps_na_as_text(tmp_path):
    files.EXCLUDED_TABLE.write(
        files.EXCLUDED_TABLE.frame(
            [{"patient_id": "1", "laterality": "NA", "image_id": "", "view": "CC", "reason": "r", "detail": "d"}]
        ),
        tmp_path / "excluded.csv",
    )
    back = files.EXCLUDED_TABLE.read(tmp_path / "excluded.csv")
    assert back.loc[0, "laterality"] == "NA" and back.loc[0, "image_id"] == ""


def test_an_interrupted_write_leaves_nothing_under_the_name(tmp_path):
    target = tmp_path / "summary.json"
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("{half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    files.write_json({"a": 1}, target)
    assert files.read_json(target) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
