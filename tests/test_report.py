"""The standalone report: well-formed, self-contained, every section, numbers and verdicts from the tables."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from cell_records import CNN, VARIANTS, record, write

from mammoscale import files, stats
from mammoscale.plan import grid
from mammoscale.report import captions, claims, sections, tables
from mammoscale.report import page as report
from mammoscale.report.page import Context
from mammoscale.report.snapshot import snapshot
from mammoscale.tasks import BREAST_CANCER, CHEST_FINDINGS

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
REFERENCE = {"hardware": "xe9680", "variant": "flash", "image_size": 512, "patch_size": 16}
PROFILES = {
    "xe9680": {
        "description": "8x A100",
        "launcher": "torchrun",
        "nodes": 1,
        "gpus_per_node": 8,
        "micro_batch": 64,
        "device_memory_gib": 80,
        "peak_tflops": 312,
    }
}
RUN_CONFIG = {
    "data": {"source": "rsna", "root": "/data/rsna"},
    "grid": {"image_sizes": [384, 512], "patch_sizes": [16, 32], "variants": VARIANTS, "hardware": ["xe9680"]},
    "hardware": PROFILES,
    "train": {"model_size": "vit-base", "seed": 2023, "precision": "bf16"},
    "configfiles": ["config/paper.yaml"],
}
COUNTS = {
    "rows": 54706,
    "patients": 11913,
    "breasts": 23000,
    "positive_breasts": 480,
    "excluded_by_reason": {"missing_cc": 12, "missing_mlo": 7},
    "breasts_by_split": {"train": 16000},
    "positive_by_split": {"train": 330},
    "other_views_not_used": {"AT": 3},
}
PREPROCESS = {
    "decoded": 46000,
    "failed_images": 2,
    "errors_by_kind": {"truncated": 2},
    "breasts_cached": 22998,
    "breasts_excluded_decode_error": 2,
    "flip_disagreements": 5,
    "roi_fallbacks": 1,
    "decoders": {"pylibjpeg-openjpeg 2.6.0": 25000, "pylibjpeg-libjpeg 2.5.0": 21000},
    "versions": {"pydicom": "3.0.2", "numpy": "2.4.6", "git_commit": "4567def", "platform": "Linux"},
}


class Checker(HTMLParser):
    """Balanced tags, and every ``src``/``href`` kept inside the file."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.ids, self.sources = [], [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        self.sources += [attrs[key] for key in ("src", "href") if key in attrs]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def check(page: str) -> Checker:
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    return checker


@pytest.fixture
def pngs(tmp_path):
    from PIL import Image

    files = {}
    for name in captions.FIGURES:
        files[name] = tmp_path / f"{name}.png"
        Image.new("RGB", (20, 10), "white").save(files[name])
    sheet = tmp_path / "sheet.png"
    Image.new("L", (20, 20)).save(sheet)
    return files, {512: sheet}


def grid_records():
    return [
        *(
            record("xe9680", v, 512, 16, throughput=t, peak=p, job="81234")
            for v, t, p in (
                ("flash", 300.0, 2 * 2**30),
                ("materialised", 100.0, 5 * 2**30),
                ("hf-eager", 90.0, 6 * 2**30),
            )
        ),
        record("xe9680", "hf-eager", 512, 32, "oom", message="CUDA out of memory"),
        record("xe9680", "flash", 512, 32, throughput=900.0, job="81235"),
    ]


def build(tmp_path, pngs, records, failed=(), plan=None, profile=None, variants=VARIANTS):
    runs_root = tmp_path / "runs"
    for rec in records:
        write(runs_root, rec)
    for rec in failed:
        write(runs_root, rec, files.FAILED_METRICS)
    cells = grid.cells([384, 512], [16, 32], variants, ["xe9680"])
    tables.write_tables(
        cells, variants, runs_root, tmp_path / "runs.csv", tmp_path / "speedups.csv", tmp_path / "quality.csv"
    )
    (tmp_path / "counts.json").write_text(json.dumps(COUNTS))
    (tmp_path / "preprocess.json").write_text(json.dumps(PREPROCESS))
    verdicts = report.build(
        tmp_path / "report.html",
        runs_csv=tmp_path / "runs.csv",
        speedups_csv=tmp_path / "speedups.csv",
        quality_csv=tmp_path / "quality.csv",
        figure_files=pngs[0],
        contact_sheets=pngs[1],
        manifest_counts=tmp_path / "counts.json",
        preprocess_summary=tmp_path / "preprocess.json",
        context=Context(
            {**RUN_CONFIG, "grid": {**RUN_CONFIG["grid"], "variants": variants}},
            REFERENCE,
            "hf-eager",
            0.15,
            "snakemake {profile} --configfile config/paper.yaml",
        ),
        plan_csv=plan,
        profile=profile,
    )
    return (tmp_path / "report.html").read_text(), verdicts


def test_the_report_is_well_formed_self_contained_and_has_every_section(tmp_path, pngs):
    page, _ = build(tmp_path, pngs, grid_records())
    checker = check(page)
    assert set(report.SECTIONS) <= checker.ids
    for title in report.SECTIONS.values():
        assert f">{title}</h2>" in page
    # nothing loaded from outside the file: images are data URIs, links are anchors
    assert checker.sources and all(s.startswith(("data:image/png;base64,", "#")) for s in checker.sources)
    assert page.count('src="data:image/png;base64,') == len(captions.FIGURES) + 1
    for caption in captions.CAPTIONS.values():
        assert caption in page.replace("&#x27;", "'")


def test_the_report_says_which_kernel_each_variant_ran(tmp_path, pngs):
    page, _ = build(tmp_path, pngs, grid_records())
    run = page[page.index('id="run"') : page.index('id="headline"')]
    assert ">kernel that ran</th>" in run
    for variant, attention, ran in (
        ("flash", "flash", "sdpa-flash"),
        ("materialised", "materialised", "matmul-softmax"),
        ("hf-eager", "eager", "matmul-softmax"),
    ):
        assert f"<td>{variant}</td><td>" in run and f"<td>vit-base</td><td>{attention}</td><td>{ran}</td></tr>" in run


def test_the_report_names_the_model_each_variant_trains(tmp_path):
    write(tmp_path / "runs", record("xe9680", "densenet", 512, None, throughput=450.0))
    out, _ = snapshot_of(tmp_path, {**CNN, "small": {**VARIANTS["flash"], "model_size": "vit-small"}}, [512])
    run = (out / "report.html").read_text().split('id="headline"')[0]
    assert "<td>densenet</td><td>densenet</td><td>densenet-121</td><td>none</td>" in run
    assert "<td>small</td><td>xtransformers</td><td>vit-small</td><td>flash</td>" in run


def test_the_numbers_are_the_recorded_ones(tmp_path, pngs):
    page, verdicts = build(tmp_path, pngs, grid_records())
    cells = page[page.index('id="cells"') : page.index('id="data-qc"')]
    assert cells.count("<tr") == 1 + 12  # header + every configured cell
    assert ">300</td>" in cells and ">900</td>" in cells  # images/s of the two flash cells
    assert cells.count(">OOM</td>") == 1 and cells.count(">not run</td>") == 7
    assert "CUDA out of memory" in cells
    headline = page[page.index('id="headline"') : page.index('id="claims"')]
    assert "12 cells configured: 4 ok, 1 OOM, 7 not run." in headline
    assert re.search(r"3\.00x \[2\.\d\d, 3\.\d\d\] \(img512_p16 vs materialised", headline)
    assert re.search(r"3\.33x \[3\.\d\d, 3\.\d\d\] \(img512_p16 vs hf-eager", headline)
    assert "95% bootstrap intervals over timing windows" in headline and "unstable" not in headline
    assert "3.00x the peak memory of flash at img512_p16" in headline
    # every claim row with the verdict claims.evaluate gave
    table = page[page.index('id="claims"') : page.index('id="figures"')]
    assert table.count("<tr") == 1 + len(verdicts)
    for verdict in verdicts["verdict"]:
        assert f"verdict-{verdict.replace(' ', '-')}" in table
    p16 = verdicts.set_index("claim").loc["flash speed-up over the baseline, patch 16"]
    assert p16["verdict"] == claims.REPRODUCED and p16["measured"] == "3.33x"


def test_two_alike_models_are_indistinguishable_and_none_is_best(tmp_path, pngs):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 40)
    noise = rng.uniform(0, 1, 40)
    scored = []
    for variant, shift in (("flash", 0.0), ("materialised", 0.001)):
        probability = np.clip(0.2 * label + noise + shift, 0, 1)
        scored.append(record("xe9680", variant, 384, 16, auc=stats.roc_auc(label, probability)))
        run = tmp_path / "runs" / files.cell_name("xe9680", variant, 384, 16)
        run.mkdir(parents=True)
        frame = pd.DataFrame(
            {
                "patient_id": np.arange(40) // 2,
                "laterality": ["L", "R"] * 20,
                "label": label,
                "probability": probability,
            }
        )
        files.PREDICTION_TABLE.write(frame, run / files.PREDICTIONS)
    page, _ = build(tmp_path, pngs, [*grid_records(), record("xe9680", "flash", 384, 32, spread=0.3), *scored])
    headline = page[page.index('id="headline"') : page.index('id="claims"')]
    assert "Validation AUC of xe9680/flash/img384_p16: " in headline and "interval over patients" in headline
    assert "flash vs materialised (xe9680, img384_p16): AUC difference" in headline
    assert "indistinguishable" in headline and "Best validation AUC" not in headline
    assert "1 cell(s) with unstable timing" in headline and "xe9680/flash/img384_p32" in headline
    cells = page[page.index('id="cells"') : page.index('id="data-qc"')]
    assert "images/s, 95% interval" in cells and ", unstable</td>" in cells and "val AUC, 95% interval" in cells


def test_the_reference_cells_profile_is_shown_under_the_figures(tmp_path, pngs):
    operators = files.OPERATOR_TABLE.frame(
        {"name": f"aten::op{i}", "calls": i + 1, "self_cpu_s": 1.0 / (i + 1), "self_device_s": None} for i in range(12)
    )
    files.OPERATOR_TABLE.write(operators, tmp_path / "operators.csv")
    profile = {
        "figure": pngs[0]["fig2_hardware"],
        "operators": tmp_path / "operators.csv",
        "cell": "xe9680/flash/img512_p16",
        "trace": "results/profiles/xe9680/flash/img512_p16/trace.pt.trace.json",
    }
    page, _ = build(tmp_path, pngs, grid_records(), profile=profile)
    figures = page[page.index('id="figures"') : page.index('id="plan"')]
    assert 'id="figure-profile"' in figures and "reference cell (xe9680/flash/img512_p16)" in figures
    assert "trace.pt.trace.json" in figures and "aten::op9" in figures and "aten::op10" not in figures
    assert 'id="figure-profile"' not in build(tmp_path / "none", pngs, grid_records())[0]


def test_the_plan_is_shown_beside_what_each_cell_did(tmp_path, pngs):
    cells = grid.cells([384, 512], [16, 32], VARIANTS, ["xe9680"])
    rows = [
        {
            **cell._asdict(),
            "seq_len": (cell.image_size // cell.patch_size) ** 2,
            "mode": "throughput",
            "device": "cuda",
            "world_size": 8,
            "micro_batch": 16,
            "grad_accum": 12,
            "predicted_peak_bytes": 300 * 2**30 if cell.variant == "hf-eager" and cell.patch_size == 16 else 5 * 2**30,
            "memory_limit_bytes": 72 * 2**30,
            "fits": not (cell.variant == "hf-eager" and cell.patch_size == 16),
            "data_bytes": 2 * 10**9,
            "data_on_device": cell.image_size == 384,
            "submitted": not (cell.variant == "hf-eager" and cell.patch_size == 16),
            "flops_per_img": 10**12,
            "steps": 4,
            "images": 6144,
            "gpu_hours": 0.25,
            "predicted_hours": 0.25 / 8,
            "time_limit_hours": 48.0,
            "signal_before_limit_s": 300,
            "mfu": 0.35,
            "runs": 3 if cell.variant == "flash" else 1,  # train.seeds: 3, the flash cells in full mode
        }
        for cell in cells
    ]
    files.PLAN_TABLE.write(files.PLAN_TABLE.frame(rows), tmp_path / "plan.csv")
    page, verdicts = build(tmp_path, pngs, grid_records(), plan=tmp_path / "plan.csv")
    section = page[page.index('id="plan"') : page.index('id="cells"')]
    assert "12 cells planned before any ran: 10 fit their device at the planned micro-batch, 2 predicted" in section
    assert "Predicted cost of the 10 submitted GPU cells: 4.5 GPU-hours at 35% MFU" in section  # 4 x 3 + 6 runs
    assert section.count("<tr") == 1 + 12 and section.count(">predicted OOM</td>") == 2
    assert ">300</td>" in section and ">72</td>" in section  # predicted and allowed GiB
    assert ">2</td>" in section  # the measured peak of the flash img512_p16 cell, GiB
    assert section.count(">device</td>") == 6 and section.count(">host (loader)</td>") == 6 and ">48</td>" in section
    assert "which cells fit in memory, baseline (hf-eager), predicted" in set(verdicts["claim"])


def test_data_qc_and_provenance(tmp_path, pngs):
    page, _ = build(tmp_path, pngs, grid_records())
    qc = page[page.index('id="data-qc"') : page.index('id="provenance"')]
    for text in (
        "breasts (CC + MLO pairs): 23,000",
        "missing_cc: 12",
        "truncated: 2",
        "flip disagreements (CSV laterality vs tissue side): 5",
        "images listed: 54,706",
    ):
        assert text in qc
    provenance = page[page.index('id="provenance"') :]
    assert "81234" in provenance and "81235" in provenance and "0123abc" in provenance
    assert "2.13.0" in provenance and "NVIDIA A100-SXM4-80GB" in provenance
    assert "<td>0,1,2,3 / 0,1,2,3</td>" in provenance  # the job's GPUs from SLURM and CUDA
    # the preprocessing's versions beside the training's: pydicom and every codec that ran
    assert "pydicom: 3.0.2" in provenance and "git_commit: 4567def" in provenance
    assert "pylibjpeg-libjpeg 2.5.0 (21,000 images), pylibjpeg-openjpeg 2.6.0 (25,000 images)" in provenance
    target = str(tmp_path / "runs" / "xe9680" / "flash" / "img512_p16")
    assert f"snakemake --profile slurm --configfile config/paper.yaml --force {target}/metrics.json" in provenance
    assert f"python -m mammoscale.train --cell {target}/cell.yaml --out {target}" in provenance
    # a cell without a SLURM job reruns locally
    local = str(tmp_path / "runs" / "xe9680" / "materialised" / "img384_p16")
    assert f"snakemake --cores all --configfile config/paper.yaml --force {local}/metrics.json" in provenance
    run = page[page.index('id="run"') : page.index('id="headline"')]
    assert "seed: 2023" in run and "config/paper.yaml" in run and "8x A100" in run
    assert "<td>hf-eager</td><td>hf</td><td>vit-base</td><td>eager</td>" in run  # family, model, attention


def test_text_from_records_is_escaped(tmp_path, pngs):
    page, _ = build(tmp_path, pngs, [record("xe9680", "flash", 512, 16, "failed", message="<script>x</script>")])
    check(page)
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_snapshot_draws_the_report_of_what_finished_so_far(tmp_path):
    runs_root = tmp_path / "runs"
    write(runs_root, record("xe9680", "flash", 512, 16, throughput=300.0))
    write(runs_root, record("xe9680", "hf-eager", 512, 16, "failed", message="loss nan"), files.FAILED_METRICS)
    cells = grid.cells([384, 512], [16, 32], VARIANTS, ["xe9680"])
    out = tmp_path / "snapshot"
    missing = str(tmp_path / "nothing")
    snapshot(
        out,
        cells=cells,
        variants=VARIANTS,
        runs_root=runs_root,
        pipeline={"stage1": [("0000", missing, missing)], "stage2": [(512, "0000", missing, missing)]},
        contact_sheets={512: missing},
        manifest_counts=missing,
        preprocess_summary=missing,
        context=Context(RUN_CONFIG, REFERENCE, None, 0.15, "snakemake {profile}"),
        dpi=40,
        vector_format="pdf",
        profile={"figure": missing, "operators": missing, "cell": "xe9680/flash/img512_p16", "trace": missing},
    )
    page = (out / "report.html").read_text()
    check(page)
    assert "snapshot of the cells finished so far" in page
    assert 'id="figure-profile"' not in page  # the reference cell is not profiled yet: nothing to show
    assert "12 cells configured: 1 ok, 1 failed, 10 not run." in page and "loss nan" in page
    assert sorted(p.name for p in (out / "figures").glob("*.pdf")) == sorted(f"{n}.pdf" for n in captions.FIGURES)
    runs = files.read_runs(out / "runs.csv")
    assert list(runs["status"]).count("ok") == 1 and list(runs["status"]).count("failed") == 1


def test_commits_are_shortened_in_the_table_and_kept_whole_in_its_title():
    commit = "f2eb32b748dc179ce3c5e575879cb61a3f4ec27d"
    assert sections._short(commit) == "f2eb32b748dc" and sections._short(commit + "+dirty") == "f2eb32b748dc+dirty"
    assert sections._short(None) is None


def scored_cell(runs_root, variant: str, size: int, patch, probability, label) -> dict:
    """A full-mode cell's record and its predictions.csv: 40 breasts of 20 patients."""
    run = runs_root / files.cell_name("xe9680", variant, size, patch)
    run.mkdir(parents=True)
    frame = pd.DataFrame(
        {"patient_id": np.arange(40) // 2, "laterality": ["L", "R"] * 20, "label": label, "probability": probability}
    )
    files.PREDICTION_TABLE.write(frame, run / files.PREDICTIONS)
    return record("xe9680", variant, size, patch, auc=stats.roc_auc(label, probability))


def test_a_cnn_beside_the_vits_is_named_by_its_image_size_and_compared_where_it_saw_the_same_breasts(tmp_path, pngs):
    """DenseNet-121's cells are ``img<S>`` everywhere in the report; scored at 384 px it is compared, paired, with
    each vision transformer scored at 384 px whatever its patch size (the same breasts), and the sentence says so."""
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 40)
    noise = rng.uniform(0, 1, 40)
    variants = {**VARIANTS, **CNN}
    runs_root = tmp_path / "runs"
    scored = [
        scored_cell(runs_root, "flash", 384, 16, np.clip(0.1 * label + noise, 0, 1), label),
        scored_cell(runs_root, "flash", 384, 32, np.clip(0.1 * label + noise[::-1], 0, 1), label),
        scored_cell(runs_root, "densenet", 384, None, 0.6 * label + 0.4 * noise, label),
    ]
    cnn = [record("xe9680", "densenet", 512, None, throughput=450.0, peak=3 * 2**30)]
    cells = grid.cells([384, 512], [16, 32], variants, ["xe9680"])
    plan = [
        {**cell._asdict(), "seq_len": None if cell.patch_size is None else (cell.image_size // cell.patch_size) ** 2}
        | {"mode": "throughput", "device": "cuda", "world_size": 8, "micro_batch": 16, "grad_accum": 1}
        | {"predicted_peak_bytes": 4 * 2**30, "memory_limit_bytes": 72 * 2**30, "fits": True, "data_bytes": 10**9}
        | {"submitted": True, "flops_per_img": 10**12, "steps": 4, "images": 6144, "signal_before_limit_s": 300}
        | {"gpu_hours": 0.1, "mfu": 0.35, "runs": 1}
        for cell in cells
    ]
    files.PLAN_TABLE.write(files.PLAN_TABLE.frame(plan), tmp_path / "plan.csv")
    page, verdicts = build(
        tmp_path, pngs, [*grid_records(), *scored, *cnn], variants=variants, plan=tmp_path / "plan.csv"
    )
    check(page)
    compared = files.QUALITY_TABLE.read(tmp_path / "quality.csv")
    auc = compared[compared["metric"] == "auc"].set_index("patch_size")
    assert list(auc.index) == [16, 32] and set(auc["variant_b"]) == {"densenet"}  # no flash p16 vs p32 pair
    assert set(auc["verdict"]) == {"densenet better"}
    headline = page[page.index('id="headline"') : page.index('id="claims"')]
    assert "Validation AUC of xe9680/densenet/img384: " in headline
    assert (
        "flash vs densenet (xe9680, img384_p16 vs img384, the same validation set at the same image size): "
        "AUC difference -0." in headline
    )
    assert "flash vs densenet (xe9680, img384_p32 vs img384, the same validation set" in headline
    assert "Best validation AUC at xe9680, img384 (patch 16 for the vision transformers): densenet" in headline
    assert "densenet: largest image that ran img512." in headline
    assert "14 cells configured: 8 ok, 1 OOM, 5 not run." in headline
    run = page[page.index('id="run"') : page.index('id="headline"')]
    assert "14 cells (hardware x variant x image x patch where the patch divides the image; densenet, without " in run
    assert "<td>densenet</td><td>densenet</td><td>densenet-121</td><td>none</td><td>none observed</td>" in run
    cells_ = page[page.index('id="cells"') : page.index('id="data-qc"')]
    assert '<td>xe9680</td><td>densenet</td><td class="num">512</td><td></td><td></td><td>ok</td>' in cells_
    section = page[page.index('id="plan"') : page.index('id="cells"')]
    assert '<td>densenet</td><td class="num">512</td><td></td><td></td><td>throughput</td>' in section
    assert ">3</td>" in section  # the CNN's measured peak beside its plan, GiB
    provenance = page[page.index('id="provenance"') :]
    assert "<td>xe9680/densenet/img384</td>" in provenance
    assert f"--force {tmp_path / 'runs' / 'xe9680' / 'densenet' / 'img512'}/metrics.json" in provenance
    _, alone = build(tmp_path / "vits", pngs, [*grid_records(), *scored[:2]], plan=tmp_path / "plan.csv")
    pd.testing.assert_frame_equal(verdicts, alone)  # the claims are the ViTs' alone


def snapshot_of(tmp_path, variants: dict, image_sizes: list[int], reference: dict = REFERENCE, task=BREAST_CANCER):
    """The snapshot (SVG figures) of the records under ``tmp_path/runs``, of a grid of ``variants`` on xe9680: its
    folder, and the claims it judged."""
    missing = str(tmp_path / "nothing")
    out = tmp_path / "snapshot"
    verdicts = snapshot(
        out,
        cells=grid.cells(image_sizes, [16, 32], variants, ["xe9680"]),
        variants=variants,
        runs_root=tmp_path / "runs",
        pipeline={"stage1": [], "stage2": []},
        contact_sheets={},
        manifest_counts=missing,
        preprocess_summary=missing,
        context=Context(
            {**RUN_CONFIG, "grid": {**RUN_CONFIG["grid"], "variants": variants}},
            reference,
            None,
            0.15,
            "x",
            task=task.name,
        ),
        dpi=40,
        vector_format="svg",
    )
    return out, verdicts


def test_a_snapshot_draws_every_figure_with_a_cnn_and_names_its_cells_by_image_size(tmp_path):
    runs_root = tmp_path / "runs"
    variants = {"flash": VARIANTS["flash"], **CNN}
    write(runs_root, record("xe9680", "flash", 512, 16, throughput=300.0))
    write(runs_root, record("xe9680", "densenet", 512, None, throughput=450.0))
    write(runs_root, record("xe9680", "densenet", 384, None, "failed", message="loss nan"), files.FAILED_METRICS)
    out, _ = snapshot_of(tmp_path, variants, [384, 512])
    page = (out / "report.html").read_text()
    check(page)
    assert "6 cells configured: 2 ok, 1 failed, 3 not run." in page
    assert (
        "<td>xe9680/densenet/img512</td>" in page and "<td>xe9680/densenet/img384</td>" in page and "loss nan" in page
    )
    assert sorted(p.name for p in (out / "figures").glob("*.svg")) == sorted(f"{n}.svg" for n in captions.FIGURES)
    runs = files.read_runs(out / "runs.csv")
    assert runs.loc[runs["variant"] == "densenet", "run_dir"].str.endswith(("img384", "img512")).all()


def test_a_grid_of_cnns_alone_leaves_out_the_figures_about_patches_and_attention():
    assert captions.drawn(VARIANTS) == captions.FIGURES and captions.left_out(VARIANTS) == {}
    assert captions.drawn({**VARIANTS, **CNN}) == captions.FIGURES  # one ViT is enough
    assert captions.drawn(CNN) == tuple(n for n in captions.FIGURES if n not in captions.SUBJECTS)
    assert captions.left_out(CNN) == {
        "fig3_patch_size": "no variant of grid.variants has a patch size (families: densenet)",
        "fig4_flash_vs_baseline": "no variant of grid.variants has an attention kernel (families: densenet)",
    }


def test_a_chest_study_of_cnns_alone_draws_the_figures_about_them_and_says_which_it_leaves_out(tmp_path):
    write(tmp_path / "runs", record("xe9680", "densenet", 512, None, throughput=450.0))
    reference = {**REFERENCE, "variant": "densenet", "patch_size": None}
    out, verdicts = snapshot_of(tmp_path, CNN, [512], reference=reference, task=CHEST_FINDINGS)
    page = (out / "report.html").read_text()
    # the Flash Attention study's claims are not this task's: none judged, none counted in the headline
    assert verdicts.empty and "Published claims:" not in page and "Flash Attention study" not in page
    assert "patch sizes none (no variant has patches); 1 cells (hardware x variant x image size)" in page
    check(page)
    assert sorted(p.stem for p in (out / "figures").glob("*.png")) == sorted(captions.drawn(CNN))
    assert 'id="figure-fig4_flash_vs_baseline"' not in page and 'id="figure-fig2_hardware"' in page
    assert "Not drawn: <code>fig3_patch_size</code>, as no variant of grid.variants has a patch size" in page
    assert "<code>fig4_flash_vs_baseline</code>, as no variant of grid.variants has an attention kernel" in page
