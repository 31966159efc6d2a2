# `make demo` and `make test` work from a fresh clone: they create .venv, install the pinned
# versions (constraints.txt), then run. torch==2.13.0 is the CPU build found on this machine's disk.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
FT := $(VENV)/bin/finetune
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(FT) tiny-model --arch llama --tokenizer data/tokenizers/ggml-vocab-llama-bpe.gguf --out runs/tiny-llama
	$(FT) validate recipes/tiny/traces.yaml
	$(FT) data prepare recipes/tiny/traces.yaml
	$(FT) data inspect runs/tiny-data --n 2 --plain
	rm -rf runs/tiny-train
	$(FT) train recipes/tiny/traces.yaml train.datasets='[{path: runs/tiny-data}]'
	@echo "demo done: model runs/tiny-llama, dataset runs/tiny-data, run folder runs/tiny-train"

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check finetune tests benchmarks

clean:
	rm -rf $(VENV) runs
