"""Configuration helpers used by the Snakefile before it validates the config.

Snakemake parses a nested ``--config`` value (``--config grid="{image_sizes: [64, 96]}"``)
with YAML's base loader, which keeps every scalar a string: ``"64"``. Validation would then
refuse the user's perfectly good override. :func:`coerce_scalars` gives back their types to
strings that YAML reads as numbers, booleans or null, and leaves every other string alone,
so paths and names stay strings.
"""

from __future__ import annotations

from typing import Any

import yaml


def coerce_scalars(value: Any) -> Any:
    """A copy of ``value`` with number-, boolean- and null-like strings typed, recursively."""
    if isinstance(value, dict):
        return {key: coerce_scalars(item) for key, item in value.items()}
    if isinstance(value, list):
        return [coerce_scalars(item) for item in value]
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if parsed is None or isinstance(parsed, (bool, int, float)):
            return parsed
    return value
