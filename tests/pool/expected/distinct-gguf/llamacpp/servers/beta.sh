#!/usr/bin/env bash
# beta on port 8102
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" \
  -m llama_cpp.server \
  --model artifacts/beta/gguf/beta-Q8_0.gguf \
  --model_alias beta \
  --host 127.0.0.1 \
  --port 8102 \
  --n_ctx 4096 \
  --interrupt_requests false
