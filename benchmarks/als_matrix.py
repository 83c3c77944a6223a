"""Build (once) the interaction matrix of a generated world exactly as the nightly refresh does, cached as .npz.

.venv/bin/python benchmarks/als_matrix.py --data var/world1m --out var/als/matrix-1000000.npz
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    build_matrix(args.data, args.out)
