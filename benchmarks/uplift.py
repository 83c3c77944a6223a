"""Uplift benchmarks: the Hillstrom e-mail experiment against scikit-uplift and causalml, the synthetic world
against its known true uplift, and training + scoring at 1M customers.

    .venv/bin/python benchmarks/uplift.py --only hillstrom      # peers in benchmarks/.venv-uplift (created if absent)
    .venv/bin/python benchmarks/uplift.py --only synthetic --customers 100000
    .venv/bin/python benchmarks/uplift.py --only scale --customers 1000000 --data var/world1m

Hillstrom (../shared/data/hillstrom-email-campaign/): "Womens E-Mail" (treated) vs "No E-Mail" (control), outcomes
``visit`` and ``conversion``; one stratified 70/30 split (strata: treatment x visit x conversion, seed 42). Our
three learners and the peers (scikit-uplift TwoModels and ClassTransformation, causalml BaseXClassifier) use the
same LightGBM settings (:class:`campaigns.uplift.models.BoosterParams` defaults, one thread) and the same
numeric features (the three categorical columns one-hot encoded, since causalml takes numeric arrays only). Every model's test predictions are scored by the
same code (campaigns.uplift.metrics, 1,000 stratified bootstrap draws); scikit-uplift's own functions recompute
the point values in the peer venv as a cross-check.

Synthetic: a world with response types; in each of ``--runs`` past runs every customer got a random credit-card
offer and a 50/50 random contact; outcomes from the ground truth's P(convert | contacted / not). Half the
customers (salted hash) are the history (all their runs train), the other half is the next audience (one offer
each): contacting 30 % of it by predicted uplift vs by predicted response
(a LightGBM classifier of conversion on the contacted rows: "who converts when contacted") vs an oracle (true
uplift), counted in true incremental conversions (sum of P(. | contacted) - P(. | not) of those contacted).

Scale: features of every customer of a world as of its end, a T-learner fit on all of them (random 50/50
treatment, ground-truth outcomes) and every customer scored; wall-clock per stage, 2 threads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import ensure_world, machine_info  # noqa: E402
from campaigns.uplift.metrics import evaluate_uplift  # noqa: E402
from campaigns.uplift.models import BoosterParams, build_uplift_model  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
HILLSTROM = ROOT.parent / "shared/data/hillstrom-email-campaign/hillstrom_2008_email_campaign.csv"
PEER_VENV = ROOT / "benchmarks" / ".venv-uplift"
PEER_REQUIREMENTS = ["scikit-uplift==0.5.*", "causalml==0.15.*", "lightgbm>=4.3,<5"]
SEED = 42
KINDS = ("t_learner", "x_learner", "class_transformation")


def peer_python() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PEER_VENV} with {', '.join(PEER_REQUIREMENTS)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_REQUIREMENTS], check=True)
    return python


def _fmt(e) -> str:
    return f"{e.value:+.4f} [{e.low:+.4f}, {e.high:+.4f}]"


def hillstrom(args) -> dict:
    from sklearn.model_selection import train_test_split

    raw = pl.read_csv(args.hillstrom, schema_overrides={"spend": pl.Float64, "history": pl.Float64}).filter(
        pl.col("segment").is_in(["Womens E-Mail", "No E-Mail"])
    )
    data = raw.with_columns((pl.col("segment") == "Womens E-Mail").cast(pl.Int8).alias("treatment")).drop(
        "segment", "spend"
    )
    data = data.to_dummies(["history_segment", "zip_code", "channel"])  # one numeric matrix for every library
    data = data.rename({c: "".join(ch if ch.isalnum() else "_" for ch in c) for c in data.columns})
    strata = (data["treatment"] * 4 + data["visit"] * 2 + data["conversion"]).to_numpy()
    train_idx, test_idx = train_test_split(np.arange(data.height), test_size=0.3, random_state=SEED, stratify=strata)
    train, test = data[np.sort(train_idx)], data[np.sort(test_idx)]
    work = OUT / "uplift-hillstrom"
    work.mkdir(parents=True, exist_ok=True)
    train.write_csv(work / "train.csv")
    test.write_csv(work / "test.csv")
    features = [c for c in data.columns if c not in ("treatment", "visit", "conversion")]
    params = BoosterParams()
    python = peer_python()
    results = {
        "split": {
            "train": train.height,
            "test": test.height,
            "seed": SEED,
            "treated_share": float(data["treatment"].mean()),
        },
        "params": params.__dict__,
        "outcomes": {},
    }
    for outcome in ("visit", "conversion"):
        ours, seconds = {}, {}
        for kind in KINDS:
            started = time.perf_counter()
            model = build_uplift_model(kind, params.__dict__).fit(
                train.select(features), treatment=train["treatment"], outcome=train[outcome], threads=1, seed=0
            )
            ours[f"mktg_{kind}"] = model.predict(test.select(features))
            seconds[f"mktg_{kind}"] = time.perf_counter() - started
        pl.DataFrame(ours).write_csv(work / f"ours_{outcome}.csv")
        subprocess.run(
            [str(python), str(ROOT / "benchmarks" / "uplift_side.py"), str(work), outcome, json.dumps(params.__dict__)],
            check=True,
        )
        peers = pl.read_csv(work / f"peers_{outcome}.csv")
        side = json.loads((work / f"sklift_{outcome}.json").read_text())
        seconds.update(side["fit_seconds"])
        y, t = test[outcome].to_numpy(), test["treatment"].to_numpy()
        rows = {}
        for name, score in [*ours.items(), *((c, peers[c].to_numpy()) for c in peers.columns)]:
            e = evaluate_uplift(y, score, t, ks=(0.1, 0.3), draws=args.draws, seed=SEED)
            rows[name] = {**e.as_dict(), "fit_seconds": seconds[name], "sklift_check": side["metrics"][name]}
            print(
                f"{outcome:10s} {name:30s} qini {_fmt(e.qini)}  auuc {_fmt(e.auuc)}  uplift@30% {_fmt(e.uplift_at[0.3])}"
                f"  (sklift qini {side['metrics'][name]['qini_auc_score']:+.4f})  fit {seconds[name]:.1f} s",
                flush=True,
            )
        best_ours = max((n for n in rows if n.startswith("mktg_")), key=lambda n: rows[n]["qini_coefficient"]["value"])
        best_peer = max(
            (n for n in rows if not n.startswith("mktg_")), key=lambda n: rows[n]["qini_coefficient"]["value"]
        )
        results["outcomes"][outcome] = {"models": rows, "best_ours": best_ours, "best_peer": best_peer}
        print(
            f"{outcome}: best ours {best_ours} {rows[best_ours]['qini_coefficient']['value']:+.4f} vs best peer "
            f"{best_peer} {rows[best_peer]['qini_coefficient']['value']:+.4f}",
            flush=True,
        )
    results["versions"] = side["versions"]
    return results


def _synthetic_table(world_dir: Path, *, seed: int, runs: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``runs`` past campaign runs: in each, every customer gets a random credit-card offer and a 50/50 random
    contact; features as of the world's end, ground-truth outcome probabilities and one drawn outcome per row
    (column ``run`` in the second frame)."""
    from campaigns.contracts import load_world
    from campaigns.demo.synthetic import GroundTruth
    from campaigns.segments import assign_segments
    from campaigns.uplift.history import customer_features, pair_features
    from jobs.model_service import load_segment_rules
    from jobs.settings import load_events, load_settings

    settings = load_settings(ROOT / "config")
    world = load_world(world_dir, event_types=load_events(settings).event_types)
    as_of = datetime.fromisoformat(json.loads((world_dir / "ground_truth.json").read_text())["as_of"])
    started = time.perf_counter()
    segments = assign_segments(world.customers, load_segment_rules(settings), as_of=as_of)
    features = customer_features(world, segments, as_of=as_of)
    feature_seconds = time.perf_counter() - started
    rng = np.random.default_rng(seed)
    cards = np.sort(world.products.filter(pl.col("family") == "credit_card")["product_id"].to_numpy())
    truth = GroundTruth.load(world_dir)
    tables, metas = [], []
    for run in range(runs):
        ids = features["customer_id"]
        pairs = pl.DataFrame({"customer_id": ids, "offer_id": cards[rng.integers(0, cards.size, ids.len())]})
        tables.append(pair_features(features, pairs, world.products))
        p0, p1 = truth.outcome_probabilities(pairs.rename({"offer_id": "product_id"}))
        treated = rng.random(ids.len()) < 0.5
        outcome = (rng.random(ids.len()) < np.where(treated, p1, p0)).astype(np.int8)
        metas.append(
            pl.DataFrame({"customer_id": ids, "run": run, "treatment": treated, "outcome": outcome, "p0": p0, "p1": p1})
        )
    meta = pl.concat(metas).with_columns(pl.lit(feature_seconds).alias("feature_seconds"))
    return pl.concat(tables), meta


def synthetic(args) -> dict:
    from campaigns.arms import buckets

    world_dir = Path(args.data) if args.data else OUT / f"world-{args.customers}"
    ensure_world(world_dir, args.customers, SEED)
    table, meta = _synthetic_table(world_dir, seed=SEED, runs=args.runs)
    x = table.drop("customer_id")
    history = buckets(meta["customer_id"], salt="bench", campaign_id="uplift") < 0.5
    train = history  # every past run of the history customers
    audience = ~history & (meta["run"] == 0).to_numpy()  # the next campaign: the other customers, one offer each
    x, meta, table = x.filter(pl.Series(train | audience)), meta.filter(pl.Series(train | audience)), None
    train = train[(train | audience)]
    t, y = meta["treatment"].to_numpy(), meta["outcome"].to_numpy()
    true = (meta["p1"] - meta["p0"]).to_numpy()
    xt, xs = x.filter(pl.Series(train)), x.filter(pl.Series(~train))
    scores = {}
    for kind in KINDS:
        model = build_uplift_model(kind).fit(xt, treatment=t[train], outcome=y[train], threads=args.threads, seed=0)
        scores[kind] = model.predict(xs, threads=args.threads)
    response = build_uplift_model("t_learner")  # its treated model alone = a response model on contacted rows
    response.fit(xt, treatment=t[train], outcome=y[train], threads=args.threads, seed=0)
    scores["response (P(convert | contacted))"] = response._score(
        "treated", response.encoding.matrix(xs), threads=args.threads
    )
    target_true = true[~train]
    n_contact = int(round(0.3 * target_true.size))
    oracle = np.sort(target_true)[::-1][:n_contact].sum()
    out = {
        "customers": int(meta["customer_id"].n_unique()),
        "history_runs": args.runs,
        "train_rows": int(train.sum()),
        "audience": int((~train).sum()),
        "contacts": n_contact,
        "oracle_incremental": float(oracle),
        "random_incremental": float(target_true.mean() * n_contact),
        "policies": {},
    }
    print(
        f"next audience {target_true.size:,}, contact 30 % = {n_contact:,}: oracle {oracle:.1f} incremental "
        f"conversions, random {target_true.mean() * n_contact:.1f}",
        flush=True,
    )
    for name, score in scores.items():
        chosen = np.argsort(-score, kind="stable")[:n_contact]
        got = float(target_true[chosen].sum())
        q = evaluate_uplift(y[~train], score, t[~train], ks=(0.3,), draws=200, seed=SEED)
        out["policies"][name] = {"incremental": got, "share_of_oracle": got / oracle, "qini_observed": q.qini.as_dict()}
        print(
            f"  {name:40s} {got:8.1f} incremental = {got / oracle:6.1%} of the oracle; observed Qini {_fmt(q.qini)}",
            flush=True,
        )
    return out


def scale(args) -> dict:
    world_dir = Path(args.data) if args.data else OUT / f"world-{args.customers}"
    ensure_world(world_dir, args.customers, SEED)
    started = time.perf_counter()
    table, meta = _synthetic_table(world_dir, seed=SEED)
    prepared = time.perf_counter() - started
    x = table.drop("customer_id")
    started = time.perf_counter()
    model = build_uplift_model("t_learner").fit(
        x, treatment=meta["treatment"].to_numpy(), outcome=meta["outcome"].to_numpy(), threads=args.threads, seed=0
    )
    fit = time.perf_counter() - started
    started = time.perf_counter()
    predicted = model.predict(x, threads=args.threads)
    score = time.perf_counter() - started
    out = {
        "customers": int(meta.height),
        "features_seconds": float(meta["feature_seconds"][0]),
        "prepare_seconds_total": prepared,
        "fit_seconds": fit,
        "score_seconds": score,
        "train_and_score_seconds": float(meta["feature_seconds"][0]) + fit + score,
        "threads": args.threads,
        "corr_with_true_uplift": float(np.corrcoef(predicted, (meta["p1"] - meta["p0"]).to_numpy())[0, 1]),
    }
    print(json.dumps(out, indent=2), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["hillstrom", "synthetic", "scale"], action="append")
    parser.add_argument("--hillstrom", type=Path, default=HILLSTROM)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--data", help="world directory (default: benchmarks/out/world-<customers>)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="synthetic: past runs (random offer, random contact) the history customers took part in",
    )
    parser.add_argument("--draws", type=int, default=1000, help="bootstrap draws for the Hillstrom intervals")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine_info(), "started": datetime.now().isoformat(timespec="seconds")}
    for part in args.only or ["hillstrom", "synthetic", "scale"]:
        results[part] = {"hillstrom": hillstrom, "synthetic": synthetic, "scale": scale}[part](args)
    name = (
        "uplift-"
        + "-".join(args.only or ["all"])
        + (f"-{args.customers}" if set(args.only or []) - {"hillstrom"} else "")
    )
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
