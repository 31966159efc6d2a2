#!/usr/bin/env bash
# judge on port 8102
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" \
  -m sglang.launch_server \
  --model-path artifacts/judge/model \
  --host 127.0.0.1 \
  --port 8102 \
  --served-model-name judge \
  --context-length 2048 \
  --tool-call-parser qwen25
