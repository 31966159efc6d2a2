#!/usr/bin/env bash
# coder-a, coder-b on port 8101
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" \
  -m sglang.launch_server \
  --model-path artifacts/base/safetensors \
  --host 127.0.0.1 \
  --port 8101 \
  --served-model-name base \
  --context-length 4096 \
  --chat-template templates/base.jinja \
  --tool-call-parser qwen25 \
  --enable-lora \
  --max-loras-per-batch 2 \
  --lora-paths coder-a=artifacts/lora-a/adapter coder-b=artifacts/lora-b/adapter \
  --max-lora-rank 32
