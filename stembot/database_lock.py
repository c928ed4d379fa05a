"""One bot per database: `stembot run` holds an exclusive lock on a file beside the database.

``fcntl.flock`` does what a lease would need a clock and a heartbeat for: the kernel releases
the lock whenever the process ends, cleanly or not (a crash, SIGKILL, a lost container), so the
next bot takes over at once and a second one can never start beside a live one. The file keeps
who took it last (pid, host, since), to name them in the refusal. A lock file on a network file
system is only as good as that file system's flock; keep the database on a local disk.

Only `stembot run` takes it: the operator's commands and other readers open the database
beside a running bot, as SQLite allows.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from stembot.errors import DatabaseInUseError, DatabaseLockError


def lock_path_of(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


@contextmanager
def hold_database(db_path: Path) -> Iterator[None]:
    """Hold the database for this process until the block ends; DatabaseInUseError if taken."""
    lock_path = lock_path_of(db_path)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise DatabaseLockError(
            f"cannot create the lock file {lock_path} beside the database: {error.strerror}"
        ) from error
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
            raise DatabaseInUseError(db_path, holder) from None
        since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {since}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
