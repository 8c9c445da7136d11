"""Classifier calls of many output streams gathered into one Triton request.

Output windows are classified asynchronously (the orchestrator keeps streaming while a verdict is on its way), so a
window may wait a few milliseconds for others: with many streams open, the windows that arrive within `wait_s` go
to the classifier as one batch — one gRPC call, one trace, one model execution — instead of one call each. With a
single stream open nothing waits. Input checks do not come through here: they are on the way to the first token.
"""

from __future__ import annotations

import asyncio

from services.safety.classifier_client import Classifier


class BatchingClassifier:
    def __init__(self, inner: Classifier, *, wait_s: float = 0.01, max_texts: int = 32) -> None:
        self.inner = inner
        self.wait_s = wait_s
        self.max_texts = max_texts
        self.open_streams = 0  # output streams in progress (more than one: worth waiting for company)
        self._queued: list[tuple[list[str], asyncio.Future]] = []
        self._queued_texts = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task] = set()
        self.calls = 0  # classifier calls made (for tests and logs)

    async def scores(self, texts: list[str]) -> list[dict[str, float]]:
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._queued.append((texts, future))
        self._queued_texts += len(texts)
        if self._queued_texts >= self.max_texts or self.open_streams <= 1:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._queued, self._queued_texts = self._queued, [], 0
        if batch:
            task = asyncio.ensure_future(self._classify(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _classify(self, batch: list[tuple[list[str], asyncio.Future]]) -> None:
        self.calls += 1
        try:
            scored = await self.inner.scores([text for texts, _ in batch for text in texts])
        except Exception as exc:  # every window of the batch gets the failure (ClassifierUnavailable, ...)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for texts, future in batch:
            if not future.done():  # its stream may have gone away meanwhile
                future.set_result(scored[start:start + len(texts)])
            start += len(texts)

    async def close(self) -> None:
        self._flush()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
