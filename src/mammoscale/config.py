"""The configuration: its schema, its defaults, and the check that refuses a bad one in one line.

The schema (``mammoscale/schemas/config.schema.yaml``, linked from ``workflow/schemas/``) owns
every key's type, range, meaning and default. :func:`load` is what the Snakefile calls first:
it types back ``--config`` strings, fills in every default the config files leave out, and
validates, so that everything after it reads a complete config. Library code that needs a
default (the synthetic set's command line, :func:`mammoscale.preprocess.chain.build_cache`)
asks :func:`defaults`, never a copy of its own.

Snakemake parses a nested ``--config`` value (``--config grid="{image_sizes: [64, 96]}"``)
with YAML's base loader, which keeps every scalar a string: ``"64"``. :func:`coerce_scalars`
gives back their types to strings that YAML reads as numbers, booleans or null, and leaves
every other string alone, so paths and names stay strings. YAML 1.1 (PyYAML, which reads the
config files too) reads ``1e-4`` as a string, as it needs a dot (``1.0e-4``);
:func:`coerce_yaml11` makes such a string a number where the schema wants a number, and
nowhere else; it also gives back ``yes`` and ``no``, which YAML 1.1 reads as booleans, where the
schema wants one of those words.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
from importlib import resources
from typing import Any

import yaml

from mammoscale.errors import UserError

_MISSING = object()
RENAMED = {
    "device_memory_gb": 'device_memory_gib: the unit is GiB, 2^30 bytes (an "80GB" A100 or H100 holds 80 GiB)',
    "lr_scale_with_world_size": "lr_scaling: none (what false did), linear (true, where the global batch grows with "
    "the ranks: train.batch_per_rank) or sqrt",
}
"""Keys a config may still carry under an earlier name -> what to write instead."""
PATTERNS = {
    "^[A-Za-z0-9_-]+$": "use letters, digits, _ and - only (hardware and variant names are wildcards and directories: "
    "results/runs/<hardware>/<variant>)",
    "^[A-Za-z0-9_.:-]+$": "write a network interface's name, such as ib0 or eth0 (letters, digits, _ . : and -)",
    "^\\S(.*\\S)?$": "write a path on one line, without spaces at its start or end (spaces inside it are fine)",
    "^[0-9a-f]{8,64}$": "write the file's sha256 in lower-case hex, whole (64 digits) or its first 8 or more "
    "(torchvision's file names carry the first 8)",
}
"""Each ``pattern`` of the schema -> what a value that does not match it should be (a sentence, never the regex)."""
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
"""A number as YAML 1.2 writes it (``1e-4``, ``5E-3``, ``-1e+2``); YAML 1.1 reads those without a dot as strings."""


class ConfigError(UserError, ValueError):
    """A configuration value that is unknown, of the wrong type or out of range."""


@functools.cache
def schema() -> dict:
    return yaml.safe_load(resources.files("mammoscale").joinpath("schemas/config.schema.yaml").read_text())


def defaults() -> dict:
    """Every default of the schema, as a config (a fresh copy)."""
    return with_defaults({})


def with_defaults(config: dict) -> dict:
    """A copy of ``config`` with every key it leaves out set to the schema's default."""
    filled = _fill(schema(), copy.deepcopy(config))
    return {} if filled is _MISSING else filled


def _fill(node: dict, value: Any) -> Any:
    if value is _MISSING and "default" in node:
        return copy.deepcopy(node["default"])
    if "properties" in node and (value is _MISSING or isinstance(value, dict)):
        missing, value = value is _MISSING, {} if value is _MISSING else value
        for key, child in node["properties"].items():
            filled = _fill(child, value.get(key, _MISSING))
            if filled is not _MISSING:
                value[key] = filled
        if missing and not value:  # an optional block left out (a variant's weights) stays out
            return _MISSING
    elif isinstance(node.get("additionalProperties"), dict) and isinstance(value, dict):
        for key, item in value.items():
            value[key] = _fill(node["additionalProperties"], item)
    return value


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


def coerce_yaml11(config: Any, node: dict | None = None) -> Any:
    """A copy of ``config`` in which every string written as a number (:data:`NUMBER`) is a float where the schema
    wants a number (``type: number``, alone or among others), and a boolean is ``"yes"`` or ``"no"`` where the
    schema wants one of those words (``data_on_device: yes``); every other value is left as it is."""
    node = schema() if node is None else node
    if isinstance(config, str) and _wants_number(node) and NUMBER.fullmatch(config):
        return float(config)
    if isinstance(config, bool) and {"yes", "no"} <= set(node.get("enum", ())):
        return "yes" if config else "no"
    if isinstance(config, dict):
        extra = node.get("additionalProperties")
        return {
            key: coerce_yaml11(item, node.get("properties", {}).get(key, extra if isinstance(extra, dict) else {}))
            for key, item in config.items()
        }
    if isinstance(config, list) and isinstance(node.get("items"), dict):
        return [coerce_yaml11(item, node["items"]) for item in config]
    return config


def _wants_number(node: dict) -> bool:
    kinds = node.get("type", [])
    return "number" in ([kinds] if isinstance(kinds, str) else kinds) or any(map(_wants_number, node.get("oneOf", [])))


def validate(config: dict) -> None:
    """Raise :class:`ConfigError` naming the first bad key (and, for a typo, the closest valid one)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    where = ".".join(str(part) for part in error.absolute_path) or "the top level"
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        renamed = [key for key in unknown if key in RENAMED]
        if renamed:
            raise ConfigError(f"config: {where}.{renamed[0]} was renamed {RENAMED[renamed[0]]}")
        hints = [
            f"{key!r} (did you mean {close[0]!r}?)"
            if (close := difflib.get_close_matches(key, allowed, n=1))
            else repr(key)
            for key in unknown
        ]
        raise ConfigError(f"config: unknown key(s) {', '.join(hints)} in {where}; valid: {', '.join(allowed)}")
    if error.validator == "pattern":
        rule = PATTERNS.get(error.validator_value, "see docs/configuration.md for what it may be")
        what = "the name " if "propertyNames" in error.schema_path else ""
        raise ConfigError(f"config: {where}: {what}{error.instance!r} is not allowed: {rule}")
    raise ConfigError(f"config: {where}: {error.message}")


def load(config: dict) -> dict:
    """The complete, valid config from what the config files and ``--config`` gave."""
    complete = with_defaults(coerce_yaml11(coerce_scalars(config)))
    validate(complete)
    return complete


CHECKED = """
## Checked before any job runs

Snakemake reads the config files and `--config`, fills in every default and checks the whole study
(`mammoscale.plan.study.Study`) before it plans a job; a mistake stops it with one line,
`error: <what is wrong and what to write instead>`:
- every key's type, range and spelling (an unknown key names the closest valid one; a renamed key
  says its new name);
- names and paths: hardware profile and variant names take letters, digits, `_` and `-` only (they
  become wildcards and directories); `network_interface` a name such as `ib0`; `data.root` and
  `cache.root` a path on one line, without spaces at either end (spaces inside a path are fine);
- a number written without a dot (`lr: 1e-4`, `5E-3`, `-1e+2`) is a number wherever the key takes
  one, although YAML 1.1 (PyYAML, which Snakemake uses) reads it as a string; an integer key takes
  an integer (`epochs: 1000`, not `1e3`);
- `manifest.split`: the three fractions sum to 1 (within 1e-6, the manifest's own rule);
- `grid.hardware` and every extra cell name existing profiles and variants; an extra cell's image
  size is in `grid.image_sizes` and its patch size divides it; `cache.canonical_size` is at least the
  largest image size;
- `figures.reference` is a cell of the grid (the error lists the cells it could be);
  `figures.baseline` is one of `grid.variants`;
- every hardware profile in use can start its ranks (launcher, nodes, `cpus_per_task`,
  `slurm_extra`), and every cell can train: its ranks share its global batch, its attention kernel
  runs on its device at its precision, and its predicted hours fit within `plan.runtime_headroom` of
  `runtime_min`;
- with `data.source: rsna`, `data.root` is the RSNA-layout directory holding `train.csv`, when a
  target reads the data (`snakemake plan` needs none, so a laptop plans a cluster's study).
"""
"""What the reference says is checked at parse time (each item is tested: tests/test_config_mistakes.py)."""


def reference() -> str:
    """The configuration reference as Markdown: every key, its default and its meaning (docs/configuration.md)."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from src/mammoscale/schemas/config.schema.yaml by tools/config-docs; do not edit. -->",
        "",
        " ".join(schema()["description"].split()),
        "",
        "Set a key in `config/config.yaml`, in a file of your own (`--configfile`), or on the command line",
        '(`--config grid="{image_sizes: [256, 384]}"`; nested values are typed back before validation).',
        "",
        *CHECKED.strip().splitlines(),
    ]
    for section, node in schema()["properties"].items():
        lines += ["", f"## `{section}`", "", _sentence(node.get("description", "")), ""]
        lines += ["| key | default | meaning |", "|---|---|---|"]
        lines += [f"| `{key}` | {default} | {meaning} |" for key, default, meaning in _rows(node, section)]
    return "\n".join(lines) + "\n"


def _rows(node: dict, prefix: str):
    if "properties" not in node and isinstance(node.get("additionalProperties"), dict):
        node, prefix = node["additionalProperties"], f"{prefix}.<name>"
    for key, child in node.get("properties", {}).items():
        name = f"{prefix}.{key}"
        if "properties" in child and "default" not in child:
            yield from _rows(child, name)
            continue
        if "default" in child:
            default = f"`{yaml.safe_dump(child['default'], default_flow_style=True, width=1000).strip()}`"
            default = default.replace("\n...", "")
        else:
            default = "required" if key in node.get("required", ()) else "unset"
        yield name, default, _sentence(child.get("description", "")).replace("|", "\\|")


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:] if text else ""
