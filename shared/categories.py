"""Report categories' display names in Chinese and English: one file for every front end.

The shipped names are in ``shared/category_labels.json``; ``CATEGORY_LABELS_PATH`` points a
service at a replacement with the same shape: ``{category: {language: name}}``. A category
without a name is shown by its key. English names are lower case, as they read mid-sentence;
a page capitalises them with CSS where they stand alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import TypeAdapter

SHIPPED_LABELS = Path(__file__).resolve().parent / "category_labels.json"

CategoryLabels = dict[str, dict[str, str]]
_LABELS = TypeAdapter(CategoryLabels)


def load_category_labels(path: str | Path | None = None) -> CategoryLabels:
    """The categories' names by language, from ``path`` or the shipped file."""
    source = Path(path) if path is not None else SHIPPED_LABELS
    return _LABELS.validate_python(json.loads(source.read_text(encoding="utf-8")))
