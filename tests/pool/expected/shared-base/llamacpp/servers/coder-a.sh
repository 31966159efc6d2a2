#!/usr/bin/env bash
# coder-a on port 8101
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" \
  -m llama_cpp.server \
  --model artifacts/base/gguf/base-F16.gguf \
  --lora_path artifacts/lora-a/gguf/a-LoRA.gguf \
  --model_alias coder-a \
  --host 127.0.0.1 \
  --port 8101 \
  --n_ctx 4096 \
  --interrupt_requests false
