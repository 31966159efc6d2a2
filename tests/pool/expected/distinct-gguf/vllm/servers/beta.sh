#!/usr/bin/env bash
# beta on port 8102
cd "$(dirname "$0")/.."
exec vllm serve artifacts/beta/safetensors \
  --host 127.0.0.1 \
  --port 8102 \
  --served-model-name beta \
  --max-model-len 4096 \
  --chat-template templates/beta.jinja \
  --enable-auto-tool-choice \
  --tool-call-parser llama3_json
