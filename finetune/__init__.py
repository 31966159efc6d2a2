"""finetune: agent traces and code in, a fine-tuned Llama-family model and fusion pool out."""

__version__ = "0.13.0"


class FinetuneError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits 2, no traceback.

    Messages say what went wrong, where (file, line, YAML path) and the fix.
    """


class RecordError(Exception):
    """One record (a trace, a task, a problem) that cannot be used: it goes to the rejects file, and
    ``reason``, a short stable code, is counted in stats.json. Never shown as a traceback."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
