"""How often the study's throughput interval holds the true median: the coverage of mammoscale.stats.median_ci.

Draws ``--trials`` sets of n windows from a normal distribution (mean 100, sd 5), takes the percentile bootstrap
interval of their median as a cell does, and counts how often it holds 100. The nominal level is 95 %; below
:data:`mammoscale.stats.MIN_WINDOWS` a cell gives no interval, and this measures why.

    .venv/bin/python bench/intervals.py
"""

from __future__ import annotations

import argparse

import numpy as np

from mammoscale import stats


def coverage(windows: int, trials: int, seed: int = 7) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        sample = rng.normal(100.0, 5.0, windows)
        draws = np.median(rng.choice(sample, size=(stats.RESAMPLES, windows)), axis=1)
        low, high = np.percentile(draws, [100 * (1 - stats.CONFIDENCE) / 2, 100 * (1 + stats.CONFIDENCE) / 2])
        hits += low <= 100.0 <= high
    return hits / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[3, 4, 5, 10, 20])
    parser.add_argument("--trials", type=int, default=2000)
    args = parser.parse_args()
    print("| windows | coverage of the 95 % interval | interval given |\n|---|---|---|")
    for n in args.windows:
        print(f"| {n} | {coverage(n, args.trials):.3f} | {'yes' if n >= stats.MIN_WINDOWS else 'no'} |")


if __name__ == "__main__":
    main()
