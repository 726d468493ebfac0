"""The command line of one cell: ``python -m mammoscale.train --cell CELL.yaml --out DIR [key=value ...]``."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import sys
from pathlib import Path

import yaml

from mammoscale import files
from mammoscale.errors import UserError
from mammoscale.logs import configure
from mammoscale.plan.launch import ranks_from_env
from mammoscale.train import ranges
from mammoscale.train.cell import RANK_ENDED_CELL, run_rank


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
    parser.add_argument(
        "--rank-log",
        action="store_true",
        help="send everything this process writes (its log, tracebacks, NCCL's warnings) to OUT/rank<r>.log: how a "
        "cell's job starts its ranks",
    )
    parser.add_argument(
        "--ranges",
        choices=ranges.MODES,
        help="name each step's phases: 'profile' profiles a throughput cell's timed steps with torch.profiler into OUT "
        "(trace, operators, breakdown); 'nvtx' makes them NVTX ranges, for nsys profile -t cuda,nvtx "
        f"(sets {ranges.ENV} for the ranks)",
    )
    parser.add_argument("settings", nargs="*", metavar="key=value", help="settings (override --cell)")
    args = parser.parse_args(argv)
    if args.rank_log:
        to_rank_log(Path(args.out))
    configure(None)
    if args.ranges:
        os.environ[ranges.ENV] = args.ranges
    ended = run_rank(parse_cell(args.cell, args.settings), args.out)
    if ended.code == RANK_ENDED_CELL:
        # leave now: interpreter shutdown would tear down NCCL communicators whose peers may be waiting or gone
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(ended.code)
    return ended.code


def to_rank_log(out: Path) -> Path:
    """Point this process's standard output and error (file descriptors 1 and 2: Python's and C libraries' alike)
    at its rank's log, ``OUT/rank<r>.log``, and dump a crash's traceback there too."""
    rank = ranks_from_env()[0]
    out.mkdir(parents=True, exist_ok=True)
    path = out / files.fill(files.RANK_LOG, rank=rank)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    faulthandler.enable()
    return path
