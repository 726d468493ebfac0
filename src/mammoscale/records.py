"""The cell record (``metrics.json``): its schema, its keys, its vocabularies, and how it is written and read.

One owner for what a cell's record is. Two writers fill it: a cell that ran
(:func:`mammoscale.train.record.metrics`) and a cell predicted out of memory and never run
(:func:`mammoscale.plan.sizing.predicted_oom_record`); both go through :func:`metrics_record`, so
each holds exactly the schema's keys. The statuses and OOM bases are named here once; the schema's
enums are tested against them. Torch-free.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

from mammoscale.errors import UserError
from mammoscale.files import FAILED_METRICS, METRICS, write_text

METRICS_SCHEMA_VERSION = 1
OK, OOM, FAILED, SKIPPED = "ok", "oom", "failed", "skipped"
STATUSES = (OK, OOM, FAILED, SKIPPED)
"""A cell record's ``status`` (the metrics schema's enum): it trained, it ran out of memory, it failed, or its
kernel or device could not run it here."""
MISSING = "missing"
"""The ``status`` in ``runs.csv`` of a configured cell with no record yet."""
RUN_STATUSES = (*STATUSES, MISSING)
"""Every ``status`` of a row of ``runs.csv``, in the order the report counts them."""
MEASURED, PREDICTED = "measured", "predicted"
OOM_BASES = (MEASURED, PREDICTED)
"""An ``oom`` record's ``oom_basis``: an allocation failed on the device, or the memory model says so (not run)."""


@functools.cache
def metrics_schema() -> dict:
    return json.loads(resources.files("mammoscale").joinpath("schemas/metrics.schema.json").read_text())


def metrics_keys() -> tuple[str, ...]:
    """Every key of a cell record, in the schema's order: the one list both writers (a cell's
    :func:`mammoscale.train.record.metrics`, a predicted OOM's :func:`mammoscale.plan.sizing.predicted_oom_record`)
    fill in."""
    return tuple(metrics_schema()["properties"])


def label_keys() -> tuple[str, ...]:
    """The keys of one label's entry of ``val_auc_per_label`` (a task of several labels), in the schema's order."""
    return tuple(metrics_schema()["properties"]["val_auc_per_label"]["additionalProperties"]["properties"])


def _empty(spec: dict):
    """What a record holds for a key nothing was measured for: null where the schema allows it, an empty list where
    it holds a list; None where the key can be neither (it must be given)."""
    spec = metrics_schema()["$defs"][spec["$ref"].rpartition("/")[2]] if "$ref" in spec else spec
    kinds = spec.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    return (None,) if "null" in kinds else ([],) if "array" in kinds else None


def metrics_record(values: dict, *, complete: bool) -> dict:
    """A cell record with exactly the schema's keys, in its order: ``values``, and (unless ``complete``, where each
    key must be given) every other key empty. A key the schema does not know is a bug, refused here."""
    properties = metrics_schema()["properties"]
    unknown = sorted(set(values) - set(properties))
    if unknown:
        raise KeyError(f"not keys of the metrics schema: {', '.join(unknown)}")
    record = {}
    for key, spec in properties.items():
        empty = None if complete or key in values else _empty(spec)
        if key not in values and empty is None:
            raise KeyError(f"the cell record lacks {key!r}, which the metrics schema requires")
        record[key] = values[key] if key in values else empty[0]
    return record


def validate_metrics(record: dict) -> None:
    """Raise ``jsonschema.ValidationError`` naming the field when ``record`` breaks the schema."""
    import jsonschema

    jsonschema.validate(record, metrics_schema())


def write_metrics(record: dict, path: Path | str) -> None:
    """Validate, then write atomically (a reader never sees half a record)."""
    validate_metrics(record)
    write_text(json.dumps(record, indent=2) + "\n", path)


def rerun_cell(run: Path | str) -> str:
    """The command that reruns the cell of run directory ``run`` (as Snakemake names it), and nothing else."""
    metrics = Path(run) / METRICS
    return f"snakemake {metrics} --forcerun {metrics}"  # the target first: --forcerun takes every word after it


def read_cell_record(run: Path | str) -> dict | None:
    """A cell's record in its run directory: ``metrics.json``, else a failed run's, else None."""
    for name in (METRICS, FAILED_METRICS):
        path = Path(run) / name
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise UserError(f"{path} is not valid JSON ({exc}); rerun the cell: {rerun_cell(run)}") from None
    return None
