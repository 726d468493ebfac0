"""Published claim vs this run: each verdict (reproduced, not reproduced, inconclusive, not run), rightly reached."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from cell_records import CNN, VARIANTS, record, write

from mammoscale.errors import UserError
from mammoscale.plan import grid
from mammoscale.plan.study import Study
from mammoscale.report import claims, tables

from conftest import REPO

SIZES, PATCHES = [384, 512, 1024, 2048], [8, 16, 32]


def judge(tmp_path, records, *, hardware=("xe9680",), baseline="hf-eager", tolerance=0.15, sizes=SIZES):
    for rec in records:
        write(tmp_path, rec)
    runs = tables.runs_table(grid.cells(sizes, PATCHES, VARIANTS, list(hardware)), VARIANTS, tmp_path)
    table = claims.evaluate(
        runs, tables.speedups(runs), hardware="xe9680", flash="flash", baseline=baseline, tolerance=tolerance
    )
    return table.set_index("claim")


def verdict(table, start):
    (row,) = [row for claim, row in table.iterrows() if claim.startswith(start)]
    return row


def pair(size, patch, ratio, *, memory=1.0, baseline_status="ok", hardware="xe9680", **timing):
    return [
        record(hardware, "flash", size, patch, throughput=10.0 * ratio, peak=2**30, **timing),
        record(hardware, "hf-eager", size, patch, baseline_status, throughput=10.0, peak=int(memory * 2**30), **timing),
    ]


def test_speedups_inside_the_published_range_are_reproduced(tmp_path):
    table = judge(tmp_path, [*pair(512, 16, 3.1), *pair(1024, 16, 3.9), *pair(512, 8, 2.0), *pair(1024, 8, 3.5)])
    p16 = verdict(table, "flash speed-up over the baseline, patch 16")
    assert p16["verdict"] == claims.REPRODUCED and p16["measured"] == "3.10-3.90x"
    assert "2 of 4 image sizes: img512_p16 3.10x [3.0" in p16["detail"] and "; img1024_p16 3.90x [3.7" in p16["detail"]
    p8 = verdict(table, "flash speed-up over the baseline, patch 8")
    assert p8["verdict"] == claims.NOT_REPRODUCED and p8["measured"] == "2.00-3.50x"  # 2.0 < 3.0 x 0.85
    assert verdict(table, "flash speed-up over the baseline, patch 32")["verdict"] == claims.NOT_RUN


def test_tolerance_decides_the_edge(tmp_path):
    records = pair(512, 16, 2.5)  # 2.8 x (1 - 0.15) = 2.38 <= 2.5 < 2.8
    assert (
        verdict(judge(tmp_path, records), "flash speed-up over the baseline, patch 16")["verdict"] == claims.REPRODUCED
    )
    assert (
        verdict(judge(tmp_path, records, tolerance=0.05), "flash speed-up over the baseline, patch 16")["verdict"]
        == claims.NOT_REPRODUCED
    )


def test_an_interval_across_an_edge_is_inconclusive(tmp_path):
    # 2.5x is inside 2.8 x 0.85 = 2.38, but windows 10 % apart give an interval reaching below it
    row = verdict(judge(tmp_path, pair(512, 16, 2.5, spread=0.1)), "flash speed-up over the baseline, patch 16")
    assert row["verdict"] == claims.INCONCLUSIVE and "across an edge" in row["detail"]
    assert "unstable timing at img512_p16" in row["detail"]
    steady = verdict(judge(tmp_path / "b", pair(512, 16, 2.5)), "flash speed-up over the baseline, patch 16")
    assert steady["verdict"] == claims.REPRODUCED and "unstable" not in steady["detail"]


def test_too_few_windows_are_inconclusive(tmp_path):
    row = verdict(judge(tmp_path, pair(512, 16, 3.0, windows=2)), "flash speed-up over the baseline, patch 16")
    assert (
        row["verdict"] == claims.INCONCLUSIVE
        and "too few timing windows for an interval (2, at least 5" in row["detail"]
    )
    assert "img512_p16 3.00x no interval" in row["detail"]
    old = verdict(judge(tmp_path / "c", pair(512, 16, 3.0, windows=0)), "flash speed-up over the baseline, patch 16")
    assert old["verdict"] == claims.INCONCLUSIVE and "a record without timing windows" in old["detail"]
    far = verdict(judge(tmp_path / "b", pair(512, 16, 1.0, windows=5)), "flash speed-up over the baseline, patch 16")
    assert far["verdict"] == claims.NOT_REPRODUCED  # a measurement wholly outside needs no more windows


def test_an_oom_baseline_gives_no_speedup_and_says_why(tmp_path):
    table = judge(tmp_path, pair(2048, 16, 1.0, baseline_status="oom"))
    row = verdict(table, "flash speed-up over the baseline, patch 16")
    assert row["verdict"] == claims.NOT_RUN and "img2048: ok/oom" in row["detail"]


def test_cells_outside_the_study_sizes_do_not_count(tmp_path):
    table = judge(tmp_path, pair(256, 16, 3.0), sizes=[256, 512])
    assert verdict(table, "flash speed-up over the baseline, patch 16")["verdict"] == claims.NOT_RUN


@pytest.mark.parametrize(
    ("ratio", "expected"), [(2.3, claims.REPRODUCED), (2.6, claims.REPRODUCED), (1.5, claims.NOT_REPRODUCED)]
)
def test_memory_ratio_at_384_p16(tmp_path, ratio, expected):
    row = verdict(judge(tmp_path, pair(384, 16, 3.0, memory=ratio)), "peak memory, baseline / flash")
    assert row["verdict"] == expected and row["measured"] == f"{ratio:.2f}x"


def test_memory_ratio_not_run_when_the_cell_is_missing(tmp_path):
    row = verdict(judge(tmp_path, pair(512, 16, 3.0)), "peak memory, baseline / flash")
    assert row["verdict"] == claims.NOT_RUN and "img384_p16: flash missing, baseline missing" in row["detail"]


def test_which_cells_fit_as_published(tmp_path):
    records = [
        *pair(2048, 32, 1.5),
        *pair(2048, 16, 1.0, baseline_status="oom"),
        *pair(2048, 8, 1.0, baseline_status="oom"),
        *pair(512, 16, 3.0),
    ]
    table = judge(tmp_path, records)
    assert verdict(table, "which cells fit in memory, flash")["verdict"] == claims.REPRODUCED
    baseline = verdict(table, "which cells fit in memory, baseline")
    assert baseline["verdict"] == claims.REPRODUCED and baseline["measured"] == "2 of 4 fit"


def test_a_cell_that_fits_differently_is_named(tmp_path):
    records = [*pair(1024, 8, 1.0, baseline_status="oom"), record("xe9680", "flash", 2048, 8, "oom")]
    table = judge(tmp_path, records)
    flash = verdict(table, "which cells fit in memory, flash")
    assert flash["verdict"] == claims.NOT_REPRODUCED and "img2048_p8 (oom)" in flash["detail"]
    baseline = verdict(table, "which cells fit in memory, baseline")
    assert baseline["verdict"] == claims.NOT_REPRODUCED and "img1024_p8 (oom)" in baseline["detail"]


def test_hardware_ordering(tmp_path):
    hardware = ("xe8545", "r750xa", "xe9680")
    rising = [record(hw, "flash", 512, 16, throughput=t) for hw, t in zip(hardware, (100.0, 150.0, 300.0))]
    row = verdict(judge(tmp_path / "a", rising, hardware=hardware), "hardware ordering")
    assert row["verdict"] == claims.REPRODUCED and row["measured"] == "100.0 < 150.0 < 300.0"
    swapped = [record(hw, "flash", 512, 16, throughput=t) for hw, t in zip(hardware, (160.0, 150.0, 300.0))]
    assert (
        verdict(judge(tmp_path / "b", swapped, hardware=hardware), "hardware ordering")["verdict"]
        == claims.NOT_REPRODUCED
    )
    close = [record(hw, "flash", 512, 16, throughput=t, spread=0.2) for hw, t in zip(hardware, (100.0, 110.0, 300.0))]
    row = verdict(judge(tmp_path / "d", close, hardware=hardware), "hardware ordering")
    assert row["verdict"] == claims.INCONCLUSIVE and "intervals overlap" in row["detail"]
    row = verdict(judge(tmp_path / "c", rising[2:], hardware=("xe9680",)), "hardware ordering")
    assert row["verdict"] == claims.NOT_RUN and "xe8545: not in the grid" in row["detail"]


def test_the_baseline_is_the_studys_when_the_grid_has_it():
    assert grid.choose_baseline(VARIANTS, None) == "hf-eager"
    without = {k: v for k, v in VARIANTS.items() if k != "hf-eager"}
    assert grid.choose_baseline(without, None) == "materialised"
    assert grid.choose_baseline(VARIANTS, "materialised") == "materialised"
    assert grid.choose_baseline({"flash": VARIANTS["flash"]}, None) is None
    with pytest.raises(UserError, match="figures.baseline is 'sdpa', not one of grid.variants"):
        grid.choose_baseline(VARIANTS, "sdpa")


def test_no_baseline_in_the_grid(tmp_path):
    table = judge(tmp_path, [record("xe9680", "flash", 512, 16)], baseline=None)
    assert table.loc["flash vs baseline claims", "verdict"] == claims.NOT_RUN


def paper_plan() -> pd.DataFrame:
    """plan.csv of config/paper.yaml: what the memory model predicts for the study's grid."""
    embedded, paper = (yaml.safe_load((REPO / "config" / name).read_text()) for name in ("config.yaml", "paper.yaml"))
    study = Study.from_config({**embedded, **paper, "hardware": {**embedded["hardware"], **paper["hardware"]}})
    return pd.DataFrame([plan.row() for plan in study.plans.values()])


def test_the_memory_model_is_judged_against_the_published_fits():
    plan = paper_plan()
    rows = {
        row["claim"]: row
        for row in claims.predicted_fit_claims(plan, hardware="xe9680", flash="flash", baseline="hf-eager")
    }
    flash = rows["which cells fit in memory, flash (flash), predicted"]
    assert flash["verdict"] == claims.REPRODUCED and flash["measured"] == "12 of 12 fit"
    baseline = rows["which cells fit in memory, baseline (hf-eager), predicted"]
    assert baseline["verdict"] == claims.NOT_REPRODUCED and baseline["measured"] == "9 of 12 fit"
    # the finding: 1024/p8 has as many tokens as 2048/p16, and the model predicts both out of memory
    assert baseline["detail"].startswith(
        "img1024_p8 (16,385 tokens): 238 GiB even at micro-batch 1, over 72 GiB, published as run"
    )
    assert "img2048_p16 has as many tokens, published OOM; predicted 238 GiB" in baseline["detail"]
    assert "img2048_p8" not in baseline["detail"]  # predicted OOM, as published


def test_predicted_fits_need_a_device_memory_and_planned_cells():
    plan = paper_plan().assign(memory_limit_bytes=float("nan"))
    (row, _) = claims.predicted_fit_claims(plan, hardware="xe9680", flash="flash", baseline="hf-eager")
    assert row["verdict"] == claims.NOT_RUN and row["detail"] == "xe9680 has no device_memory_gib"
    (row, _) = claims.predicted_fit_claims(paper_plan(), hardware="elsewhere", flash="flash", baseline="hf-eager")
    assert row["verdict"] == claims.NOT_RUN and row["detail"] == "no cell of the study's sizes planned"


def test_a_predicted_oom_is_not_judged_as_measured(tmp_path):
    predicted = record("xe9680", "hf-eager", 1024, 8, "oom", throughput=None, peak=None)
    predicted["oom_basis"] = "predicted"
    table = judge(tmp_path, [*pair(512, 16, 3.0), predicted])
    baseline = verdict(table, "which cells fit in memory, baseline")
    assert (
        baseline["verdict"] == claims.REPRODUCED and baseline["measured"] == "1 of 1 fit"
    )  # the 1024/p8 OOM is not counted


def test_cnn_cells_change_no_verdict_and_a_cnn_reference_judges_none(tmp_path):
    """A DenseNet-121 beside the ViTs (no patch size, no attention) is in no claim: with its cells (ok and OOM, at
    the study's sizes) every verdict and detail is the one without them; a reference cell of its judges nothing."""
    vits = [*pair(512, 16, 3.1), *pair(512, 8, 2.0), *pair(512, 32, 1.5), *pair(2048, 16, 1.0, baseline_status="oom")]
    cnn = [record("xe9680", "densenet", 512, None, throughput=31.0), record("xe9680", "densenet", 2048, None, "oom")]
    variants = {**VARIANTS, **CNN}
    for rec in [*vits, *cnn]:
        write(tmp_path, rec)

    def evaluate(variants, flash="flash"):
        runs = tables.runs_table(grid.cells(SIZES, PATCHES, variants, ["xe9680"]), variants, tmp_path)
        options = {"hardware": "xe9680", "baseline": "hf-eager", "tolerance": 0.15}
        return runs, claims.evaluate(runs, tables.speedups(runs), flash=flash, **options)

    runs, with_cnn = evaluate(variants)
    assert (runs["variant"] == "densenet").sum() == 4
    pd.testing.assert_frame_equal(with_cnn, evaluate(VARIANTS)[1])
    assert set(with_cnn["verdict"]) == {claims.REPRODUCED, claims.NOT_REPRODUCED, claims.NOT_RUN}
    _, at_cnn = evaluate(variants, flash="densenet")
    assert at_cnn.to_dict("records") == [
        {
            "claim": "the Flash Attention study's claims",
            "published": "-",
            "measured": "-",
            "verdict": claims.NOT_RUN,
            "detail": "the reference variant densenet has no attention (a CNN): the claims are judged on a flash "
            "variant's cells; set figures.reference to one",
        }
    ]
