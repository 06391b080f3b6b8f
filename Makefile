# Self-installing entry points. The virtual environment is keyed by the lock file (and the
# package metadata): it is rebuilt only when one of them changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
LOCK := requirements/constraints.txt
ENV_KEY := $(shell cat $(LOCK) setup.cfg pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(ENV_KEY)
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: env demo test clean-env

env: $(STAMP)

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: env
	$(PY) tools/demo.py $(DEMO_ARGS)

test: env
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean-env:
	rm -rf $(VENV)
