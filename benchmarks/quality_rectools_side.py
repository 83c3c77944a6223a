"""RecTools' side of benchmarks/quality.py; runs in RecTools' own virtualenv (benchmarks/.venv-rectools).

    benchmarks/.venv-rectools/bin/python benchmarks/quality_rectools_side.py WORKDIR PHASE --spec JSON

Reads ``WORKDIR/<PHASE>_train.csv`` (user, item, weight, datetime: the positive training interactions),
``<PHASE>_users.csv`` (users to rank) and ``<PHASE>_items.csv`` (the catalogue), fits every model of the spec
(``{"name": {"model": "ease"|"als"|"popular", ...params}}``) with RecTools 0.19 on a ``Dataset`` of those
interactions and writes ``<PHASE>_reco_<name>.csv`` (user, item, rank): top-k with ``filter_viewed=True``
(the training items are excluded) among ``items_to_recommend`` = the catalogue. Times in ``<PHASE>_times.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("phase")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import pandas as pd
    from implicit.als import AlternatingLeastSquares
    from rectools import Columns
    from rectools.dataset import Dataset
    from rectools.models import EASEModel, ImplicitALSWrapperModel, PopularModel
    from threadpoolctl import threadpool_limits

    train = pd.read_csv(args.workdir / f"{args.phase}_train.csv", dtype={"user": str, "item": str})
    train = train.rename(
        columns={"user": Columns.User, "item": Columns.Item, "weight": Columns.Weight, "datetime": Columns.Datetime}
    )
    users = pd.read_csv(args.workdir / f"{args.phase}_users.csv", dtype={"user": str})["user"].tolist()
    items = pd.read_csv(args.workdir / f"{args.phase}_items.csv", dtype={"item": str})["item"].tolist()
    dataset = Dataset.construct(train)
    times = {}
    for name, spec in json.loads(args.spec).items():
        spec = dict(spec)
        kind = spec.pop("model")
        if kind == "ease":
            model = EASEModel(regularization=spec["regularization"], recommend_n_threads=args.threads)
        elif kind == "als":
            model = ImplicitALSWrapperModel(
                AlternatingLeastSquares(
                    factors=spec["factors"],
                    regularization=spec["regularization"],
                    alpha=spec["alpha"],
                    iterations=spec["iterations"],
                    random_state=spec.get("random_state", 42),
                    num_threads=args.threads,
                )
            )
        elif kind == "popular":
            model = PopularModel()
        else:
            raise SystemExit(f"unknown model {kind}")
        started = time.perf_counter()
        with threadpool_limits(1 if kind == "als" else args.threads, "blas"):
            model.fit(dataset)
            reco = model.recommend(users, dataset, k=args.k, filter_viewed=True, items_to_recommend=items)
        times[name] = round(time.perf_counter() - started, 3)
        reco.rename(columns={Columns.User: "user", Columns.Item: "item", Columns.Rank: "rank"})[
            ["user", "item", "rank"]
        ].to_csv(args.workdir / f"{args.phase}_reco_{name}.csv", index=False)
        print(f"  rectools {args.phase} {name}: {times[name]:.1f} s", flush=True)
    (args.workdir / f"{args.phase}_times.json").write_text(json.dumps(times))


if __name__ == "__main__":
    main()
