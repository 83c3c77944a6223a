"""LightGBM trees compiled to machine code for bulk scoring (lleaves: LLVM), cached per model and CPU.

A campaign run scores every candidate pair of its audience: at 1M customers that is about 4M rows through a
200-tree booster. LightGBM walks its trees as data (about 11 us per row on one thread here); the same trees
compiled to branches by lleaves take about 2.3 us, the same result to the last few bits of a double (the sums are
in the same order; measured difference at most 6e-16).

Compiling costs seconds (13 s for 200 trees of 31 leaves with inlining), so the object code is cached under a key
of everything that determines it: the model text, the lleaves and llvmlite versions, the compile options and the
host CPU (name and features; object code built for one CPU may not run on another). A cache file is written to a
temporary name and renamed, so a reader never sees half of one. Forests with more than :data:`INLINE_LEAVES`
leaves in all are compiled without inlining: 400 trees of 63 leaves take 89 s and 1 GB to compile inlined, 7 s
without, and still predict about 4x faster than LightGBM.

Every compiled forest is checked on probe rows before use, against the trees read from the model's text
(:mod:`recommender.models.forest_text`, LightGBM's decision rules without importing LightGBM: a run that finds its
code cached never loads LightGBM) or, for a model kind that reader does not predict, against LightGBM; a forest
that disagrees, or a compiler that fails (llvmlite missing or broken), leaves the caller on LightGBM with one
warning: slower, never different.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from recommender.models.forest_text import parse_forest

log = logging.getLogger(__name__)

# LightGBM predicts about 11 us per row with 200 trees of 31 leaves (one thread, this host): after 1M rows it has
# spent about what compiling them costs (13 s), so a process that scores that many compiles
COMPILE_AFTER_ROWS = 1_000_000
INLINE_LEAVES = 10_000  # forests with more leaves in all compile without inlining (see the module docstring)
PROBE_ROWS = 256  # rows of the agreement check against LightGBM
PROBE_PIECES = 16  # ... taken in this many runs spread over the rows to score (spread_probe)
TOLERANCE = 1e-9  # on probabilities; the measured difference is a few ulps of a double
CHUNK_ROWS = 4096  # rows built and scored at a time by predict_built: 2.6 MB of 81 doubles each, cache-sized


class CompiledTrees:
    """One booster compiled; :meth:`predict` returns what ``booster.predict`` returns (probabilities)."""

    def __init__(self, model: Any, *, key: str, inlined: bool) -> None:
        self._model = model
        self.key = key
        self.inlined = inlined

    def predict(self, x: npt.NDArray[np.floating], *, threads: int = 1) -> npt.NDArray[np.float64]:
        return np.asarray(self._model.predict(x, n_jobs=max(1, int(threads))), dtype=np.float64)


def _versions() -> str:
    parts = []
    for package in ("lleaves", "llvmlite"):
        try:
            parts.append(f"{package}={version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package}=?")
    return ",".join(parts)


def cache_key(model_text: str, *, inline: bool) -> str:
    """What the object code depends on: model, compiler versions, options, host CPU (name and features)."""
    import llvmlite.binding as llvm

    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot read the features: key on the name alone (lleaves compiles without them)
        features = ""
    digest = hashlib.sha256()
    for part in (model_text, _versions(), f"inline={inline}", llvm.get_process_triple(), llvm.get_host_cpu_name()):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(features.encode())
    return digest.hexdigest()[:32]


def _leaves(model_text: str) -> int:
    return sum(int(line.split("=", 1)[1]) for line in model_text.splitlines() if line.startswith("num_leaves="))


def compile_trees(model_text: str, cache_dir: Path | None) -> CompiledTrees:
    """``model_text`` (LightGBM's text format) compiled, from ``cache_dir`` when an earlier call left it there.

    Raises ImportError without lleaves/llvmlite and whatever LLVM raises on a failed compile; callers fall back
    to LightGBM (:func:`compiled_or_none`)."""
    import lleaves

    inline = _leaves(model_text) <= INLINE_LEAVES
    key = cache_key(model_text, inline=inline)
    with tempfile.TemporaryDirectory(prefix="mktg-trees-") as scratch:
        source = Path(scratch) / "model.txt"  # lleaves reads a file
        source.write_text(model_text)
        model = lleaves.Model(model_file=str(source))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # llvmlite's notices about its own API
            if cache_dir is None:
                model.compile(finline=inline)
                return CompiledTrees(model, key=key, inlined=inline)
            cache_dir.mkdir(parents=True, exist_ok=True)
            cached = cache_dir / f"{key}.o"
            if cached.exists():
                model.compile(cache=str(cached), finline=inline)
                return CompiledTrees(model, key=key, inlined=inline)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=cache_dir)
            os.close(fd)
            tmp = Path(tmp_name)
            tmp.unlink()  # lleaves writes the cache only to a path that does not exist yet
            try:
                model.compile(cache=str(tmp), finline=inline)
                tmp.replace(cached)  # atomic: another process sees no file or the whole file
            finally:
                tmp.unlink(missing_ok=True)
    return CompiledTrees(model, key=key, inlined=inline)


def cached(model_text: str, cache_dir: Path | None) -> bool:
    """Whether an earlier :func:`compile_trees` left this model's code for this host in ``cache_dir``."""
    if cache_dir is None:
        return False
    try:
        key = cache_key(model_text, inline=_leaves(model_text) <= INLINE_LEAVES)
    except ImportError:
        return False
    return (cache_dir / f"{key}.o").exists()


def reference_predict(booster: Any, model_text: str) -> Callable[[npt.NDArray[np.floating]], npt.NDArray[np.float64]]:
    """What compiled code is checked against: the trees read from their text (:mod:`recommender.models.forest_text`,
    no LightGBM import), or LightGBM itself for a model of a kind that reader does not predict."""
    forest = parse_forest(model_text)
    if forest is not None:
        return forest.predict
    return lambda rows: np.asarray(booster.predict(rows, num_threads=1), dtype=np.float64)


def agrees(
    compiled: CompiledTrees,
    reference: Callable[[npt.NDArray[np.floating]], npt.NDArray[np.float64]],
    probe: npt.NDArray[np.floating],
) -> bool:
    """True when the compiled forest and ``reference`` (:func:`reference_predict`) give the same predictions on
    ``probe`` rows."""
    rows = probe[:PROBE_ROWS]
    if rows.shape[0] == 0:
        return True
    expected = reference(rows)
    got = compiled.predict(rows, threads=1)
    return bool(np.allclose(got, expected, rtol=0.0, atol=TOLERANCE, equal_nan=True))


class Predictor:
    """The prediction of a list of LightGBM boosters in one process, compiled when that pays.

    A booster is compiled at once when its code is already cached for this host or ``compile_now``; otherwise
    once ``compile_after_rows`` rows have been scored here (LightGBM then takes about as long as a compile). A
    compiled booster is used after it agreed with LightGBM on the first rows it is asked to score; a compile that
    fails or a booster that disagrees leaves that booster on LightGBM (one warning).
    """

    def __init__(
        self,
        boosters: list[Any],
        *,
        cache_dir: Path | None,
        what: str,
        compile_now: bool = False,
        compile_after_rows: int = COMPILE_AFTER_ROWS,
    ) -> None:
        self._boosters = boosters
        self._cache_dir = cache_dir
        self._what = what
        self._compile_after_rows = compile_after_rows
        self._texts = [None if isinstance(b, float) else b.model_to_string() for b in boosters]
        self._compiled: list[CompiledTrees | None] = [None] * len(boosters)
        self._checked = [False] * len(boosters)
        self._pending = True  # some booster not compiled (nor given up on) yet
        self.rows = 0  # rows scored so far
        for i, text in enumerate(self._texts):
            if text is not None and (compile_now or cached(text, cache_dir)):
                self._compile(i)
        self._pending = not compile_now and any(
            t is not None and c is None for t, c in zip(self._texts, self._compiled)
        )

    @property
    def compiled(self) -> list[bool]:
        """Per booster: scored by compiled code (once it agrees with LightGBM)."""
        return [c is not None for c in self._compiled]

    def _compile(self, i: int) -> None:
        text = self._texts[i]
        if text is not None and self._compiled[i] is None:
            self._compiled[i] = compiled_or_none(text, self._cache_dir, what=f"{self._what} booster {i}")

    def _ready(self, i: int, rows: int, probe: Callable[[], npt.NDArray[np.floating]]) -> CompiledTrees | None:
        """Booster ``i``'s compiled code for ``rows`` more rows, or None (LightGBM): compiles every booster once
        enough rows were scored, and checks a booster's code on ``probe()`` rows before its first use."""
        self.rows += rows
        if self._pending and self.rows >= self._compile_after_rows:
            self._pending = False
            for j in range(len(self._boosters)):
                self._compile(j)
        compiled = self._compiled[i]
        if compiled is not None and not self._checked[i]:
            text = self._texts[i]
            if text is not None and agrees(compiled, reference_predict(self._boosters[i], text), probe()):
                self._checked[i] = True
            else:
                log.warning(
                    "%s booster %d: compiled code disagrees with LightGBM; scoring with LightGBM", self._what, i
                )
                self._compiled[i] = compiled = None
        return compiled

    def predict(
        self, i: int, x: npt.NDArray[np.floating], *, threads: int, lgb_threads: int
    ) -> npt.NDArray[np.float64]:
        """Booster ``i``'s probabilities of rows ``x``: compiled code on ``threads`` threads, or LightGBM on
        ``lgb_threads``."""
        compiled = self._ready(i, x.shape[0], lambda: x)
        if compiled is not None:
            return compiled.predict(x, threads=threads)
        return np.asarray(self._boosters[i].predict(x, num_threads=lgb_threads), dtype=np.float64)

    def predict_built(
        self,
        i: int,
        n_rows: int,
        build: Callable[[int, int], npt.NDArray[np.floating]],
        *,
        threads: int,
        lgb_threads: int,
        chunk_rows: int | None = None,
    ) -> npt.NDArray[np.float64]:
        """:meth:`predict` of ``n_rows`` rows that ``build(start, stop)`` makes (rows ``start`` to ``stop - 1``).

        With compiled code, ``threads`` threads each build and score ``chunk_rows`` (default :data:`CHUNK_ROWS`)
        rows at a time: the rows are scored while they are still in the CPU cache, the building runs in parallel
        too, and the rows are never all in memory at once (4M pairs of 81 features are 2.6 GB of doubles). Each
        row's score is computed alone, so the result is the same as :meth:`predict` of all rows."""
        compiled = self._ready(i, n_rows, lambda: spread_probe(n_rows, build))
        if compiled is None:
            return np.asarray(self._boosters[i].predict(build(0, n_rows), num_threads=lgb_threads), dtype=np.float64)
        chunk_rows = CHUNK_ROWS if chunk_rows is None else max(1, int(chunk_rows))
        if n_rows <= chunk_rows:
            return compiled.predict(build(0, n_rows), threads=threads)
        out = np.empty(n_rows, np.float64)
        fill_in_chunks(
            out,
            lambda start, stop: compiled.predict(build(start, stop), threads=1),
            chunk_rows=chunk_rows,
            threads=threads,
        )
        return out


def spread_probe(
    n_rows: int, build: Callable[[int, int], npt.NDArray[np.floating]], *, pieces: int = PROBE_PIECES
) -> npt.NDArray[np.floating]:
    """About :data:`PROBE_ROWS` rows for the agreement check, in ``pieces`` runs spread evenly over the ``n_rows``
    rows ``build`` makes: the rows come grouped (the propensity pairs offer by offer), and the first rows alone
    would check one group's branches only."""
    if n_rows <= PROBE_ROWS:
        return build(0, n_rows)
    run = max(1, PROBE_ROWS // pieces)
    starts = np.linspace(0, n_rows - run, pieces).astype(np.int64)
    return np.concatenate([build(int(s), int(s) + run) for s in starts])


def fill_in_chunks(
    out: npt.NDArray[np.float64],
    score: Callable[[int, int], npt.NDArray[np.floating]],
    *,
    chunk_rows: int,
    threads: int,
    start: int = 0,
) -> None:
    """``out[a:b] = score(a, b)`` for consecutive chunks of ``chunk_rows`` rows from ``start`` to the end of ``out``:
    in order on one thread, or on ``threads`` threads, each taking the next chunk as it frees up (``score`` is then
    called from several threads at once). A chunk's exception is raised here."""
    n = out.shape[0]

    def one(begin: int) -> None:
        end = min(begin + chunk_rows, n)
        out[begin:end] = score(begin, end)

    begins = range(start, n, chunk_rows)
    if threads <= 1:
        for begin in begins:
            one(begin)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, begins))  # list(): re-raises a worker's exception


def compiled_or_none(model_text: str, cache_dir: Path | None, *, what: str) -> CompiledTrees | None:
    """:func:`compile_trees`, or None (with one warning naming ``what``) when compiling is not possible here."""
    try:
        return compile_trees(model_text, cache_dir)
    except Exception as exc:  # any compiler failure means: score with LightGBM instead
        log.warning("%s: trees not compiled (%s: %s); scoring with LightGBM", what, type(exc).__name__, exc)
        return None
