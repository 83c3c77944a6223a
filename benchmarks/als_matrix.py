"""Build (once) the interaction matrix of a generated world exactly as the nightly refresh does, cached as .npz.

.venv/bin/python benchmarks/als_matrix.py --data var/world1m --out var/als/matrix-1000000.npz
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def build_matrix(data: Path, out: Path) -> sp.csr_matrix:
    """The refresh's matrix (``jobs.model_service.prepare`` on ``data``), cached at ``out``."""
    if out.exists():
        return sp.load_npz(out).tocsr()
    from campaigns.contracts import load_world
    from jobs.model_service import load_segment_rules, prepare
    from jobs.settings import load_events, load_settings

    started = time.perf_counter()
    settings = load_settings()
    events = load_events(settings)
    world = load_world(data, event_types=events.event_types)
    as_of = datetime.fromisoformat(json.loads((data / "ground_truth.json").read_text())["as_of"])
    training = prepare(world, load_segment_rules(settings), events, as_of=as_of)
    matrix = training.interactions.matrix.tocsr().astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    sp.save_npz(out, matrix)
    print(
        f"built {matrix.shape[0]:,} x {matrix.shape[1]} matrix, {matrix.nnz:,} non-zeros in "
        f"{time.perf_counter() - started:.1f} s -> {out}",
        flush=True,
    )
    return matrix


def build_time_split(data: Path, out: Path, test_days: float = 60.0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The evaluation's time split (as ``mktg evaluate``): the interaction matrix of the events before
    ``cutoff = last event - test_days`` and the positive (customer row, offer column) pairs at or after it that
    are neither in that matrix nor held at the cutoff. Cached at ``out``."""
    if out.exists():
        cached = np.load(out)
        matrix = sp.csr_matrix((cached["data"], cached["indices"], cached["indptr"]), shape=tuple(cached["shape"]))
        return matrix, cached["rows"], cached["offers"]
    import polars as pl

    from campaigns.contracts import load_world
    from jobs.model_service import latest_event_time, load_segment_rules, prepare
    from jobs.settings import load_events, load_settings
    from recommender.evaluation import time_split
    from recommender.history import held_at

    started = time.perf_counter()
    settings = load_settings()
    events = load_events(settings)
    world = load_world(data, event_types=events.event_types)
    cutoff = latest_event_time(world) - timedelta(days=test_days)
    split = time_split(world.events, cutoff=cutoff, positive=events.positive)
    training = prepare(world, load_segment_rules(settings), events, as_of=cutoff, events=split.train_events)
    inter = training.interactions
    matrix = inter.matrix.tocsr().astype(np.float32)
    matrix.sort_indices()
    held = held_at(world.holdings, cutoff).rename({"product_id": "offer_id"})
    pairs = split.test_pairs.join(held, on=["customer_id", "offer_id"], how="anti")
    rows = inter.customers.to_internal(pairs["customer_id"].cast(pl.String), unknown="null")
    offers = inter.products.to_internal(pairs["offer_id"].cast(pl.String), unknown="null")
    keep = (rows >= 0) & (offers >= 0)
    rows, offers = rows[keep].astype(np.int64), offers[keep].astype(np.int64)
    in_train = np.asarray(matrix[rows, offers]).ravel() != 0
    rows, offers = rows[~in_train], offers[~in_train]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        data=matrix.data,
        indices=matrix.indices,
        indptr=matrix.indptr,
        shape=np.array(matrix.shape),
        rows=rows,
        offers=offers,
    )
    print(
        f"time split at {cutoff:%Y-%m-%d}: {matrix.shape[0]:,} x {matrix.shape[1]} training matrix, "
        f"{matrix.nnz:,} non-zeros; {rows.size:,} new positive pairs of {np.unique(rows).size:,} customers after "
        f"it, in {time.perf_counter() - started:.1f} s -> {out}",
        flush=True,
    )
    return matrix, rows, offers


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    build_matrix(args.data, args.out)
