"""Continuous batching: concurrent requests share one model call, and no request waits for one.

Scoring costs a fixed overhead per call plus a little per record, so under load merging requests
multiplies throughput. BentoML's adaptive batching does this by deliberately holding requests
for a learned delay, and refuses them with 503 when its estimate of the queue's latency passes a
bound; its estimate counts requests, not records, so a mix of single records and 1,000-record
batches made it refuse hundreds of requests in our benchmark (see `benchmarks/README.md`).

This batcher never waits on purpose: an idle service scores a request at once. While a batch is
being scored (in a worker thread), new requests queue; when it finishes, everything queued, up
to `max_records`, becomes the next batch. Each request gets back exactly its own results, and a
failure of one model call fails only the requests in that call. Requests of different groups
(validated for different model versions, around a swap) are never merged: each call scores one
group with its own model.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import anyio.to_thread

Item = TypeVar("Item")
Result = TypeVar("Result")
Group = TypeVar("Group")


class ContinuousBatcher(Generic[Item, Result, Group]):
    """Merge concurrent `submit` calls of one group into calls of `score` on up to `max_records`.

    Args:
        score: scores a list of items of one group, returning one result per item, in order
            (blocking: it runs in a worker thread).
        max_records: most items in one call (a larger request is scored alone).
        on_batch: called with the number of items of each call, for metrics.

    """

    def __init__(
        self,
        score: Callable[[list[Item], Group], Sequence[Result]],
        max_records: int,
        on_batch: Callable[[int], None] = lambda records: None,
    ) -> None:
        self.score = score
        self.max_records = max_records
        self.on_batch = on_batch
        self._queue: deque[tuple[Sequence[Item], Group, asyncio.Future[Sequence[Result]]]] = deque()
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None  # kept: the loop holds tasks weakly

    async def submit(self, items: Sequence[Item], group: Group) -> Sequence[Result]:
        """Score `items`, with whatever else of `group` is queued; return their results."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Sequence[Result]] = loop.create_future()
        self._queue.append((items, group, future))
        if not self._draining:
            self._draining = True
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = [self._queue.popleft()]
                group = batch[0][1]
                size = len(batch[0][0])
                while (
                    self._queue
                    and self._queue[0][1] is group
                    and size + len(self._queue[0][0]) <= self.max_records
                ):
                    batch.append(self._queue.popleft())
                    size += len(batch[-1][0])
                merged = [item for items, _, _ in batch for item in items]
                self.on_batch(len(merged))
                try:
                    results = await anyio.to_thread.run_sync(self.score, merged, group)
                except Exception as error:  # each waiting request gets the failure
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                offset = 0
                for items, _, future in batch:
                    if not future.done():  # a client may have gone away
                        future.set_result(results[offset : offset + len(items)])
                    offset += len(items)
        finally:
            self._draining = False
