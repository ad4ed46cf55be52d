"""The micro-batcher of ``alignpro serve``: concurrent requests' items, one call of a batch function."""

from __future__ import annotations

import asyncio
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Collects items from concurrent requests and runs ``fn(items) -> results`` on batches, one at a time.

    A batch starts with the first waiting item and takes whatever else arrives within ``wait_s`` (or is already
    queued), up to ``max_batch`` items. ``fn`` runs in a worker thread, so the event loop keeps serving.
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, max_batch: int, wait_s: float, name: str) -> None:
        self.fn, self.max_batch, self.wait_s, self.name = fn, max_batch, wait_s, name
        self.batches = 0  #: calls of ``fn`` so far
        self.items = 0  #: items processed so far
        self.largest = 0  #: the largest batch so far
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def submit(self, item: T) -> R:
        assert self._queue is not None, "MicroBatcher.start() was not called"
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _worker(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
            batch = [(item, fut) for item, fut in batch if not fut.done()]  # drop requests whose client left
            if not batch:
                continue
            try:
                results = await asyncio.to_thread(self.fn, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{self.name} returned {len(results)} results for {len(batch)} inputs")
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for (_, fut), res in zip(batch, results):
                    if not fut.done():
                        fut.set_result(res)
            self.batches += 1
            self.items += len(batch)
            self.largest = max(self.largest, len(batch))

    def stats(self) -> dict[str, float]:
        return {"batches": self.batches, "items": self.items, "largest_batch": self.largest,
                "mean_batch": round(self.items / self.batches, 3) if self.batches else 0.0}
