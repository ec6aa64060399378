"""``python -m tools.simulator``."""

from tools.simulator.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
