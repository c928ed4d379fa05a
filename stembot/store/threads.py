"""The threads the asynchronous store runs SQLite on, so the event loop never does.

- ``WriterThread`` owns the process's one write connection. Writes queue up while it works;
  it runs all that are waiting in one transaction, each a savepoint of it, and commits once:
  one fsync for the whole batch (group commit). Every caller is answered after the commit, so
  "done" still means durable (``synchronous=FULL``), and each write still sees the ones
  before it, in order: a reservation checks its limits against every earlier one.
- ``ReaderThreads`` hold read-only connections of their own (WAL: a reader never waits for
  the writer, nor makes it wait), so a quota line never queues behind writes. One thread by
  default: reads are short, and answered in the order they were asked, so two requests that
  take the same steps reach the writer, and the queue, in the order they came.

A write once queued is made even if its caller stops waiting (a cancelled task): like a
synchronous call, it cannot be half done.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from stembot.store.connection import Connection

log = logging.getLogger(__name__)

T = TypeVar("T")
P = TypeVar("P")

# (True, the write's result) or (False, the exception it raised).
Outcome = tuple[bool, Any]

# Enough to make one fsync count; small enough that a batch is a few milliseconds.
MAX_BATCH = 256


@dataclass(eq=False)
class _Write:
    work: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any] = field(repr=False)


class WriterThread:
    """One thread, one write connection, writes committed in groups."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="stembot-store-writer")
        self._closed = False
        # How many groups and writes were committed (the benchmark reports writes per fsync).
        self.groups = 0
        self.writes = 0
        self._thread.start()

    async def run(self, work: Callable[[], T]) -> T:
        """Run ``work`` (one or more ``write()`` transactions of a store part) on the writer;
        its result once its group is committed."""
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Write(work, loop, future))
        return await future

    def close(self) -> None:
        """Finish the queued writes, then stop the thread (the connection stays open)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Write]) -> None:
        outcomes: list[Outcome] = []
        try:
            with self._conn.group():
                for write in batch:
                    outcomes.append(self._attempt(write))
            self.groups += 1
            self.writes += len(batch)
        except Exception as error:
            # Busy, a broken or replaced file: the group is rolled back, nothing was written.
            outcomes = [(False, _own_copy(error)) for _ in batch]
        # One wake-up per event loop per group, not one per write.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Outcome]]] = {}
        for write, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(write.loop, []).append((write.future, outcome))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                log.warning(
                    "%d store write(s) finished after their event loop closed", len(settled)
                )

    @staticmethod
    def _attempt(write: _Write) -> Outcome:
        try:
            return True, write.work()
        except sqlite3.Error:
            raise
        except Exception as error:  # this write alone is undone (its savepoint)
            return False, error


class ReaderThreads(Generic[P]):
    """Threads (one by default) each with a read-only connection and the store's parts on it."""

    def __init__(
        self, file: Path, busy_timeout_s: float, build: Callable[[Connection], P], count: int = 1
    ) -> None:
        self._file = file
        self._busy_timeout_s = busy_timeout_s
        self._build = build
        self._local = threading.local()
        self._opened: list[Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="stembot-reader")

    async def run(self, read: Callable[[P], T]) -> T:
        """``read(parts)`` on a reader thread's own parts."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, read)

    def _call(self, read: Callable[[P], T]) -> T:
        parts: P | None = getattr(self._local, "parts", None)
        if parts is None:
            conn = Connection.open_read_only(self._file, self._busy_timeout_s)
            with self._lock:
                self._opened.append(conn)
            parts = self._local.parts = self._build(conn)
        return read(parts)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()


def _settle_all(settled: list[tuple[asyncio.Future[Any], Outcome]]) -> None:
    for future, (ok, value) in settled:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _own_copy(error: Exception) -> Exception:
    """Each waiting caller raises an exception object of its own (tracebacks are per raise)."""
    try:
        mine = copy.copy(error)
    except Exception:  # an exception that cannot be rebuilt from its args: share it
        return error
    mine.__cause__ = error.__cause__
    return mine
