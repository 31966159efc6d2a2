"""Export: merged safetensors, adapter, GGUF (llama.cpp) and NF4 artifacts, verified and checksummed."""
