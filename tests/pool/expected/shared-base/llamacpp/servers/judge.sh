#!/usr/bin/env bash
# judge on port 8103
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" \
  -m llama_cpp.server \
  --model artifacts/judge-export/gguf/judge-Q8_0.gguf \
  --model_alias judge \
  --host 127.0.0.1 \
  --port 8103 \
  --n_ctx 2048 \
  --interrupt_requests false
