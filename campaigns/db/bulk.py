"""Bulk inserts of Polars frames: COPY on PostgreSQL, executemany batches on SQLite.

Runs inside the caller's connection/transaction, so a failure later in the same transaction rolls the rows
back too.
"""

from __future__ import annotations

import io

import polars as pl
from sqlalchemy import Connection, Table

SQLITE_BATCH = 50_000
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S%.6f"  # the text form SQLAlchemy's SQLite DateTime reads back


def insert_frame(connection: Connection, table: Table, frame: pl.DataFrame) -> int:
    """Insert every row of ``frame`` (columns named as the table's) into ``table``; return the row count."""
    if frame.height == 0:
        return 0
    columns = [c for c in frame.columns if c in table.c]
    frame = frame.select(columns)
    dialect = connection.dialect.name
    if dialect == "postgresql":
        _copy_postgres(connection, table, frame)
    else:
        _executemany(connection, table, frame)
    return frame.height


def _copy_postgres(connection: Connection, table: Table, frame: pl.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.6f", null_value="")
    cols = ", ".join(f'"{c}"' for c in frame.columns)
    raw = connection.connection.driver_connection  # psycopg 3 connection in the same transaction
    if raw is None:
        raise RuntimeError("COPY needs the DBAPI connection of an open transaction")
    copy_sql = f"COPY \"{table.name}\" ({cols}) FROM STDIN WITH (FORMAT csv, NULL '')"
    with raw.cursor() as cursor, cursor.copy(copy_sql) as copy:
        copy.write(buffer.getvalue())


def _executemany(connection: Connection, table: Table, frame: pl.DataFrame) -> None:
    text_dates = [
        pl.col(c).dt.strftime(_SQLITE_DATETIME) for c, dtype in frame.schema.items() if isinstance(dtype, pl.Datetime)
    ]
    if text_dates:
        frame = frame.with_columns(text_dates)
    cols = ", ".join(f'"{c}"' for c in frame.columns)
    marks = ", ".join("?" for _ in frame.columns)
    sql = f'INSERT INTO "{table.name}" ({cols}) VALUES ({marks})'
    for start in range(0, frame.height, SQLITE_BATCH):
        rows = frame.slice(start, SQLITE_BATCH).rows()
        connection.exec_driver_sql(sql, rows)
