#!/usr/bin/env bash
# alpha on port 8101
cd "$(dirname "$0")/.."
exec vllm serve artifacts/alpha/safetensors \
  --host 127.0.0.1 \
  --port 8101 \
  --served-model-name alpha \
  --max-model-len 4096 \
  --chat-template templates/alpha.jinja \
  --enable-auto-tool-choice \
  --tool-call-parser llama3_json
