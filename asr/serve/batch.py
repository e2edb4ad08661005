"""Dynamic batching for asr serve: requests queued by the event loop, decoded in batches by model workers.

`Batcher.transcribe(wave)` queues one request's (S,) samples and waits for its Transcript; `model_workers`
threads each decode a batch at once (`Transcriber.transcribe([...])`), so the event loop keeps accepting
while they compute.
"""
from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor

import torch

from ..transcribe import Transcriber
from ..transcripts import Transcript


class Batcher:
    """Dynamic batching: waves queued by concurrent requests, decoded in batches by `model_workers` model
    threads at once.

    A free worker takes the first waiting request, then whatever arrives within the window, up to
    max_batch; with more than one worker also up to its share of the requests in progress
    (`in_progress()`: uploading, queued or computing, divided by the workers), so concurrent requests
    spread over the workers instead of filling one batch while the others idle.
    """

    def __init__(self, transcriber: Transcriber, options, metrics, in_progress=None):
        """`options`: a ServeOptions (max_batch, batch_window, model_workers); `metrics`: the server's Metrics
        (the batch histogram and queue gauge); `in_progress()`: the requests in progress (default: queued)."""
        self.transcriber, self.options, self.metrics = transcriber, options, metrics
        self.workers = options.model_workers
        self.model_threads = ThreadPoolExecutor(self.workers, thread_name_prefix="asr-model")  # the model runs here
        self.pending = 0         # requests queued or in the model
        self.in_progress = in_progress or (lambda: self.pending)
        self.queue: asyncio.Queue | None = None
        self.free: asyncio.Semaphore | None = None
        self.task: asyncio.Task | None = None
        self.batches: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.queue, self.free = asyncio.Queue(), asyncio.Semaphore(self.workers)
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        for task in [self.task, *self.batches]:
            if task is not None:
                task.cancel()
        self.model_threads.shutdown(wait=True, cancel_futures=True)

    async def run_model(self, fn, *args):
        """fn(*args) in the model thread (streams share it with the batches)."""
        return await asyncio.get_running_loop().run_in_executor(self.model_threads, fn, *args)

    async def transcribe(self, wave: torch.Tensor, transcriber: Transcriber | None = None) -> Transcript:
        """(S,) samples -> their Transcript, decoded with whatever else arrives meanwhile; `transcriber`: the
        same model with this request's own options (hotwords, nbest), batched with the requests that share them."""
        future = asyncio.get_running_loop().create_future()
        self.pending += 1
        self.metrics.queue.set(self.pending)
        future.add_done_callback(self._done)
        self.queue.put_nowait((wave, transcriber or self.transcriber, future))
        return await future

    def _done(self, _future) -> None:
        self.pending -= 1
        self.metrics.queue.set(self.pending)

    async def _run(self) -> None:
        while True:
            await self.free.acquire()                                 # a worker is free: gather its batch
            try:
                batch = await self._collect()
            except BaseException:
                self.free.release()
                raise
            task = asyncio.create_task(self._decode(batch))
            self.batches.add(task)
            task.add_done_callback(self.batches.discard)

    async def _decode(self, batch: list) -> None:
        try:
            batch = [(w, t, f) for w, t, f in batch if not f.done()]       # timed out or gone while queued
            if not batch:
                return
            self.metrics.batch.observe(len(batch))
            for transcriber in dict.fromkeys(t for _, t, _ in batch):     # requests with the same options together
                part = [(w, f) for w, t, f in batch if t is transcriber]
                try:
                    results = await self.run_model(transcriber.transcribe, [w for w, _ in part])
                except Exception as e:  # a model failure answers this batch's requests, the server goes on
                    for _, f in part:
                        if not f.done():
                            f.set_exception(e)
                    continue
                for (_, f), r in zip(part, results):
                    if not f.done():
                        f.set_result(r)
        finally:
            self.free.release()

    def _share(self) -> int:
        """The most one batch takes now: max_batch, and with several workers its share of the requests in progress."""
        if self.workers == 1:
            return self.options.max_batch
        return max(1, min(self.options.max_batch, math.ceil(self.in_progress() / self.workers)))

    async def _collect(self) -> list:
        """The first queued request, then whatever arrives within the window, up to max_batch and the share."""
        batch = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.options.batch_window
        while len(batch) < self._share():
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

