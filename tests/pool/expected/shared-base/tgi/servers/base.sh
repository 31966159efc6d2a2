#!/usr/bin/env bash
# coder-a, coder-b on port 8101
cd "$(dirname "$0")/.."
exec docker run \
  --rm \
  --shm-size 1g \
  -p 127.0.0.1:8101:80 \
  -v "$(cd artifacts/base && pwd):/models/0:ro" \
  -v "$(cd artifacts/lora-a && pwd):/models/1:ro" \
  -v "$(cd artifacts/lora-b && pwd):/models/2:ro" ghcr.io/huggingface/text-generation-inference:3.3.6 \
  --model-id /models/0/safetensors \
  --max-input-tokens 4095 \
  --max-total-tokens 4096 \
  --lora-adapters coder-a=/models/1/adapter,coder-b=/models/2/adapter
