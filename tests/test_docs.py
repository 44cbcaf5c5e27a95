"""The user docs: the README stays a guide (at most 300 lines) and every link resolves inside
the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").rglob("*.md"))]


def test_the_readme_is_at_most_300_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_every_link_resolves_inside_the_repository():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://|#|mailto:", target):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists() or ROOT not in path.parents:
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_nothing_points_outside_the_repository():
    for page in [*PAGES, *ROOT.glob("*/**/*.py")]:
        if ".venv" in page.parts or page == Path(__file__).resolve():
            continue
        text = page.read_text()
        assert "../" + "shared" not in text and "DESIGN" + ".md" not in text, page
