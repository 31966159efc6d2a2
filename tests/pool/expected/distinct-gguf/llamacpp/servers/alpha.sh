#!/usr/bin/env bash
# alpha on port 8101
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" \
  -m llama_cpp.server \
  --model artifacts/alpha/gguf/alpha-Q4_K_M.gguf \
  --model_alias alpha \
  --host 127.0.0.1 \
  --port 8101 \
  --n_ctx 4096 \
  --interrupt_requests false
