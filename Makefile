# Quick-response dispatch. `make run` runs the whole system; `make test` runs the tests.
# Each target installs what it needs into the project's own virtual environment.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)

.PHONY: help venv run dlq chaos test screenshots test-unit test-integration test-e2e lint fmt token bench demo docs system-deps lock clean

help:
	@echo "make run     - run the whole system on the embedded stack (broker, Redis, SQLite)"
	@echo "make test    - install what the tests need, then run unit, integration and e2e suites"
	@echo "make lint    - ruff and mypy --strict"
	@echo "make screenshots - rerun the browser tests, writing the docs' screenshots"
	@echo "make token ROLE=<role> [SUB=<id>] [AUD='svc ...'] - print a signed token for the running stack"
	@echo "make bench   - run the benchmarks and write docs/benchmarks.md"
	@echo "make demo    - drive the running system with the city simulator"
	@echo "make docs    - regenerate docs/openapi/*.json and docs/asyncapi.json from the code"
	@echo "make chaos [ARGS='--database postgres'] - fault-injection run; writes docs/reliability.md"
	@echo "make dlq [ARGS='show <id>' | ARGS='replay --all'] - list, show or replay dead letters"

$(STAMP): requirements/main.txt requirements/dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	@$(UV) pip sync -q --python $(PY) requirements/main.txt requirements/dev.txt
	@touch $(STAMP)

CONSOLE := services/dispatch/console
CONSOLE_STAMP := $(CONSOLE)/node_modules/.package-lock.json

# Leaflet for the dispatcher console, from the npm registry, served locally by dispatch.
$(CONSOLE_STAMP): $(CONSOLE)/package.json $(CONSOLE)/package-lock.json
	@npm ci --prefix $(CONSOLE) --no-audit --no-fund --loglevel=error
	@touch $(CONSOLE_STAMP)

AXE := tests/e2e/axe
AXE_STAMP := $(AXE)/node_modules/.package-lock.json

# axe-core for the browser tests' accessibility checks (injected by Playwright, never served).
$(AXE_STAMP): $(AXE)/package.json $(AXE)/package-lock.json
	@npm ci --prefix $(AXE) --no-audit --no-fund --loglevel=error
	@touch $(AXE_STAMP)

WEB := web
WEB_STAMP := $(WEB)/node_modules/.package-lock.json

# Leaflet and axe-core for the citizen and responder apps (web/), from the npm registry.
$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	@npm ci --prefix $(WEB) --no-audit --no-fund --loglevel=error
	@touch $(WEB_STAMP)

venv: $(STAMP) $(CONSOLE_STAMP) $(AXE_STAMP) $(WEB_STAMP)

# Debian packages the tests drive: promtool (Prometheus rules) and Chromium (console tests).
system-deps:
	@bash tools/system_deps.sh

# The responder app (served by the locator, :8003) calls dispatch and notification on
# their own ports, so those allow its origin; behind the gateway all share one origin.
APP_ENV := CORS_ORIGINS='["http://127.0.0.1:8003","http://localhost:8003"]' \
	APP_DISPATCH_URL=http://127.0.0.1:8002 APP_NOTIFICATION_URL=http://127.0.0.1:8004 \
	RESPONDER_CHANNELS='["stream","push"]'

run: venv
	@$(APP_ENV) $(PY) -m tools.devstack

dlq: venv
	@$(PY) -m tools.dlq $(or $(ARGS),list)

chaos: venv
	@$(PY) -m tools.chaos $(ARGS)

token: venv
	@AUTH_SECRET="$${AUTH_SECRET:-$$(cat .run/auth_secret 2>/dev/null)}" $(PY) -m shared.auth --role "$(ROLE)" $(if $(SUB),--sub "$(SUB)",) $(foreach a,$(AUD),--aud "$(a)")

# Two worker processes, each taking whole test files: most of a test's time is spent
# waiting on the real broker, Redis and services, so two cores carry two at once.
PARALLEL := -n 2 --dist loadfile

test: venv system-deps
	@$(PY) -m pytest -q $(PARALLEL) tests/unit tests/integration tests/e2e

# The browser tests again, writing the screenshots the docs show into docs/.
screenshots: venv system-deps
	@UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/e2e/test_console.py tests/e2e/test_console_team.py tests/e2e/test_field_apps.py

test-unit: venv
	@$(PY) -m pytest -q tests/unit

test-integration: venv system-deps
	@$(PY) -m pytest -q $(PARALLEL) tests/integration

test-e2e: venv system-deps
	@$(PY) -m pytest -q $(PARALLEL) tests/e2e

lint: venv
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy shared services tools tests bench

fmt: venv
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

bench: venv
	@$(PY) -m bench

demo: venv
	@$(PY) -m tools.simulator

docs: venv
	@$(PY) -m tools.apidocs

lock:
	@$(UV) pip compile -q --python-version 3.11 requirements/main.in -o requirements/main.txt
	@$(UV) pip compile -q --python-version 3.11 requirements/dev.in -o requirements/dev.txt

clean:
	rm -rf .run test-output .pytest_cache .mypy_cache .ruff_cache
