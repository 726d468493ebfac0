"""The documentation a newcomer reads: a short README whose every link, and every docs/ page's, leads somewhere."""

from __future__ import annotations

import re

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_readme_is_read_in_five_minutes_and_opens_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert text.index("make run") < text.index("make test") < text.index("## ")


def test_every_relative_link_leads_to_a_file_and_every_anchor_to_a_heading():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.suffix == ".md":
                headings = {
                    re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-")
                    for h in re.findall(r"^#+ (.+)$", linked.read_text(), re.MULTILINE)
                }
                if anchor not in headings:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert len(PAGES) >= 10 and broken == []


def test_the_training_page_names_every_kernel_a_record_can_hold():
    """docs/training.md lists the kernel names of ``attention_backend`` as the code writes them, and no other."""
    from mammoscale.plan import vit

    text = (REPO / "docs" / "training.md").read_text()
    listed = text[text.index("`attention_backend` names") :].split("\n\n")[0]
    names = {*vit.FUSED_BACKENDS, vit.UNFUSED_BACKEND, vit.NO_BACKEND}
    assert set(re.findall(r"`([a-z0-9 -]+)`", listed)) == names
