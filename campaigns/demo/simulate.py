"""Simulated conversions for a campaign run, drawn from the synthetic world's ground truth.

Never from a model's scores. By default (``uncontacted_factor=None``) the world's heterogeneous treatment
effect decides (:meth:`campaigns.demo.synthetic.GroundTruth.outcome_probabilities`): a contacted customer converts
to the offered product with ``P(convert | contacted)``, a control or held-out customer with ``P(convert | not
contacted)``; persuadables convert mostly because of the contact, sure things anyway, sleeping dogs less when
contacted. With a number for ``uncontacted_factor`` the older homogeneous rule applies instead: contacted
customers convert with the ground-truth probability ``p`` (:meth:`GroundTruth.conversion_probability`), the
others with ``uncontacted_factor * p``. On top, every listed customer has a small ``organic_rate`` chance of
converting to a random catalogue product.

Given a run's whole eligible ``audience`` and its ``campaign_offers``, customers nobody contacted are simulated
too (what intention-to-treat comparisons need). With the treatment effect: every (audience customer, campaign
offer) pair converts with ``P(convert | not contacted)`` unless the customer was contacted with that offer,
then with ``P(convert | contacted)``. With the homogeneous rule: every audience customer may take each campaign
offer on their own with probability ``uncontacted_factor * p / len(campaign_offers)`` and contacted ones also
take the offered product with probability ``p``. Organic conversions are drawn for the whole audience. Delays
after exposure are exponential, so some conversions fall outside the attribution window, as in life.

Deterministic: same inputs and seed, same table (rows are sorted before any random draw).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from campaigns.demo.synthetic import GroundTruth

SCHEMA = pl.Schema(
    {
        "customer_id": pl.String(),
        "product_id": pl.String(),
        "converted_at": pl.Datetime("us"),
        "amount": pl.Float64(),
        "channel": pl.String(),
    }
)
ORGANIC_CHANNEL = "organic"
_DAY_US = 86_400 * 1_000_000


def _exposure(targets: pl.DataFrame) -> pl.Expr:
    for name in ("exposed_at", "generated_at"):
        if name in targets.columns:
            return pl.col(name).cast(pl.Datetime("us"))
    raise ValueError("targets need an exposed_at or generated_at column")


def _times(start: npt.NDArray[np.datetime64], delay_days: npt.NDArray[np.float64]) -> npt.NDArray[np.datetime64]:
    times: npt.NDArray[np.datetime64] = start + (delay_days * _DAY_US).astype("int64").astype("timedelta64[us]")
    return times


def simulate_conversions(
    targets: pl.DataFrame,
    truth: GroundTruth,
    products: pl.DataFrame,
    *,
    seed: int,
    control_arm: str = "control",
    uncontacted_factor: float | None = None,
    organic_rate: float = 0.01,
    mean_delay_days: float = 7.0,
    organic_days: float = 45.0,
    audience: pl.DataFrame | None = None,
    campaign_offers: list[str] | None = None,
) -> pl.DataFrame:
    """A SPEC ``conversions`` table (customer_id, product_id, converted_at, amount, channel) for ``targets``.

    ``targets`` holds one row per (customer, offer) of a run, control included: customer_id, offer_id, arm,
    exposed_at or generated_at, optionally channel. ``products`` is the catalogue (product_id). ``audience``
    (customer_id, exposed_at) and ``campaign_offers``: see the module docstring. ``uncontacted_factor``: None
    uses the world's treatment effect (the homogeneous factor 0.3 for worlds generated without one).
    """
    if audience is not None and campaign_offers:
        return _simulate_audience(
            targets,
            audience,
            truth,
            products,
            campaign_offers,
            seed=seed,
            uncontacted_factor=uncontacted_factor,
            organic_rate=organic_rate,
            mean_delay_days=mean_delay_days,
            organic_days=organic_days,
        )
    rng = np.random.default_rng(seed)
    rows = targets.select(
        pl.col("customer_id").cast(pl.String),
        pl.col("offer_id").cast(pl.String),
        pl.col("arm").cast(pl.String),
        _exposure(targets).alias("exposed_at"),
        pl.col("channel").cast(pl.String) if "channel" in targets.columns else pl.lit("unknown").alias("channel"),
    ).sort("customer_id", "offer_id")
    if rows.height == 0:
        return pl.DataFrame(schema=SCHEMA)

    from campaigns.arms import contacted_expr

    p0, p1 = _probabilities(
        truth, rows.select("customer_id", pl.col("offer_id").alias("product_id")), uncontacted_factor
    )
    contacted = rows.select(contacted_expr("arm") & (pl.col("arm") != control_arm))["arm"].to_numpy()
    probability = np.where(contacted, p1, p0)
    hit = rng.random(rows.height) < probability
    delays = rng.exponential(mean_delay_days, size=rows.height)
    amounts = np.round(rng.lognormal(7.0, 0.8, size=rows.height), 2)
    start = rows["exposed_at"].to_numpy()
    offered = pl.DataFrame(
        {
            "customer_id": rows["customer_id"].filter(hit),
            "product_id": rows["offer_id"].filter(hit),
            "converted_at": _times(start, delays)[hit],
            "amount": amounts[hit],
            "channel": pl.Series(np.where(contacted, rows["channel"].to_numpy(), ORGANIC_CHANNEL)).filter(hit),
        },
        schema=SCHEMA,
    )

    customers = rows.group_by("customer_id").agg(pl.col("exposed_at").min()).sort("customer_id")
    catalogue = np.sort(products["product_id"].cast(pl.String).unique().to_numpy())
    organic_hit = rng.random(customers.height) < organic_rate
    picks = catalogue[rng.integers(0, catalogue.size, size=customers.height)]
    organic_times = _times(customers["exposed_at"].to_numpy(), rng.uniform(0, organic_days, customers.height))
    organic_amounts = np.round(rng.lognormal(6.5, 0.8, size=customers.height), 2)
    organic = pl.DataFrame(
        {
            "customer_id": customers["customer_id"].filter(organic_hit),
            "product_id": picks[organic_hit],
            "converted_at": organic_times[organic_hit],
            "amount": organic_amounts[organic_hit],
            "channel": ORGANIC_CHANNEL,
        },
        schema=SCHEMA,
    )
    return pl.concat([offered, organic]).sort("customer_id", "converted_at", "product_id")


def _probabilities(
    truth: GroundTruth, pairs: pl.DataFrame, uncontacted_factor: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(P(convert | not contacted), P(convert | contacted)) per pair: the world's treatment effect, or the
    homogeneous rule when ``uncontacted_factor`` is given."""
    if uncontacted_factor is None:
        return truth.outcome_probabilities(pairs)
    p = np.nan_to_num(truth.conversion_probability(pairs), nan=0.0)
    return uncontacted_factor * p, p


def _draw(
    rows: pl.DataFrame, probability: np.ndarray, rng: np.random.Generator, *, mean_delay_days: float, channel: pl.Series
) -> pl.DataFrame:
    hit = rng.random(rows.height) < probability
    delays = rng.exponential(mean_delay_days, size=rows.height)
    amounts = np.round(rng.lognormal(7.0, 0.8, size=rows.height), 2)
    return pl.DataFrame(
        {
            "customer_id": rows["customer_id"].filter(hit),
            "product_id": rows["product_id"].filter(hit),
            "converted_at": _times(rows["exposed_at"].to_numpy(), delays)[hit],
            "amount": amounts[hit],
            "channel": channel.filter(hit),
        },
        schema=SCHEMA,
    )


def _simulate_audience(
    targets: pl.DataFrame,
    audience: pl.DataFrame,
    truth: GroundTruth,
    products: pl.DataFrame,
    campaign_offers: list[str],
    *,
    seed: int,
    uncontacted_factor: float | None,
    organic_rate: float,
    mean_delay_days: float,
    organic_days: float,
) -> pl.DataFrame:
    from campaigns.arms import contacted_expr

    rng = np.random.default_rng(seed)
    people = (
        audience.select(pl.col("customer_id").cast(pl.String), _exposure(audience).alias("exposed_at"))
        .unique("customer_id")
        .sort("customer_id")
    )
    offers = pl.DataFrame({"product_id": sorted(set(campaign_offers))})
    pairs = people.join(offers, how="cross").sort("customer_id", "product_id")
    contacted = (
        targets.filter(contacted_expr("arm"))
        .select(
            pl.col("customer_id").cast(pl.String),
            pl.col("offer_id").cast(pl.String).alias("product_id"),
            _exposure(targets).alias("exposed_at"),
            pl.col("channel").cast(pl.String) if "channel" in targets.columns else pl.lit("unknown").alias("channel"),
        )
        .unique(["customer_id", "product_id"])
        .sort("customer_id", "product_id")
    )
    if uncontacted_factor is None:  # the treatment effect: a contacted pair converts with P(. | contacted) instead
        pairs = pairs.join(contacted.select("customer_id", "product_id"), on=["customer_id", "product_id"], how="anti")
        p0, _ = truth.outcome_probabilities(pairs.select("customer_id", "product_id"))
        _, q = truth.outcome_probabilities(contacted.select("customer_id", "product_id"))
    else:
        p = np.nan_to_num(truth.conversion_probability(pairs.select("customer_id", "product_id")), nan=0.0)
        p0 = uncontacted_factor * p / offers.height
        q = np.nan_to_num(truth.conversion_probability(contacted.select("customer_id", "product_id")), nan=0.0)
    own = _draw(pairs, p0, rng, mean_delay_days=mean_delay_days, channel=pl.Series([ORGANIC_CHANNEL] * pairs.height))
    offered = _draw(contacted, q, rng, mean_delay_days=mean_delay_days, channel=contacted["channel"])
    catalogue = np.sort(products["product_id"].cast(pl.String).unique().to_numpy())
    organic_hit = rng.random(people.height) < organic_rate
    picks = catalogue[rng.integers(0, catalogue.size, size=people.height)]
    times = _times(people["exposed_at"].to_numpy(), rng.uniform(0, organic_days, people.height))
    organic = pl.DataFrame(
        {
            "customer_id": people["customer_id"].filter(organic_hit),
            "product_id": picks[organic_hit],
            "converted_at": times[organic_hit],
            "amount": np.round(rng.lognormal(6.5, 0.8, size=people.height), 2)[organic_hit],
            "channel": ORGANIC_CHANNEL,
        },
        schema=SCHEMA,
    )
    return pl.concat([own, offered, organic]).sort("customer_id", "converted_at", "product_id")


def simulate_for_run(
    targets: pl.DataFrame, world_dir: Path | str, *, seed: int, control_arm: str = "control", **options: Any
) -> pl.DataFrame:
    """:func:`simulate_conversions` with the ground truth and catalogue read from a generated world directory."""
    directory = Path(world_dir)
    products = (
        pl.read_parquet(directory / "products.parquet")
        if (directory / "products.parquet").exists()
        else pl.read_csv(directory / "products.csv", infer_schema=False)
    )
    return simulate_conversions(
        targets, GroundTruth.load(directory), products, seed=seed, control_arm=control_arm, **options
    )
