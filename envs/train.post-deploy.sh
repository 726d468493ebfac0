#!/usr/bin/env bash
# Snakemake runs this inside the new conda environment, from the directory snakemake runs in
# (the repository root): install the mammoscale package over the pinned dependencies.
set -euo pipefail
python -m pip install --no-deps -e .
