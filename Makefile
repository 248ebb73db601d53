# Two entry points for a fresh machine (Python 3.11): `make reproduce` and `make test`.
# Both create (or reuse) the virtual environment in .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PROFILE ?= cpu

.PHONY: install reproduce test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed

reproduce: $(VENV)/.installed        ## run every notebook headless, figures into reports/
	$(PY) -m cxrnb reproduce --profile $(PROFILE)

test: $(VENV)/.installed             ## the test suite (real-data tests need CXR14_ROOT)
	$(PY) -m pytest -q -n 2 --timeout 600 tests

lint: $(VENV)/.installed             ## ruff, configured in pyproject.toml
	$(VENV)/bin/ruff check cxrnb tests docs

clean:
	rm -rf $(VENV) data/cache reports/runs
