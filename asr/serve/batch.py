"""Dynamic batching for asr serve: requests queued by the event loop, decoded in batches by model workers.

`Batcher.transcribe(wave)` queues one request's (S,) samples and waits for its Transcript; `model_workers`
threads each take their next batch from the queue themselves and run its forward passes at once
(`Transcriber.transcribe_later([...])`), a decoder thread its decoding, so the event loop keeps accepting while
they compute and a worker that finishes starts on the next request without waiting for the event loop's turn
or for the decoding.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
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
    spread over the workers instead of filling one batch while the others idle. One worker gathers at a time.

    Why threads that take their own work: handed each batch by the event loop, a worker idled while the loop
    was busy reading other uploads; one request at a time on a 2-core EPYC the model thread waited ~0.7 ms of every
    ~3.6 ms request (recipes/an4/RESULTS.md, "One input's products, and the server's model thread").
    """

    def __init__(self, transcriber: Transcriber, options, metrics, in_progress=None):
        """`options`: a ServeOptions (max_batch, batch_window, model_workers); `metrics`: the server's Metrics
        (the batch histogram and queue gauge); `in_progress()`: the requests in progress (default: queued)."""
        self.transcriber, self.options, self.metrics = transcriber, options, metrics
        self.workers = options.model_workers
        self.pending = 0         # requests queued or in the model
        self.in_progress = in_progress or (lambda: self.pending)
        self._queue: deque = deque()       # _Request and _Job items, in arrival order
        self._ready = threading.Condition()
        self._gather = threading.Lock()    # held by the one worker gathering its batch
        self._threads: list[threading.Thread] = []
        self._decoders: ThreadPoolExecutor | None = None   # each batch's decoding after its forward passes
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), False
        self._decoders = ThreadPoolExecutor(self.workers, thread_name_prefix="asr-ctc")
        self._threads = [threading.Thread(target=self._work, name=f"asr-model_{i}", daemon=True)
                         for i in range(self.workers)]
        for t in self._threads:
            t.start()

    async def stop(self) -> None:
        with self._ready:
            self._stopping = True
            self._queue.clear()
            self._ready.notify_all()
        def join():
            for t in self._threads:
                t.join()
            self._decoders.shutdown(wait=True)
        await asyncio.get_running_loop().run_in_executor(None, join)

    async def run_model(self, fn, *args):
        """fn(*args) in a model thread, in turn with the batches (streams share the workers with them)."""
        return await self._put(_Job(fn, args))

    async def transcribe(self, wave: torch.Tensor, transcriber: Transcriber | None = None) -> Transcript:
        """(S,) samples -> their Transcript, decoded with whatever else arrives meanwhile; `transcriber`: the
        same model with this request's own options (hotwords, nbest), batched with the requests that share them."""
        self.pending += 1
        self.metrics.queue.set(self.pending)
        return await self._put(_Request(wave, transcriber or self.transcriber), self._done)

    async def _put(self, item, done=None):
        item.future = self._loop.create_future()
        if done is not None:
            item.future.add_done_callback(done)
        with self._ready:
            self._queue.append(item)
            self._ready.notify()
        return await item.future

    def _done(self, _future) -> None:
        self.pending -= 1
        self.metrics.queue.set(self.pending)

    def _work(self) -> None:
        """A model worker: its next job, or batch of requests (gathered while no other worker gathers), in turn."""
        while True:
            with self._gather:
                batch = self._collect()
            if batch is None:
                return
            if isinstance(batch, _Job):
                self._finish([batch], lambda job=batch: [job.fn(*job.args)])
            else:
                self._run_batch(batch)

    def _collect(self):
        """The first queued item (a job alone), then the requests that arrive within the window, up to max_batch and
        the share; None once stopping."""
        with self._ready:
            while not self._queue:
                if self._stopping:
                    return None
                self._ready.wait()
            first = self._queue.popleft()
            if isinstance(first, _Job):
                return first
            batch, deadline = [first], time.monotonic() + self.options.batch_window
            while len(batch) < self._share() and not self._stopping:
                if self._queue and isinstance(self._queue[0], _Request):
                    batch.append(self._queue.popleft())
                    continue
                left = deadline - time.monotonic()
                if self._queue or left <= 0:           # a job waits next, or the window is over
                    break
                self._ready.wait(left)
            return batch

    def _share(self) -> int:
        """The most one batch takes now: max_batch, and with several workers its share of the requests in progress."""
        if self.workers == 1:
            return self.options.max_batch
        return max(1, min(self.options.max_batch, math.ceil(self.in_progress() / self.workers)))

    def _run_batch(self, batch: list[_Request]) -> None:
        """The batch's forward passes here, their decoding in a decoder thread (Transcriber.transcribe_later), so that
        this worker takes its next batch meanwhile."""
        batch = [r for r in batch if not r.future.done()]       # timed out or gone while queued
        if not batch:
            return
        self.metrics.batch.observe(len(batch))
        for transcriber in dict.fromkeys(r.transcriber for r in batch):   # requests with the same options together
            part = [r for r in batch if r.transcriber is transcriber]
            try:
                decode = transcriber.transcribe_later([r.wave for r in part])
            except Exception as e:  # a model failure answers this batch's requests, the server goes on
                self._answer_all(part, None, e)
                continue
            self._decoders.submit(self._finish, part, decode)

    def _finish(self, part: list, compute) -> None:
        """compute() -> one result for each item of `part` (requests, or a job), each handed to its awaiting caller;
        its exception to all of them."""
        try:
            results, error = compute(), None
        except Exception as e:  # noqa: BLE001 - a decoding (or a job's) failure answers its callers likewise
            results, error = None, e
        self._answer_all(part, results, error)

    def _answer_all(self, part: list, results: list | None, error: BaseException | None) -> None:
        for k, r in enumerate(part):
            self._loop.call_soon_threadsafe(_settle, r.future, None if results is None else results[k], error)


class _Request:
    __slots__ = ("wave", "transcriber", "future")

    def __init__(self, wave: torch.Tensor, transcriber: Transcriber):
        self.wave, self.transcriber, self.future = wave, transcriber, None


class _Job:
    __slots__ = ("fn", "args", "future")

    def __init__(self, fn, args: tuple):
        self.fn, self.args, self.future = fn, args, None


def _settle(future: asyncio.Future, result, error: BaseException | None) -> None:
    """On the event loop: a worker's result (or error) to its awaiting request, unless it gave up meanwhile."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
