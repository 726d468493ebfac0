"""Every figure draws for one cell, a partial grid and the full paper grid; no cell is silently absent."""

from __future__ import annotations

import pandas as pd
import pytest
from cell_records import CNN, VARIANTS, record, write
from PIL import Image

from mammoscale import records
from mammoscale.plan import grid
from mammoscale.report import figures, plots, tables

REFERENCE = {"hardware": "xe9680", "variant": "flash", "image_size": 512, "patch_size": 16}
PROFILES = {
    "xe8545": {"gpus_per_node": 4, "nodes": 1, "micro_batch": 24, "device_memory_gib": 40},
    "xe9680": {"gpus_per_node": 8, "nodes": 1, "micro_batch": 64, "device_memory_gib": 80},
}
PIPELINE = pd.DataFrame(
    [
        {
            "stage": "decode + crop",
            "image_size": None,
            "shard": "shard0000",
            "items": 40,
            "item": "image",
            "seconds": 4.0,
            "cpu_seconds": 12.0,
            "items_per_s": 10.0,
        }
    ]
)


def tables_of(
    tmp_path, records, sizes=(384, 512, 1024, 2048), patches=(8, 16, 32), hardware=("xe9680",), variants=VARIANTS
):
    for rec in records:
        write(tmp_path, rec)
    runs = tables.runs_table(grid.cells(sizes, patches, variants, list(hardware)), variants, tmp_path)
    return runs, tables.speedups(runs)


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def draw_one(name, runs, pairs, variants=VARIANTS, reference=REFERENCE):
    return figures.draw(
        name, runs=runs, pairs=pairs, pipeline=PIPELINE, reference=reference, variants=variants, profiles=PROFILES
    )


def draw_all(tmp_path, runs, pairs, variants=VARIANTS, pipeline=PIPELINE):
    drawn = {}
    for name in figures.FIGURES:
        fig = figures.draw(
            name, runs=runs, pairs=pairs, pipeline=pipeline, reference=REFERENCE, variants=variants, profiles=PROFILES
        )
        drawn[name] = texts(fig)
        plots.save(fig, tmp_path / f"{name}.png", tmp_path / f"{name}.svg", dpi=60)
        with Image.open(tmp_path / f"{name}.png") as image:
            assert image.width > 200 and image.height > 150
        assert (tmp_path / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    return drawn


def test_one_cell(tmp_path):
    runs, pairs = tables_of(
        tmp_path,
        [record("xe9680", "flash", 512, 16, throughput=50.0)],
        sizes=(512,),
        patches=(16,),
        variants={"flash": VARIANTS["flash"]},
    )
    drawn = draw_all(tmp_path, runs, pairs, variants={"flash": VARIANTS["flash"]})
    assert "50" in drawn["fig2_hardware"]


def test_nothing_run_yet(tmp_path):
    runs, pairs = tables_of(tmp_path, [])
    drawn = draw_all(tmp_path, runs, pairs, pipeline=PIPELINE.iloc[0:0])
    assert drawn["fig2_hardware"] == ["not run"]
    assert drawn["fig4_flash_vs_baseline"].count("not run") == 36


def test_the_full_paper_grid_with_every_status(tmp_path):
    records = []
    for variant in VARIANTS:
        for size in (384, 512, 1024, 2048):
            for patch in (8, 16, 32):
                tokens = (size // patch) ** 2
                status = "oom" if variant != "flash" and tokens > 4096 else "ok"
                speed = 3.0 if variant == "flash" else 1.0
                records.append(
                    record("xe9680", variant, size, patch, status, throughput=speed * 1e5 / tokens, peak=tokens * 2**20)
                )
    records[1] = record("xe9680", "flash", 384, 16, "failed", message="nan")
    records += [record("xe8545", "flash", 512, 16, throughput=100.0)]
    runs, pairs = tables_of(tmp_path, records, hardware=("xe8545", "xe9680"))
    drawn = draw_all(tmp_path, runs, pairs)
    # OOM baselines (img2048 p8 and p16, img1024 p8: 2 baselines each) are written, not dropped
    assert drawn["fig4_flash_vs_baseline"].count("OOM") == 6
    assert drawn["fig4_flash_vs_baseline"].count("failed") == 1
    # speed-ups written on the baseline bars are the table's ratios
    shown = sorted(t for t in drawn["fig4_flash_vs_baseline"] if t.endswith("x"))
    expected = sorted(f"{r:.1f}x" for r in pairs.loc[pairs["hardware"] == "xe9680", "throughput_ratio"].dropna())
    assert shown == expected and len(shown) == 16
    assert "out of memory" in [
        t.get_text()
        for t in figures.draw(
            "memory",
            runs=runs,
            pairs=pairs,
            pipeline=PIPELINE,
            reference=REFERENCE,
            variants=VARIANTS,
            profiles=PROFILES,
        )
        .legends[0]
        .get_texts()
    ]
    assert "device memory: 80 GiB" in drawn["memory"]
    # Figure 2 labels each profile with its ranks and micro-batch
    fig2 = draw_one("fig2_hardware", runs, pairs)
    labels = [t.get_text() for t in fig2.axes[0].get_xticklabels()]
    assert labels == ["xe8545\n4 GPUs x 8", "xe9680\n4 GPUs x 8"]  # the records' world size and micro-batch


def test_a_partial_grid_says_what_has_not_run(tmp_path):
    runs, pairs = tables_of(
        tmp_path, [record("xe9680", "flash", 512, 16), record("xe9680", "hf-eager", 512, 16, "oom")]
    )
    drawn = draw_all(tmp_path, runs, pairs)
    assert "OOM" in drawn["fig4_flash_vs_baseline"] and "not run" in drawn["fig4_flash_vs_baseline"]
    assert "OOM" in drawn["fig3_patch_size"]


def test_a_reference_cell_outside_the_grid_is_explained(tmp_path):
    runs, pairs = tables_of(tmp_path, [record("xe9680", "flash", 384, 32)], sizes=(384,), patches=(32,))
    drawn = draw_all(tmp_path, runs, pairs)
    assert any("is not in the grid" in t for t in drawn["fig2_hardware"])
    assert any("no cell at image size 512" in t for t in drawn["fig3_patch_size"])


def test_an_unknown_figure_is_named():
    with pytest.raises(ValueError, match="no figure 'fig9'"):
        figures.draw("fig9", runs=None, pairs=None, pipeline=None, reference=REFERENCE, variants=[], profiles={})


def test_figure_2_shows_the_time_to_train_when_it_was_measured(tmp_path):
    full = record("xe9680", "flash", 512, 16, throughput=50.0)
    full.update(mode="full", train_time_s=600.0)
    runs, pairs = tables_of(tmp_path, [full], sizes=(512,), patches=(16,), variants={"flash": VARIANTS["flash"]})
    fig = figures.draw(
        "fig2_hardware",
        runs=runs,
        pairs=pairs,
        pipeline=PIPELINE,
        reference=REFERENCE,
        variants=["flash"],
        profiles=PROFILES,
    )
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "time to train (min)"
    assert "10" in texts(fig) and "50" in texts(fig)
    throughput_only = figures.draw(
        "fig2_hardware",
        runs=runs.assign(mode="throughput"),
        pairs=pairs,
        pipeline=PIPELINE,
        reference=REFERENCE,
        variants=["flash"],
        profiles=PROFILES,
    )
    assert len(throughput_only.axes) == 1


def test_every_status_without_a_number_has_a_label_and_a_colour():
    """A cell not ``ok`` is written where its number would be: every other status of ``runs.csv`` (the owner's,
    :data:`mammoscale.records.RUN_STATUSES`) has its words and its colour."""
    assert set(tables.STATUS_LABEL) == set(plots.STATUS_COLOUR) == set(records.RUN_STATUSES) - {records.OK}


def test_throughput_is_drawn_with_its_interval(tmp_path):
    from matplotlib.collections import LineCollection

    def error_bars(fig) -> int:
        return sum(isinstance(c, LineCollection) for ax in fig.axes for c in ax.collections)

    shaky = [record("xe9680", v, 512, p, throughput=100.0, spread=0.2) for v in ("flash", "hf-eager") for p in (16, 32)]
    runs, pairs = tables_of(tmp_path / "a", shaky, sizes=(512,), patches=(16, 32))
    for name in ("fig2_hardware", "fig3_patch_size", "fig4_flash_vs_baseline"):
        assert error_bars(draw_one(name, runs, pairs)) > 0, name
    few = [record("xe9680", "flash", 512, 16, throughput=100.0, windows=2)]
    runs, pairs = tables_of(tmp_path / "b", few, sizes=(512,), patches=(16,))
    assert error_bars(draw_one("fig2_hardware", runs, pairs)) == 0  # no interval, no bar pretending one


def test_a_cnn_beside_the_vits_is_its_own_series_and_out_of_the_attention_figure(tmp_path):
    """DenseNet-121 (no patch size, no attention, no tokens): a dashed level in Figure 3, a line against image size
    in the memory figure's own panel, absent from Figure 4 (flash vs baseline), and Figure 2's reference cell when
    figures.reference names it (patch_size null)."""
    variants = {"flash": VARIANTS["flash"], "hf-eager": VARIANTS["hf-eager"], **CNN}
    vits = [
        record("xe9680", v, s, p, throughput=t * 512 / s, peak=2**30 * s // 256)
        for v, t in (("flash", 300.0), ("hf-eager", 100.0))
        for s in (384, 512)
        for p in (16, 32)
    ]
    cnn = [record("xe9680", "densenet", s, None, throughput=150.0 * 512 / s, peak=2**30 * s // 128) for s in (384, 512)]
    runs, pairs = tables_of(tmp_path, [*vits, *cnn], sizes=(384, 512), patches=(16, 32), variants=variants)
    assert len(runs) == 10 and len(pairs) == 4
    drawn = draw_all(tmp_path, runs, pairs, variants=variants)
    assert not any("densenet" in text for text in drawn["fig4_flash_vs_baseline"])
    fig4 = draw_one("fig4_flash_vs_baseline", runs, pairs, variants)
    assert [t.get_text() for t in fig4.legends[0].get_texts()] == ["flash", "hf-eager"]
    assert [ax.get_title() for ax in fig4.axes] == ["patch 16", "patch 32"]
    # Figure 3: the CNN's throughput at the reference image size, across the patch sizes
    fig3 = draw_one("fig3_patch_size", runs, pairs, variants)
    legend = [t.get_text() for t in fig3.axes[0].get_legend().get_texts()]
    assert "densenet (no patch size)" in legend
    (level,) = [line for line in fig3.axes[0].get_lines() if line.get_label() == "densenet (no patch size)"]
    assert set(level.get_ydata()) == {150.0}
    # memory: the ViTs against sequence length, the CNN against image size
    memory = draw_one("memory", runs, pairs, variants)
    vit_panel, cnn_panel = memory.axes
    assert vit_panel.get_xlabel().startswith("sequence length") and cnn_panel.get_xlabel().startswith("image size")
    assert cnn_panel.get_title() == "xe9680, CNN (no patch size)"
    measured = [line for line in cnn_panel.get_lines() if line.get_linestyle() == "-"]
    assert [list(line.get_xdata()) for line in measured] == [[384.0, 512.0]]
    assert list(measured[0].get_ydata()) == [3.0, 4.0]  # GiB
    tokens = set(runs["seq_len"].dropna().astype(float))
    lines = [line for line in vit_panel.get_lines() if line.get_linestyle() == "-"]
    assert len(lines) == 4 and set().union(*(line.get_xdata() for line in lines)) == tokens  # 2 variants x 2 patches
    assert "no patch (CNN)" in [t.get_text() for t in memory.legends[0].get_texts()]
    # Figure 2 at the CNN's cell
    at_cnn = {"hardware": "xe9680", "variant": "densenet", "image_size": 512, "patch_size": None}
    fig2 = figures.draw(
        "fig2_hardware",
        runs=runs,
        pairs=pairs,
        pipeline=PIPELINE,
        reference=at_cnn,
        variants=variants,
        profiles=PROFILES,
    )
    assert "150" in texts(fig2) and fig2.axes[0].get_title() == "Throughput, img512, densenet"


def test_a_cnn_without_a_number_is_named_in_figure_3(tmp_path):
    variants = {"flash": VARIANTS["flash"], **CNN}
    records_ = [record("xe9680", "flash", 512, 16), record("xe9680", "densenet", 512, None, "oom")]
    runs, pairs = tables_of(tmp_path, records_, sizes=(512,), patches=(16,), variants=variants)
    fig3 = figures.draw(
        "fig3_patch_size",
        runs=runs,
        pairs=pairs,
        pipeline=PIPELINE,
        reference=REFERENCE,
        variants=variants,
        profiles=PROFILES,
    )
    assert "densenet (no patch size): OOM" in [t.get_text() for t in fig3.axes[0].get_legend().get_texts()]
    only_cnn = tables.runs_table([("xe9680", "densenet", 512, None)], CNN, tmp_path)
    fig3 = figures.draw(
        "fig3_patch_size",
        runs=only_cnn,
        pairs=tables.speedups(only_cnn),
        pipeline=PIPELINE,
        reference=REFERENCE,
        variants=CNN,
        profiles=PROFILES,
    )
    assert texts(fig3) == ["no cell with a patch size at img512 on xe9680:\ndensenet (a CNN) has none"]
    drawn = draw_all(tmp_path, only_cnn, tables.speedups(only_cnn), variants=CNN)
    assert drawn["fig4_flash_vs_baseline"] == ["no cell with attention on xe9680"]
