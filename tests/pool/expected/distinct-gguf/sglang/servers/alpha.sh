#!/usr/bin/env bash
# alpha on port 8101
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" \
  -m sglang.launch_server \
  --model-path artifacts/alpha/safetensors \
  --host 127.0.0.1 \
  --port 8101 \
  --served-model-name alpha \
  --context-length 4096 \
  --chat-template templates/alpha.jinja \
  --tool-call-parser llama3
