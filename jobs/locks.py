"""Liveness locks: "is a live process working on this key right now?"

The durable exactly-once guarantee is the ``job_runs`` row (UNIQUE(job_name, fire_time)). A row saying
``status='running'`` cannot tell whether its process is still alive; these locks can, because they die with
the process that holds them:

- PostgreSQL: a session advisory lock (``pg_try_advisory_lock``) on a dedicated connection. A killed process
  closes its connection and the server drops the lock.
- SQLite: a POSIX byte-range lock on ``<database file>.locks``, one byte per key at an offset derived from the
  key's hash; the kernel drops it when the process exits. A SQLite database is a local file, so every process
  using it shares the host (and its locks).

POSIX locks belong to a process, not a thread, so within one process a set of held keys does the exclusion,
and the lock file stays open for the life of the process (closing any descriptor would drop all its locks).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text


def _hash64(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class _PosixLockFile:
    """One open lock file per process and path; byte-range locks on it, plus the in-process held set."""

    _files: dict[str, _PosixLockFile] = {}
    _files_guard = threading.Lock()

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.held: set[int] = set()
        self.guard = threading.Lock()

    @classmethod
    def for_path(cls, path: Path) -> _PosixLockFile:
        key = str(path.resolve())
        with cls._files_guard:
            if key not in cls._files:
                cls._files[key] = cls(path)
            return cls._files[key]

    def try_lock(self, offset: int) -> bool:
        with self.guard:
            if offset in self.held:
                return False
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset, os.SEEK_SET)
            except OSError:
                return False
            self.held.add(offset)
            return True

    def unlock(self, offset: int) -> None:
        with self.guard:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, offset, os.SEEK_SET)
            self.held.discard(offset)


class LivenessLocks:
    """Non-blocking, process-lifetime locks on string keys, scoped to one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.backend = engine.url.get_backend_name()
        if self.backend == "sqlite":
            database = engine.url.database
            if not database or database == ":memory:":
                raise ValueError("the scheduler needs a file (or PostgreSQL) database, not an in-memory SQLite one")
            self._file = _PosixLockFile.for_path(Path(database + ".locks"))
        elif self.backend == "postgresql":
            with engine.connect() as conn:
                self._scope = conn.execute(text("select current_database() || '.' || current_schema()")).scalar_one()
        else:  # pragma: no cover - the project supports SQLite and PostgreSQL only
            raise ValueError(f"unsupported database backend {self.backend!r}")

    @contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        """Try to take the lock on ``key``; yield whether we hold it (held until the block ends)."""
        if self.backend == "sqlite":
            offset = _hash64(key) & ((1 << 62) - 1)
            acquired = self._file.try_lock(offset)
            try:
                yield acquired
            finally:
                if acquired:
                    self._file.unlock(offset)
            return
        lock_id = _hash64(f"{self._scope}|{key}")
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            acquired = bool(conn.execute(text("select pg_try_advisory_lock(:k)"), {"k": lock_id}).scalar_one())
            yield acquired
            if acquired:
                conn.execute(text("select pg_advisory_unlock(:k)"), {"k": lock_id})
        except BaseException:
            conn.invalidate()  # never hand a connection that may still hold the lock back to the pool
            raise
        finally:
            conn.close()
