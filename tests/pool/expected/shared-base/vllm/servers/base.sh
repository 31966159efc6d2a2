#!/usr/bin/env bash
# coder-a, coder-b on port 8101
cd "$(dirname "$0")/.."
exec vllm serve artifacts/base/safetensors \
  --host 127.0.0.1 \
  --port 8101 \
  --served-model-name base \
  --max-model-len 4096 \
  --chat-template templates/base.jinja \
  --enable-auto-tool-choice \
  --tool-call-parser hermes \
  --enable-lora \
  --max-loras 2 \
  --lora-modules coder-a=artifacts/lora-a/adapter coder-b=artifacts/lora-b/adapter \
  --max-lora-rank 32
