#!/usr/bin/env bash
# beta on port 8102
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" \
  -m sglang.launch_server \
  --model-path artifacts/beta/safetensors \
  --host 127.0.0.1 \
  --port 8102 \
  --served-model-name beta \
  --context-length 4096 \
  --chat-template templates/beta.jinja \
  --tool-call-parser llama3
