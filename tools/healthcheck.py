"""Container healthcheck: exit 0 when the local service answers 200 on a path.

The slim image has no curl, so the Dockerfile and docker-compose.yml run
``python -m tools.healthcheck /readyz`` instead.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def check(url: str, *, timeout_s: float = 2.0) -> bool:
    """Whether ``url`` answers 200 within ``timeout_s``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    """Check ``http://127.0.0.1:$PORT<path>``; the path defaults to ``/healthz``."""
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "/healthz"
    port = os.environ.get("PORT", "8000")
    return 0 if check(f"http://127.0.0.1:{port}{path}") else 1


if __name__ == "__main__":
    raise SystemExit(main())
