#!/usr/bin/env bash
# judge on port 8102
cd "$(dirname "$0")/.."
exec vllm serve artifacts/judge/model \
  --host 127.0.0.1 \
  --port 8102 \
  --served-model-name judge \
  --max-model-len 2048 \
  --enable-auto-tool-choice \
  --tool-call-parser hermes
