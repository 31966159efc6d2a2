"""Supervised fine-tuning (LoRA / QLoRA / DoRA / full) on TRL + PEFT + accelerate."""
