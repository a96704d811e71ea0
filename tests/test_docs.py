"""The docs cannot drift: every setting is documented, the README lists exactly the operations served."""

from __future__ import annotations

import re
from pathlib import Path

from kindling import settings
from kindling.frontend.handlers import HANDLERS

ROOT = Path(__file__).resolve().parents[1]


def test_settings_doc_is_generated_from_the_table():
    assert (ROOT / "docs" / "settings.md").read_text() == settings.markdown(), \
        "run: kindling settings-doc > docs/settings.md"


def test_readme_lists_the_supported_operations():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Supported API operations", 1)[1].split("\n## ", 1)[0]
    listed = {name.strip() for row in re.findall(r"^\| ([A-Z][^|]+) \|", table, re.M) for name in row.split("/")}
    assert listed == set(HANDLERS)
