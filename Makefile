# The README's two commands. Everything else here is a step they run.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

# `make test` always runs against real services; these are the local defaults (override by env).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/modelworks
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# pytest-xdist workers (each its own test database and Redis database: the next after TEST_REDIS_URL's, mod 16).
TEST_WORKERS ?= 2

.PHONY: run test install lint services clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

run: install
	./bin/run-platform

services: install
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(PY) bin/ensure_services.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install services lint
	./bin/ensure_tools.sh
	DEBUG=1 DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
		$(PY) manage.py makemigrations --check --dry-run
	DEBUG=1 DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
		$(VENV)/bin/pytest -n $(TEST_WORKERS)

clean:
	rm -rf $(VENV) var .pytest_cache *.egg-info
