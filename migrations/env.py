"""The Alembic environment shared by the four services.

``python -m tools.migrate`` picks the service; this file only hands over to it.
"""

from tools.migrate import run_environment

run_environment()
