"""The metrics.json contract: its schema refuses what would break the tables; the write is atomic."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import torch

from mammoscale import records
from mammoscale.train import record as train_record

from conftest import REPO


@pytest.fixture(scope="module")
def record(train_cache, tmp_path_factory) -> dict:
    from mammoscale import train

    settings = {
        "cache_root": str(train_cache),
        "image_size": 64,
        "patch_size": 16,
        "loader_workers": 0,
        "checkpoint": False,
    }
    return train.run_cell(settings, tmp_path_factory.mktemp("cell"))


def test_the_workflow_schema_is_the_package_schema():
    assert json.loads((REPO / "workflow/schemas/metrics.schema.json").read_text()) == records.metrics_schema()


def test_every_field_of_the_design_contract_is_required():
    contract = [
        "status",
        "hardware",
        "variant",
        "model",
        "attention",
        "attention_backend",
        "image_size",
        "patch_size",
        "seq_len",
        "params",
        "epochs",
        "global_batch",
        "micro_batch",
        "grad_accum",
        "world_size",
        "throughput_img_s",
        "step_time_s",
        "epoch_times_s",
        "train_time_s",
        "peak_mem_bytes",
        "flops_per_img",
        "achieved_tflops",
        "mfu",
        "val_auc",
        "val_pf1",
        "loss_curve",
        "env",
        "config",
    ]
    assert set(contract) <= set(records.metrics_schema()["required"])


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.pop("throughput_img_s"),
        lambda r: r.update(status="crashed"),
        lambda r: r.update(surprise=1),
        lambda r: r.update(mfu=1.5),
        lambda r: r.update(val_auc="high"),
        lambda r: r.update(hardware="a100 x8"),
        lambda r: r["env"].pop("git_commit"),
    ],
)
def test_a_broken_record_is_refused(record, change):
    broken = copy.deepcopy(record)
    change(broken)
    with pytest.raises(jsonschema.ValidationError):
        records.validate_metrics(broken)


def test_write_validates_first_and_leaves_no_temporary_file(record, tmp_path):
    broken = {**record, "status": "crashed"}
    with pytest.raises(jsonschema.ValidationError):
        records.write_metrics(broken, tmp_path / "metrics.json")
    assert list(tmp_path.iterdir()) == []
    records.write_metrics(record, tmp_path / "deep" / "metrics.json")
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["metrics.json"]


def test_provenance(record, monkeypatch):
    env = record["env"]
    assert env["python"].startswith("3.11") and env["x_transformers"] and env["host"]
    assert len(env["git_commit"].split("+")[0]) == 40
    monkeypatch.setenv("MAMMOSCALE_GIT_COMMIT", "abc123")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    env = train_record.environment(torch.device("cpu"), "none")
    assert env["git_commit"] == "abc123" and env["slurm_job_id"] == "4242" and env["device_count"] == 0


def test_one_list_of_keys_for_both_writers(record):
    """A cell that ran gives every key of the schema; an unknown key or a missing one is refused where it is made."""
    assert tuple(record) == records.metrics_keys()
    with pytest.raises(KeyError, match="not keys of the metrics schema: val_aucc"):
        records.metrics_record({**record, "val_aucc": 0.5}, complete=True)
    lacking = {key: value for key, value in record.items() if key != "throughput_cv"}
    with pytest.raises(KeyError, match="lacks 'throughput_cv'"):
        records.metrics_record(lacking, complete=True)
    filled = records.metrics_record(lacking, complete=False)
    assert filled["throughput_cv"] is None and tuple(filled) == records.metrics_keys()
    with pytest.raises(KeyError, match="lacks 'status'"):  # a key that cannot be empty must be given
        records.metrics_record({key: value for key, value in record.items() if key != "status"}, complete=False)


PER_LABEL = {"Atelectasis": {"auc": 0.8, "ci_low": 0.7, "ci_high": 0.9, "positives": 12}}


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.update(val_auc_per_label={"Atelectasis": {**PER_LABEL["Atelectasis"], "auc": 1.2}}),
        lambda r: r.update(val_auc_per_label={"Atelectasis": {**PER_LABEL["Atelectasis"], "surprise": 1}}),
        lambda r: r.update(val_auc_per_label={"Atelectasis": {"auc": 0.8}}),
        lambda r: r.update(val_images=-1),
    ],
)
def test_a_broken_entry_of_several_labels_is_refused(record, change):
    broken = copy.deepcopy(record)
    change(broken)
    with pytest.raises(jsonschema.ValidationError):
        records.validate_metrics(broken)


def test_the_record_of_a_cell_of_several_labels_or_without_a_patch_size(record):
    chest = {**copy.deepcopy(record), "val_auc_per_label": PER_LABEL, "val_images": 30, "val_positive_images": 12}
    records.validate_metrics({**chest, "val_breasts": None, "val_positive_breasts": None, "val_pf1": None})
    records.validate_metrics({**record, "patch_size": None, "seq_len": None})  # a CNN's
    unknown = {"Atelectasis": {**PER_LABEL["Atelectasis"], "auc": None, "ci_low": None, "ci_high": None}}
    records.validate_metrics({**chest, "val_auc_per_label": unknown})  # one class only: not scored
    assert records.label_keys() == ("auc", "ci_low", "ci_high", "positives")
    assert record["val_auc_per_label"] is None and record["val_images"] is None  # a mammography cell's


def test_the_quality_keys_are_the_schemas():
    from mammoscale.train import scores

    assert set(scores.QUALITY_KEYS) <= set(records.metrics_keys())
    assert {key for key in records.metrics_keys() if key.startswith("val_")} == set(scores.QUALITY_KEYS)
