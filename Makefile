# The two commands of the quick start. Each creates or refreshes .venv itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# On the project's machines this resolves to a local CPU wheel; elsewhere pip picks a build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m decoptim demo

test: $(VENV)/.installed
	$(PY) -m ruff check src tests bench
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/cpu.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build src/*.egg-info
