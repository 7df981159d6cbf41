"""PNG encoding of finished generations, in a thread of its own: the generation thread takes the next job."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from webui.schema import GenerationResult
from webui.trace import in_context
from webui.worker.job_stages import Generated


class ResultEncoder:
    """Encodes results one at a time in the encoder thread; counts those under way.

    ``settle`` (the dispatch agent's) runs before a result is handed back, i.e. before its
    response frees the job's slot in HAProxy.
    """

    def __init__(self, encode: Callable[[Generated], GenerationResult],
                 settle: Callable[[], Awaitable[None]] | None = None) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self.pending = 0
        """Results being encoded (or waiting for the encoder thread)."""
        self._encode = encode
        self._settle = settle

    async def __call__(self, generated: Generated) -> GenerationResult:
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, in_context(self._encode, generated))
        finally:
            self.pending -= 1
            if self._settle is not None:
                await self._settle()

    def close(self) -> None:
        """Stop the encoder thread (shutdown)."""
        self.executor.shutdown(wait=False, cancel_futures=True)
