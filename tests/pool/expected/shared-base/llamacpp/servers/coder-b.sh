#!/usr/bin/env bash
# coder-b on port 8102
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" \
  -m llama_cpp.server \
  --model artifacts/base/gguf/base-F16.gguf \
  --lora_path artifacts/lora-b/gguf/b-LoRA.gguf \
  --model_alias coder-b \
  --host 127.0.0.1 \
  --port 8102 \
  --n_ctx 4096 \
  --interrupt_requests false
