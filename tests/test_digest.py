"""The digest that reruns tables, figures and report when the code making them changes, found from imports."""

from __future__ import annotations

import shutil

from mammoscale.plan import digest


def test_the_digest_covers_the_report_subpackage_and_what_it_imports(tmp_path):
    package = tmp_path / "mammoscale"
    shutil.copytree(digest.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = digest.digest(package=package)
    assert before == digest.digest() and len(before) == 16
    covered = digest.closure("mammoscale.report", package)
    assert {
        "mammoscale.report.figures",
        "mammoscale.report.page",
        "mammoscale.report.tables",
        "mammoscale.files",
        "mammoscale.plan.grid",
        "mammoscale.plan.vit",
        "mammoscale.errors",
    } <= set(covered)
    assert not [name for name in covered if name.startswith("mammoscale.train")]

    def changed(relative: str) -> bool:
        path = package / relative
        original = path.read_text()
        path.write_text(original + "\n# a change\n")
        try:
            return digest.digest(package=package) != before
        finally:
            path.write_text(original)

    assert changed("report/figures.py")  # how a figure is drawn
    assert changed("plan/grid.py")  # role() and Cell, which the tables use, imported by report.tables
    assert changed("files.py")  # the columns the tables read
    assert not changed("train/loop.py")  # training code: cells are forced, not redrawn
    assert not changed("dicom/decode.py")
