"""finetune: agent traces and code in, a fine-tuned Llama-family model and fusion pool out."""

__version__ = "0.8.0"


class FinetuneError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits 2, no traceback.

    Messages say what went wrong, where (file, line, YAML path) and the fix.
    """
