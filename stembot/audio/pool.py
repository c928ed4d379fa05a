"""The audio worker pool: a bounded set of processes with a guild-fair queue in front.

Decoding, mixing, encoding and drawing hold the GIL for seconds; in the bot's process they
would stall the event loop (and with it every acknowledgement). So they run in worker
processes, at most ``workers`` at once, and the jobs wait in the same kind of FairQueue as
API calls: a guild with fifty mixes queued lets another guild's one job go next. Workers run
at a lower CPU priority (nice 10) so that on a small machine the event loop wins the core
whenever it has work.

Workers are spawned, not forked: the bot's process runs threads (the store's writer and
readers), and forking a threaded process can copy a held lock into the child.

A worker that dies (killed, out of memory) breaks a ProcessPoolExecutor for good: every job
in it fails with AudioWorkerCrashed, and the pool starts a new executor for the jobs after.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from stembot.errors import AudioWorkerCrashed, ShuttingDownError
from stembot.scheduling import FairQueue

T = TypeVar("T")

WORKER_NICENESS = 10


def _lower_priority() -> None:
    # A platform without nice runs the workers at normal priority.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)


@dataclass(eq=False)
class _Job:
    call: Callable[[], Any]
    done: asyncio.Future[Any]


class AudioPool:
    """``await pool.run(guild_id, function, *args)`` runs a module-level function in a worker.

    Pass file paths, not audio: arguments and results cross a process pipe.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("an audio pool needs at least one worker")
        self._workers = workers
        self._executor = self._new_executor()
        self._waiting: FairQueue[_Job] = FairQueue()
        self._running = 0
        self._ids = itertools.count()
        self._closed = False

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_lower_priority,
        )

    async def run(self, guild_id: int, function: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise ShuttingDownError()
        job = _Job(partial(function, *args), asyncio.get_running_loop().create_future())
        job_id = next(self._ids)
        self._waiting.push(guild_id, job_id, job)
        self._dispatch()
        try:
            result: T = await job.done
        except asyncio.CancelledError:
            # Still waiting: it never starts. Already running: it finishes unheard.
            self._waiting.remove(job_id)
            raise
        return result

    def _dispatch(self) -> None:
        while self._running < self._workers and (job := self._waiting.pop()) is not None:
            if job.done.done():
                continue
            executor = self._executor
            try:
                submitted = executor.submit(job.call)
            except BrokenProcessPool:
                self._renew(executor)
                submitted = self._executor.submit(job.call)
                executor = self._executor
            self._running += 1
            submitted.add_done_callback(partial(self._from_worker, job, executor))

    def _from_worker(self, job: _Job, executor: ProcessPoolExecutor, result: Future[Any]) -> None:
        """Runs in the executor's thread: hand the outcome to the event loop."""
        # A closed loop (RuntimeError) has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            job.done.get_loop().call_soon_threadsafe(self._finished, job, executor, result)

    def _finished(self, job: _Job, executor: ProcessPoolExecutor, result: Future[Any]) -> None:
        self._running -= 1
        if not job.done.done():
            if result.cancelled():
                job.done.set_exception(ShuttingDownError())
            elif isinstance(error := result.exception(), BrokenProcessPool):
                self._renew(executor)
                job.done.set_exception(AudioWorkerCrashed())
            elif error is not None:
                job.done.set_exception(error)
            else:
                job.done.set_result(result.result())
        if not self._closed:
            self._dispatch()

    def _renew(self, broken: ProcessPoolExecutor) -> None:
        """A new executor in place of ``broken``, once however many of its jobs report it."""
        if broken is self._executor and not self._closed:
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()

    async def close(self) -> None:
        """Refuse new jobs, drop waiting ones, let running ones end, stop the workers."""
        self._closed = True
        while (job := self._waiting.pop()) is not None:
            if not job.done.done():
                job.done.set_exception(ShuttingDownError())
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
