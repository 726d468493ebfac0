"""The command line of one cell: ``python -m mammoscale.train --cell CELL.yaml --out DIR [key=value ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from mammoscale.errors import UserError
from mammoscale.logs import configure
from mammoscale.train.cell import EXIT_CODES, run_rank


def parse_cell(cell_file: str | None, assignments: list[str]) -> dict:
    """A cell from a YAML/JSON file and ``key=value`` overrides (values read as YAML scalars)."""
    cell: dict = {}
    if cell_file:
        try:
            loaded = yaml.safe_load(Path(cell_file).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"cannot read cell file {cell_file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{cell_file} must hold a mapping of cell settings")
        cell.update(loaded)
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"expected key=value, got {item!r}")
        cell[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return cell


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mammoscale.train", description="Train one grid cell and write its metrics.json."
    )
    parser.add_argument("--cell", help="YAML or JSON file of cell settings")
    parser.add_argument("--out", required=True, help="output directory (metrics.json, train.log, checkpoint.pt)")
    parser.add_argument("settings", nargs="*", metavar="key=value", help="settings (override --cell)")
    args = parser.parse_args(argv)
    configure(None)
    result, primary = run_rank(parse_cell(args.cell, args.settings), args.out)
    # rank 0 says how the cell ended; another rank's own ending is in the record rank 0 wrote (and its exit
    # code must not make the launcher stop rank 0 before it has)
    return EXIT_CODES[result["status"]] if primary else 0
