"""The console's message catalogues: both languages name the same keys, and every key the
pages use is in them, so no string is left to code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared.categories import load_category_labels

CONSOLE = Path(__file__).resolve().parents[2] / "services" / "dispatch" / "console"


def catalogue(language: str) -> dict[str, str]:
    """One language's messages."""
    loaded: dict[str, str] = json.loads((CONSOLE / "i18n" / f"{language}.json").read_text())
    return loaded


def used_keys() -> set[str]:
    """The literal keys the scripts and pages ask for."""
    keys: set[str] = set()
    for script in ("console.js", "team.js", "coverage.js", "i18n.js"):
        keys |= set(re.findall(r'(?<![\w$])t\("([^"]+)"', (CONSOLE / script).read_text()))
    for page in ("index.html", "team.html"):
        text = (CONSOLE / page).read_text()
        keys |= set(re.findall(r'data-i18n="([^"]+)"', text))
        for pairs in re.findall(r'data-i18n-attr="([^"]+)"', text):
            keys |= {pair.split("=")[1] for pair in pairs.split(";")}
    return keys


def test_both_languages_have_the_same_keys() -> None:
    assert set(catalogue("en")) == set(catalogue("zh-CN"))


def test_every_key_the_pages_use_is_in_the_catalogues() -> None:
    assert used_keys() - set(catalogue("en")) == set()


def test_every_category_has_a_chinese_and_an_english_name() -> None:
    from services.intake.settings import DEFAULT_CATEGORIES

    labels = load_category_labels()
    for category in DEFAULT_CATEGORIES:
        assert labels[category]["en"], category
        assert labels[category]["zh-CN"], category
