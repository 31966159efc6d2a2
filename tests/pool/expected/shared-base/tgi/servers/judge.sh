#!/usr/bin/env bash
# judge on port 8102
cd "$(dirname "$0")/.."
exec docker run \
  --rm \
  --shm-size 1g \
  -p 127.0.0.1:8102:80 \
  -v "$(cd artifacts/judge && pwd):/models/0:ro" ghcr.io/huggingface/text-generation-inference:3.3.6 \
  --model-id /models/0/model \
  --max-input-tokens 2047 \
  --max-total-tokens 2048
