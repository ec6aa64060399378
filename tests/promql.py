"""Just enough PromQL reading to list the metric names an expression selects.

Prometheus itself parses every expression in the integration test
(tests/integration/test_dashboards_evaluate.py); this only has to find names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "atan2", "inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_REGEX = re.compile(r'__name__\s*=~\s*"((?:[^"\\]|\\.)*)"')
_NAME_EQUALS = re.compile(r'__name__\s*=\s*"([^"]*)"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?!\w)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*\w+\s*\)\s*$")


@dataclass(frozen=True)
class Selected:
    """Names an expression selects: plain names and ``__name__`` regexes."""

    names: frozenset[str]
    name_patterns: tuple[str, ...]


def selected(expr: str) -> Selected:
    """The metric names ``expr`` selects (Grafana ``$variables`` allowed)."""
    patterns = tuple(_NAME_REGEX.findall(expr))
    names = set(_NAME_EQUALS.findall(expr))
    text = _MATCHERS.sub(" ", _STRING.sub('""', _MATCHERS.sub(_keep_name_only, expr)))
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    for match in _IDENTIFIER.finditer(text):
        word = match.group(1)
        following = text[match.end() :].lstrip()
        if word.lower() in KEYWORDS or following.startswith("("):
            continue  # a keyword or a function
        names.add(word)
    return Selected(frozenset(names), patterns)


def _keep_name_only(match: re.Match[str]) -> str:
    # Label matchers hold label names, not metric names; __name__ is read beforehand.
    return "{}"


def label_values_metric(query: str) -> str | None:
    """The metric of a Grafana ``label_values(metric, label)`` variable query."""
    match = _LABEL_VALUES.match(query)
    return match.group(1) if match else None


def unknown_names(expr: str, known: frozenset[str]) -> Iterator[str]:
    """Names (or ``__name__`` patterns) in ``expr`` that select nothing ``known``."""
    found = selected(expr)
    yield from sorted(found.names - known)
    for pattern in found.name_patterns:
        if not any(re.fullmatch(pattern, name) for name in known):
            yield f"{{__name__=~{pattern!r}}}"
