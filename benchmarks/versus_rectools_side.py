"""The RecTools side of ``benchmarks/versus_rectools.py``, run in its own virtualenv (RecTools is never
a dependency of mktg).

    <rectools venv>/bin/python benchmarks/versus_rectools_side.py WORKDIR --k 5 --threads 1 ...

Reads ``WORKDIR/inputs.npz`` (ids as codes) and ``WORKDIR/ours_factors.npz``, then, timed: builds the
RecTools ``Dataset`` from the weighted interactions, fits ``ImplicitALSWrapperModel`` with the same ALS
configuration, injects our factors (so both sides rank with identical vectors) and recommends top-k per
segment (``items_to_recommend`` = the segment's allow-list, held products filtered with
``filter_viewed=True`` against a Dataset of held pairs sharing the fit's id maps). Writes
``rectools_recs.npz`` and ``rectools_stages.json``.

Only the standard library and numpy are imported at module level: ``versus_rectools.py`` imports
:class:`Stages` from here in the project's own environment.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

_MIB = 1024 * 1024


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the next reading covers one stage only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Stages:
    """Wall time and peak resident memory of named stages of one process."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        exact = _reset_peak()
        start_kib = _status_kib("VmRSS") or 0
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        peak_kib = _status_kib("VmHWM") if exact else None
        if peak_kib is None:  # no per-stage reset available: the process-lifetime peak
            peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.records.setdefault(name, {"seconds": [], "peak_rss_mib": [], "start_rss_mib": [], "exact_peak": exact})
        record = self.records[name]
        record["seconds"].append(round(seconds, 4))
        record["peak_rss_mib"].append(round(peak_kib * 1024 / _MIB, 1))
        record["start_rss_mib"].append(round(start_kib * 1024 / _MIB, 1))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="RecTools side of versus_rectools.py")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--als", required=True, help="JSON of the ALS configuration")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import pandas as pd
    from implicit.cpu.als import AlternatingLeastSquares
    from rectools import Columns
    from rectools.dataset import Dataset
    from rectools.models import ImplicitALSWrapperModel
    from threadpoolctl import threadpool_limits

    args = _parse(argv)
    als = json.loads(args.als)
    stages = Stages()
    with np.load(args.workdir / "inputs.npz", allow_pickle=False) as arrays:
        inputs = {name: arrays[name] for name in arrays.files}
    customer_ids = inputs["customer_ids"].astype(object)
    product_ids = inputs["product_ids"].astype(object)
    as_of = pd.Timestamp(str(inputs["as_of"]))
    interactions = pd.DataFrame(
        {
            Columns.User: customer_ids[inputs["inter_customer"]],
            Columns.Item: product_ids[inputs["inter_product"]],
            Columns.Weight: inputs["inter_weight"],
            Columns.Datetime: as_of,  # weights are already decayed as of the run date
        }
    )
    targets = pd.DataFrame(
        {
            Columns.User: customer_ids[inputs["rank_customer"]],
            "segment": inputs["segment_names"].astype(object)[inputs["rank_segment"]],
        }
    )
    allowed = pd.DataFrame(
        {
            "segment": inputs["segment_names"].astype(object)[inputs["allowed_segment"]],
            Columns.Item: product_ids[inputs["allowed_product"]],
        }
    )
    held = pd.DataFrame(
        {
            Columns.User: customer_ids[inputs["held_customer"]],
            Columns.Item: product_ids[inputs["held_product"]],
            Columns.Weight: 1.0,
            Columns.Datetime: as_of,
        }
    )
    del inputs

    with threadpool_limits(1, "blas"):  # implicit's own advice while it runs its threads
        with stages("dataset"):
            dataset = Dataset.construct(interactions)
        with stages("fit"):
            model = ImplicitALSWrapperModel(
                AlternatingLeastSquares(
                    factors=als["factors"],
                    regularization=als["regularization"],
                    alpha=als["alpha"],
                    iterations=als["iterations"],
                    random_state=als["random_state"],
                    num_threads=args.threads,
                ),
                recommend_n_threads=args.threads,
            )
            model.fit(dataset)
    del interactions

    _inject_factors(model, dataset, args.workdir / "ours_factors.npz")

    with threadpool_limits(args.threads, "blas"):
        for _ in range(args.repeats):
            with stages("rank"):
                recos = _recommend(model, dataset, targets, allowed, held, k=args.k)

    codes = pd.Index(customer_ids).get_indexer(recos[Columns.User])
    offers = pd.Index(product_ids).get_indexer(recos[Columns.Item])
    np.savez(
        args.workdir / "rectools_recs.npz",
        customer=codes.astype(np.int32),
        offer=offers.astype(np.int32),
        score=recos[Columns.Score].to_numpy(np.float32),
        rank=recos[Columns.Rank].to_numpy(np.int32),
    )
    import rectools

    info = {
        "stages": stages.records,
        "rectools": rectools.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "hot_users": int(dataset.n_hot_users),
    }
    (args.workdir / "rectools_stages.json").write_text(json.dumps(info, indent=2))
    return 0


def _inject_factors(model: Any, dataset: Any, path: Path) -> None:
    """Replace the fitted factors with ours, reordered to RecTools' internal ids."""
    import pandas as pd

    with np.load(path, allow_pickle=False) as ours:
        rows = pd.Index(ours["customer_ids"]).get_indexer(dataset.user_id_map.external_ids)
        cols = pd.Index(ours["offer_ids"]).get_indexer(dataset.item_id_map.external_ids)
        if (rows < 0).any() or (cols < 0).any():
            raise SystemExit("our factors do not cover RecTools' users/items: inputs differ")
        user_factors = np.ascontiguousarray(ours["customer_factors"][rows])
        item_factors = np.ascontiguousarray(ours["offer_factors"][cols])
    if user_factors.shape != model.model.user_factors.shape or item_factors.shape != model.model.item_factors.shape:
        raise SystemExit("factor shapes differ between the two sides")
    model.model.user_factors = user_factors
    model.model.item_factors = item_factors


def _recommend(model: Any, dataset: Any, targets: Any, allowed: Any, held: Any, *, k: int) -> Any:
    """Top-k per segment: one ``recommend`` call per segment with its allow-list as ``items_to_recommend``.

    Held products are "viewed" items of a Dataset built from the held pairs with the fit's id maps.
    RecTools treats users after the last one present in that Dataset's interactions as warm (ALS cannot
    rank them), so those users -- who hold nothing -- are ranked against the fit dataset without the
    filter.
    """
    import pandas as pd
    from rectools import Columns
    from rectools.dataset import Dataset, Interactions

    held = held[
        held[Columns.User].isin(dataset.user_id_map.external_ids)
        & held[Columns.Item].isin(dataset.item_id_map.external_ids)
    ]
    held_dataset = Dataset(
        dataset.user_id_map, dataset.item_id_map, Interactions.from_raw(held, dataset.user_id_map, dataset.item_id_map)
    )
    n_hot_held = held_dataset.n_hot_users
    internal = dataset.user_id_map.convert_to_internal(targets[Columns.User])
    parts = []
    for segment, users in targets.assign(_internal=internal).groupby("segment", sort=True):
        whitelist = allowed.loc[allowed["segment"] == segment, Columns.Item].to_numpy()
        if whitelist.size == 0:
            continue
        filtered = users["_internal"].to_numpy() < n_hot_held
        if filtered.any():
            parts.append(
                model.recommend(
                    users[Columns.User][filtered], held_dataset, k=k, filter_viewed=True, items_to_recommend=whitelist
                )
            )
        if (~filtered).any():
            parts.append(
                model.recommend(
                    users[Columns.User][~filtered], dataset, k=k, filter_viewed=False, items_to_recommend=whitelist
                )
            )
    return pd.concat(parts, ignore_index=True)


if __name__ == "__main__":
    sys.exit(main())
