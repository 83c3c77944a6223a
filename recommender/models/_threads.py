"""BLAS pinned to one thread while implicit / LightFM run their own worker threads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import threadpool_limits


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    with threadpool_limits(1, "blas"):
        yield
