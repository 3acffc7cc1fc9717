# The README's two commands. Everything else here is a step they run.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

# `make test` always runs against real services; these are the local defaults (override by env).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/modelworks
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# pytest-xdist workers (each its own test database and Redis database: the next after TEST_REDIS_URL's, mod 16).
TEST_WORKERS ?= 2

.PHONY: run test install install-runtime lint services clean

# Two installs, two stamps: `make run` needs only the runtime dependencies; `make test` adds the dev extras (test
# tools, ONNX, tritonclient, ...), which it installs even after a `make run`. The dev install includes the runtime one.
CLIENT_PYPROJECT := modelworks_client/pyproject.toml

$(VENV)/.installed-runtime: pyproject.toml $(CLIENT_PYPROJECT)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	@# the Python client (modelworks_client/, its own package)
	$(PY) -m pip install --quiet -e ./modelworks_client
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(CLIENT_PYPROJECT)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet -e ./modelworks_client
	@touch $@ $(VENV)/.installed-runtime

install-runtime: $(VENV)/.installed-runtime

install: $(VENV)/.installed-dev

run: install-runtime
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
		$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --durations=20

clean:
	rm -rf $(VENV) var .pytest_cache *.egg-info
