"""Validated snapshots of input tables, keyed by the source files' identity.

Validating a bank's tables costs seconds per run at a million customers (tens of seconds at ten million): every
value is type-checked, bounded, de-duplicated and checked against the tables it references. A campaign run, a
preview and the nightly refresh read the same files again and again, so :func:`campaigns.contracts.load_world`
keeps what validation produced under ``<var_dir>/cache/inputs`` and reuses it while the inputs are unchanged:

- a table held in memory (customers, products, consents, risk, holdings, suppression, conversions) is stored as
  the validated, typed Parquet file; a hit reads it back (no conversion, no checks);
- the events (tens of millions of rows, kept lazy) get a *certificate*: a small file saying that this exact
  file passed validation (and which id columns had to be stripped of padding); a hit rebuilds the lazy
  conversion plan over the source file without running the checks.

The key of a snapshot is a SHA-256 over: the contract (the table's spec and :data:`FORMAT`), the configured
event types (events only), the source file's resolved path, size, inode, device and modification and
change times in nanoseconds, and the keys of the tables it references (a change to the customers file
invalidates the consents, risk, holdings and events snapshots). Any change to a file, even a ``touch``, makes
a new key, so a stale snapshot is never used; a snapshot that cannot be read is ignored and rewritten. Writes
go to a temporary name and are renamed into place (two processes writing the same key write the same bytes).
Older snapshots of the same table and data directory are removed when a new one is written.

Snapshots hold customer data, like the data directory they come from: keep ``var/`` as private as it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import polars as pl

log = logging.getLogger("mktg.snapshots")

FORMAT = 1  # bump when validation's output or its checks change meaning
_READ_ERRORS = (OSError, pl.exceptions.PolarsError, ValueError)


def file_identity(path: Path) -> list[object]:
    """What changes whenever the file's content can have changed: resolved path, size, inode, device, mtime and
    ctime in nanoseconds (``stat`` follows links, so replacing a link's target counts too)."""
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns]


class SnapshotStore:
    """Snapshots of one data directory's tables under ``root``."""

    def __init__(self, root: Path, directory: Path):
        self.root = Path(root)
        self.prefix = hashlib.sha256(str(Path(directory).resolve()).encode()).hexdigest()[:12]

    def key(self, table: str, spec: object, path: Path, extra: Iterable[object] = ()) -> str:
        material = json.dumps(
            [FORMAT, table, repr(spec), file_identity(path), [str(e) for e in extra]], separators=(",", ":")
        )
        return hashlib.sha256(material.encode()).hexdigest()[:32]

    def _path(self, table: str, key: str, suffix: str) -> Path:
        return self.root / f"{self.prefix}-{table}-{key}{suffix}"

    def read_frame(self, table: str, key: str) -> pl.DataFrame | None:
        path = self._path(table, key, ".parquet")
        if not path.is_file():
            return None
        try:
            return pl.read_parquet(path)
        except _READ_ERRORS as exc:
            log.warning("snapshot of table '%s' unreadable (%s): validating the file again", table, type(exc).__name__)
            return None

    def write_frame(self, table: str, key: str, frame: pl.DataFrame) -> None:
        self._write(table, key, ".parquet", lambda target: frame.write_parquet(target, compression="lz4"))

    def read_certificate(self, table: str, key: str) -> frozenset[str] | None:
        """The id columns stripped of padding when the file passed validation, or None (no certificate)."""
        path = self._path(table, key, ".ok.json")
        if not path.is_file():
            return None
        try:
            body = json.loads(path.read_text())
            if body.get("key") != key or not isinstance(body.get("stripped"), list):
                return None
            return frozenset(str(c) for c in body["stripped"])
        except (OSError, ValueError) as exc:
            log.warning("certificate of table '%s' unreadable (%s): validating the file again", table, exc)
            return None

    def write_certificate(self, table: str, key: str, stripped: Iterable[str]) -> None:
        text = json.dumps({"key": key, "stripped": sorted(stripped)})
        self._write(table, key, ".ok.json", lambda target: Path(target).write_text(text))

    def _write(self, table: str, key: str, suffix: str, write: Callable[[str], object]) -> None:
        final = self._path(table, key, suffix)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{final.name}.", suffix=".tmp")
            os.close(fd)
            try:
                write(tmp)
                os.replace(tmp, final)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            for old in self.root.glob(f"{self.prefix}-{table}-*"):
                if old.name != final.name and not old.name.startswith("."):
                    old.unlink(missing_ok=True)
        except OSError as exc:  # a cache that cannot be written only costs time
            log.warning("snapshot of table '%s' not written (%s)", table, exc.strerror or exc)
