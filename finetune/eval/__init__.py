"""``finetune eval``: contenders side by side on held-out tool calls and executed code (see run.py)."""
