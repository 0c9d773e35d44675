# The two commands a newcomer needs: `make run` starts the registry, `make test` runs the tests.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench setup delivery-test
$(VENV)/.ready: pyproject.toml poetry.lock scripts/setup-venv.sh
	scripts/setup-venv.sh
	touch $@

setup: $(VENV)/.ready

run: $(VENV)/.ready
	$(PY) -m registry

test: $(VENV)/.ready
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.ready
	$(PY) -m ruff check .
	$(PY) -m mypy

# The delivery stage (minutes; needs docker, docker-compose, debootstrap, podman): base images
# from Debian packages, the image, the compose stack with nginx, the reproducibility check.
delivery-test: $(VENV)/.ready
	$(PY) -m pytest -m delivery -rP tests/delivery $(PYTEST_ARGS)
