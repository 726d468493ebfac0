"""The digest that reruns tables, figures and report when the code drawing them changes."""

from __future__ import annotations

import shutil

from mammoscale import code_version


def test_the_digest_follows_the_source_of_the_post_cell_modules(tmp_path):
    for name in code_version.POST_CELL:
        shutil.copy(code_version.PACKAGE / f"{name}.py", tmp_path)
    before = code_version.digest(package=tmp_path)
    assert before == code_version.digest() and len(before) == 16
    with (tmp_path / "figures.py").open("a") as source:
        source.write("\n# a change to how figures are drawn\n")
    assert code_version.digest(package=tmp_path) != before
    assert code_version.digest(("aggregate",), package=tmp_path) == code_version.digest(("aggregate",))
