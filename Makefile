# `make demo`: create .venv, install, train the demo xCos model on the embedded synthetic data.
# `make test`: create .venv if needed, install, run the test suite (what CI runs).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup demo test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $@

demo: setup
	$(PY) train.py fit --config configs/demo.yaml

test: setup
	$(PY) -m pytest -q
