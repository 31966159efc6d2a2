"""Rendering traces in worker processes, results in the order the traces were read.

``data prepare`` spends most of its time in the chat template and the tokenizer (``render.py``),
one trace at a time and independent of the others, so ``data.num_proc`` processes share it. The
reading, the duplicate check, the rejects and the spool stay in the calling process, in file
order, so the output is byte-identical whatever the number of processes. At most two chunks per
worker are in flight: a large corpus never sits in memory whole.

Workers are forked on Linux (as ``datasets.map(num_proc=...)`` does: they start at once, with the
modules already imported) and spawned elsewhere; either way they get the fitted tokenizer itself,
not its folder, so they render with exactly what the parent would. A forked tokenizer runs
single-threaded (its thread pool does not survive a fork), which is what a worker per core wants.

Example::

    with TraceRendering(tokenizer, max_seq_length=4096, processes=2) as rendering:
        for item, pieces in rendering.over(read_traces("traces.jsonl")):
            samples = pieces()  # the trace's samples, or the RecordError that rejects it
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator

from finetune import RecordError
from finetune.data.traces.read import TraceRecord
from finetune.data.traces.render import Renderer, Sample

CHUNK = 64  # traces per task: large enough that pickling is a small share, small enough to keep workers busy

_renderer: Renderer | None = None  # a worker's own


def _start(tokenizer) -> None:
    global _renderer
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker, and no warning about the fork
    _renderer = Renderer(tokenizer)


def _render_chunk(traces: list[dict | None], max_seq_length: int) -> list:
    """Each trace's samples as int32 arrays (cheap to send back), or its (reason, detail)."""
    import numpy as np

    out: list = []
    for trace in traces:
        if trace is None:  # a record already rejected while reading
            out.append(None)
            continue
        try:
            out.append([Sample(np.asarray(s.input_ids, np.int32), np.asarray(s.labels, np.int32), s.role_tokens)
                        for s in _renderer.render(trace, max_seq_length)])
        except RecordError as exc:
            out.append((exc.reason, exc.detail))
    return out


def _result(value) -> Callable[[], list[Sample]]:
    def pieces() -> list[Sample]:
        if isinstance(value, tuple):
            raise RecordError(*value)
        return value
    return pieces


class TraceRendering:
    """Renders traces inline (one process) or in ``processes`` workers, for ``over``."""

    def __init__(self, tokenizer, max_seq_length: int, processes: int = 1):
        self.max_seq_length = max_seq_length
        self.renderer = Renderer(tokenizer)  # in this process too: a template that cannot be used fails here
        self.pool = None
        if processes > 1:
            self.processes = processes
            self.pool = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn").Pool(processes, _start, (tokenizer,))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def over(self, items: Iterator[TraceRecord]) -> Iterator[tuple[TraceRecord, Callable[[], list[Sample]]]]:
        """(record, a call that returns its samples or raises its RecordError), in input order.
        Inline, a trace is rendered only when asked for (a duplicate never is)."""
        if self.pool is None:
            for item in items:
                yield item, (lambda t=item.trace: self.renderer.render(t, self.max_seq_length))
            return
        pending: deque = deque()  # (records, async result), oldest first
        chunk: list[TraceRecord] = []

        def submit():
            task = [None if it.error else it.trace for it in chunk]
            pending.append((list(chunk), self.pool.apply_async(_render_chunk, (task, self.max_seq_length))))
            chunk.clear()

        def drain():
            records, result = pending.popleft()
            for item, value in zip(records, result.get(), strict=True):
                yield item, _result(value)

        for item in items:
            chunk.append(item)
            if len(chunk) == CHUNK:
                submit()
                if len(pending) > 2 * self.processes:
                    yield from drain()
        if chunk:
            submit()
        while pending:
            yield from drain()
