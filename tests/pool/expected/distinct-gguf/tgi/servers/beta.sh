#!/usr/bin/env bash
# beta on port 8102
cd "$(dirname "$0")/.."
exec docker run \
  --rm \
  --shm-size 1g \
  -p 127.0.0.1:8102:80 \
  -v "$(cd artifacts/beta && pwd):/models/0:ro" ghcr.io/huggingface/text-generation-inference:3.3.6 \
  --model-id /models/0/safetensors \
  --max-input-tokens 4095 \
  --max-total-tokens 4096
