# Two commands on a fresh machine with Python 3.11: `make demo` and `make test` (`make run`
# runs the service). Each makes .venv and installs the pinned requirements when they changed, and
# the project itself (editable, for the `arb` command line of arbitrage_client/);
# pip's output goes to .venv/pip.log and is shown only when the install fails.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: run test lint format migrate customer compose-check clean demo schemathesis bench-smoke

$(PY):
	@echo "creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt pyproject.toml | $(PY)
	@echo "installing the pinned requirements into $(VENV) (requirements.txt; log: $(VENV)/pip.log)"
	@$(PIP_INSTALL) -r requirements.txt > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(PIP_INSTALL) --no-deps -e . >> $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt pyproject.toml | $(PY)
	@echo "installing the pinned requirements into $(VENV) (requirements-dev.txt; log: $(VENV)/pip.log)"
	@$(PIP_INSTALL) -r requirements-dev.txt > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(PIP_INSTALL) --no-deps -e . >> $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@touch $@ $(VENV)/.runtime

## run: web (127.0.0.1:8000), Celery worker and beat on the configured mode; Ctrl-C stops all three
run: $(VENV)/.runtime
	$(PY) manage.py serve

## demo: the whole story on one machine (var/demo, free ports): quote, submit, migrate across clouds, bill; then stops
demo: $(VENV)/.runtime
	@$(PY) manage.py demo

## test: the whole suite (embedded default unless DATABASE_URL/REDIS_URL say otherwise)
test: $(VENV)/.dev
	.ci/ensure-chromium
	.ci/ensure-sandbox
	$(PY) -m pytest

## schemathesis: the API against its own OpenAPI schema, bounded (SCHEMATHESIS_MAX_EXAMPLES, SCHEMATHESIS_MAX_SECONDS)
schemathesis: $(VENV)/.dev
	.ci/schemathesis

## bench-smoke: bench/scale.py with 500 workloads (services: PostgreSQL and Redis on 127.0.0.1, or DATABASE_URL/REDIS_URL)
bench-smoke: $(VENV)/.dev
	$(PY) bench/scale.py --workloads 500 --boot-delay 30

## lint: ruff check and ruff format --check
lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

migrate: $(VENV)/.runtime
	$(PY) manage.py migrate

## customer NAME="Acme": create a customer and print its first API key
customer: $(VENV)/.runtime
	@test -n "$(NAME)" || { echo 'usage: make customer NAME="Acme"'; exit 2; }
	$(PY) manage.py migrate --verbosity 0
	$(PY) manage.py customer_create "$(NAME)"

compose-check:
	docker-compose config --quiet

clean:
	rm -rf var/test .pytest_cache .ruff_cache
