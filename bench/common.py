"""What every benchmark shares: percentiles, the machine, and docs/benchmarks.md."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "benchmarks.md"

HEADER = """# Benchmarks

Real runs of `make bench` on the embedded stack (targets: docs/contract.md). Each figure sits
beside a baseline measured in the same run on the same machine. Benchmarks are
never run as tests. Each section below is rewritten by the benchmark that owns it.
"""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    """Median, p99 and max of durations given in seconds, in milliseconds."""
    return {
        "n": float(len(values_s)),
        "p50": statistics.median(values_s) * 1000 if values_s else float("nan"),
        "p99": percentile(values_s, 99) * 1000,
        "max": max(values_s) * 1000 if values_s else float("nan"),
    }


def machine() -> str:
    """One line about where the figures come from."""
    return (
        f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"{platform.system()} {platform.release()} · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


def write_section(title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of docs/benchmarks.md."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    text = REPORT.read_text() if REPORT.exists() else HEADER
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    REPORT.write_text(text)
