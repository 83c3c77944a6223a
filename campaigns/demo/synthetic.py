"""A synthetic consumer-finance world with hidden ground-truth preferences.

Customers (age, income, region, occupation, student flag, housing, tenure), a catalogue of 40 offers in
seven families with per-offer risk thresholds, risk data correlated with income and age (some missing,
some stale, a few fraud/blacklist flags, some delinquent), consents per channel, a suppression list, and
12 months of funnel events (impression -> click -> application -> approval -> activation) drawn from the
ground truth. The ground truth is a factorisation: ``utility = customer_vector . offer_vector + offer_bias``
where the vectors hold a latent-factor part plus segment effects (life stage x offer family), so later
stages can evaluate against it and simulate conversions from it (:class:`GroundTruth`).

The effect of a contact is heterogeneous: every customer has a hidden *response type* (``persuadable``,
``sure_thing``, ``lost_cause``, ``sleeping_dog``) drawn from their observable profile and activity, and the
chance of converting to an offer is ``q * contacted[type]`` when contacted and ``q * uncontacted[type]``
otherwise, with ``q = sigmoid(utility - CONVERSION_OFFSET)`` (:data:`RESPONSE_TYPES`). Persuadables convert
mostly because they were contacted, sure things convert anyway, lost causes hardly at all, and sleeping dogs
are put off by a contact. The types come from their own random stream, so the other tables are the same bytes
as without them.

Generation is chunked over customers with a fixed chunk size and per-chunk seeds, so the same seed gives
the same bytes and a million customers fit in a few GiB.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow.parquet as pq

CHUNK_CUSTOMERS = 50_000
LATENT_DIM = 8
DEFAULT_AS_OF = datetime(2026, 11, 1)
HISTORY_DAYS = 365
CHANNELS = ("email", "sms", "app_push", "call")
CONSENT_RATE = {"email": 0.78, "sms": 0.66, "app_push": 0.58, "call": 0.36}
REGIONS = ("north", "south", "east", "west", "capital", "coast", "mountain", "lakes", "central", "islands")
OCCUPATIONS = ("employee", "self_employed", "civil_servant", "retired", "unemployed", "student")
EVENT_CHANNELS = ("app", "web", "branch", "call_centre", "email")
CREDIT_FAMILIES = ("credit_card", "personal_loan", "instalment", "mortgage")
FAMILIES = ("credit_card", "personal_loan", "instalment", "mortgage", "deposit", "wealth", "insurance")

# product_id, family, name, min_age, max_age, min_credit_score, max_dti, apr, margin
CATALOGUE: tuple[tuple[Any, ...], ...] = (
    ("CC_CLASSIC", "credit_card", "Classic credit card", 18, None, 580, 0.45, 0.219, 120),
    ("CC_GOLD", "credit_card", "Gold credit card", 21, None, 650, 0.40, 0.189, 180),
    ("CC_PLATINUM", "credit_card", "Platinum credit card", 25, None, 720, 0.35, 0.169, 260),
    ("CC_CASHBACK", "credit_card", "Cashback credit card", 18, None, 640, 0.40, 0.229, 150),
    ("CC_TRAVEL", "credit_card", "Travel rewards card", 21, None, 700, 0.38, 0.199, 200),
    ("CC_SECURED", "credit_card", "Secured credit card", 18, None, 500, 0.55, 0.249, 60),
    ("CC_BALANCE", "credit_card", "Balance-transfer card", 21, None, 660, 0.42, 0.149, 140),
    ("PL_SMALL", "personal_loan", "Small personal loan", 18, 75, 600, 0.45, 0.119, 300),
    ("PL_MEDIUM", "personal_loan", "Personal loan", 21, 75, 640, 0.40, 0.099, 450),
    ("PL_LARGE", "personal_loan", "Large personal loan", 23, 70, 690, 0.35, 0.089, 700),
    ("PL_CAR", "personal_loan", "Car loan", 18, 75, 620, 0.40, 0.079, 500),
    ("PL_HOME_IMPROVE", "personal_loan", "Home improvement loan", 21, 75, 650, 0.40, 0.089, 550),
    ("PL_CONSOLIDATE", "personal_loan", "Debt consolidation loan", 21, 70, 620, 0.50, 0.109, 400),
    ("INST_ELECTRONICS", "instalment", "Electronics instalment plan", 18, None, 560, 0.50, 0.0, 80),
    ("INST_FURNITURE", "instalment", "Furniture instalment plan", 18, None, 580, 0.50, 0.049, 90),
    ("INST_TRAVEL", "instalment", "Travel instalment plan", 18, None, 600, 0.45, 0.059, 70),
    ("INST_BNPL_3", "instalment", "Pay in 3", 18, None, 540, 0.55, 0.0, 30),
    ("INST_BNPL_12", "instalment", "Pay in 12", 18, None, 580, 0.50, 0.079, 60),
    ("INST_HEALTH", "instalment", "Health & dental instalments", 18, None, 580, 0.50, 0.039, 50),
    ("MTG_FIXED", "mortgage", "Fixed-rate mortgage", 21, 65, 700, 0.35, 0.039, 2500),
    ("MTG_VARIABLE", "mortgage", "Variable-rate mortgage", 21, 65, 690, 0.35, 0.034, 2200),
    ("MTG_FIRST_HOME", "mortgage", "First-home mortgage", 21, 45, 660, 0.38, 0.036, 2000),
    ("DEP_SAVINGS", "deposit", "Instant-access savings", 16, None, None, None, None, 20),
    ("DEP_TERM_6M", "deposit", "6-month term deposit", 18, None, None, None, None, 35),
    ("DEP_TERM_12M", "deposit", "12-month term deposit", 18, None, None, None, None, 45),
    ("DEP_TERM_36M", "deposit", "36-month term deposit", 18, None, None, None, None, 60),
    ("DEP_YOUTH", "deposit", "Youth saver", 16, 30, None, None, None, 15),
    ("DEP_SENIOR", "deposit", "Senior saver", 60, None, None, None, None, 40),
    ("WLT_INDEX", "wealth", "Index fund", 18, None, None, None, None, 90),
    ("WLT_BOND", "wealth", "Bond fund", 18, None, None, None, None, 80),
    ("WLT_EQUITY", "wealth", "Equity fund", 18, None, None, None, None, 110),
    ("WLT_PENSION", "wealth", "Pension plan", 18, 67, None, None, None, 150),
    ("WLT_MANAGED", "wealth", "Managed portfolio", 25, None, None, None, None, 400),
    ("WLT_ROBO", "wealth", "Robo-advisor", 18, None, None, None, None, 60),
    ("INS_LIFE", "insurance", "Life insurance", 18, 70, None, None, None, 200),
    ("INS_HOME", "insurance", "Home insurance", 18, None, None, None, None, 120),
    ("INS_TRAVEL", "insurance", "Travel insurance", 18, None, None, None, None, 40),
    ("INS_CAR", "insurance", "Car insurance", 18, None, None, None, None, 110),
    ("INS_PAYMENT", "insurance", "Payment protection", 18, 70, None, None, None, 70),
    ("INS_HEALTH", "insurance", "Health insurance", 18, None, None, None, None, 160),
)

# Life-stage groups (customer indicators) and their effect on each family's utility.
GROUPS = ("young", "young_renter", "family", "affluent", "retired", "student", "low_income")
GROUP_EFFECTS = {
    "young": {"credit_card": 0.6, "instalment": 1.0, "deposit": 0.2, "wealth": -0.8, "mortgage": -0.6},
    "young_renter": {"instalment": 0.6, "credit_card": 0.5, "insurance": -0.3},
    "family": {"mortgage": 1.2, "insurance": 0.7, "personal_loan": 0.5},
    "affluent": {"wealth": 1.6, "deposit": 0.5, "instalment": -0.7, "personal_loan": -0.4},
    "retired": {"deposit": 1.1, "insurance": 0.7, "credit_card": -0.5, "instalment": -0.8, "mortgage": -1.2},
    "student": {"deposit": 0.6, "instalment": 0.6, "wealth": -1.0, "mortgage": -1.5},
    "low_income": {"personal_loan": 0.6, "instalment": 0.7, "wealth": -1.2},
}
CONVERSION_OFFSET = 4.0  # P(convert | offered) = sigmoid(utility - CONVERSION_OFFSET)

# Response type -> (multiplier of q when not contacted, when contacted): the true treatment effect.
RESPONSE_TYPES: dict[str, tuple[float, float]] = {
    "persuadable": (0.08, 0.9),
    "sure_thing": (1.5, 1.5),
    "lost_cause": (0.02, 0.05),
    "sleeping_dog": (0.4, 0.1),
}
LEGACY_UNCONTACTED = 0.3  # worlds generated before response types: P(convert | not contacted) = 0.3 q
RESPONSE_STREAM = 7_919  # seed suffix of the response-type random stream (independent of the other tables)


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    result: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-x))
    return result


def customer_ids(start: int, stop: int) -> np.ndarray:
    return np.char.add("C", np.char.zfill(np.arange(start, stop).astype(str), 8))


@dataclass(frozen=True)
class Catalogue:
    frame: pl.DataFrame  # the products table
    vectors: np.ndarray  # (n_products, LATENT_DIM + len(GROUPS)) ground-truth offer vectors
    bias: np.ndarray

    @property
    def families(self) -> np.ndarray:
        return self.frame["family"].to_numpy()


def build_catalogue(seed: int) -> Catalogue:
    rng = np.random.default_rng([seed, 1_000_000_007])
    cols = ("product_id", "family", "name", "min_age", "max_age", "min_credit_score", "max_dti", "apr", "margin")
    frame = pl.DataFrame(
        [dict(zip(cols, row)) for row in CATALOGUE],
        schema={
            "product_id": pl.String,
            "family": pl.String,
            "name": pl.String,
            "min_age": pl.Int32,
            "max_age": pl.Int32,
            "min_credit_score": pl.Float64,
            "max_dti": pl.Float64,
            "apr": pl.Float64,
            "margin": pl.Float64,
        },
    )
    capacity = [5_000 if f in ("mortgage", "wealth") else None for f in frame["family"]]
    frame = frame.with_columns(
        pl.lit(datetime(2024, 1, 1)).alias("active_from"),
        pl.lit(None, dtype=pl.Datetime("us")).alias("active_to"),
        pl.Series("capacity", capacity, dtype=pl.Int64),
    )
    family_index = {f: i for i, f in enumerate(FAMILIES)}
    fam = np.array([family_index[f] for f in frame["family"]])
    family_vecs = rng.normal(0, 1, size=(len(FAMILIES), LATENT_DIM))
    own = rng.normal(0, 1, size=(frame.height, LATENT_DIM))
    latent = 0.75 * family_vecs[fam] + 0.45 * own
    effects = np.array([[GROUP_EFFECTS[g].get(f, 0.0) for g in GROUPS] for f in frame["family"]])
    bias = rng.normal(0, 0.35, size=frame.height) + np.where(
        np.isin(frame["family"].to_numpy(), ("mortgage",)), -0.6, 0
    )
    return Catalogue(frame=frame, vectors=np.hstack([latent, effects]), bias=bias)


@dataclass
class _Chunk:
    customers: pl.DataFrame
    consents: pl.DataFrame
    risk: pl.DataFrame
    holdings: pl.DataFrame
    suppression: pl.DataFrame
    events: pl.DataFrame
    truth: pl.DataFrame


def _customers(
    rng: np.random.Generator, ids: np.ndarray, as_of: datetime
) -> tuple[pl.DataFrame, np.ndarray, dict[str, Any]]:
    n = ids.size
    age = np.clip(rng.gamma(7.0, 6.2, size=n) + 14, 18, 92).astype(np.int32)
    minors = rng.random(n) < 0.006
    age[minors] = rng.integers(16, 18, size=minors.sum())
    student = ((age <= 27) & (rng.random(n) < 0.32)) | minors & (rng.random(n) < 0.8)
    retired = (age >= 63) & (rng.random(n) < 0.85)
    occ_draw = rng.choice(np.array(OCCUPATIONS[:3] + ("unemployed",)), size=n, p=[0.68, 0.14, 0.11, 0.07])
    occupation = np.where(student, "student", np.where(retired, "retired", occ_draw))
    age_curve = 1.0 - ((age - 50) / 40.0) ** 2
    base = (
        10.2
        + 0.55 * age_curve
        + np.where(occupation == "self_employed", 0.15, 0)
        + np.where(occupation == "civil_servant", 0.1, 0)
        - np.where(student, 0.9, 0)
        - np.where(occupation == "unemployed", 0.7, 0)
    )
    income = np.round(np.exp(base + rng.normal(0, 0.45, size=n)), -1)
    housing_p = np.where(age < 30, 0.62, np.where(age < 45, 0.4, 0.15))
    with_parents = (age < 25) & (rng.random(n) < 0.45)
    housing = np.where(with_parents, "with_parents", np.where(rng.random(n) < housing_p, "renter", "owner"))
    days_old = (age * 365.25 + rng.integers(0, 365, size=n)).astype("timedelta64[D]")
    birth = (np.datetime64(as_of.date()) - days_old).astype("datetime64[D]")
    tenure = np.minimum(rng.gamma(1.6, 40, size=n), (age - 15) * 12).astype(np.int32)
    frame = pl.DataFrame(
        {
            "customer_id": ids,
            "birth_date": birth,
            "income": income,
            "region": rng.choice(np.array(REGIONS), size=n, p=np.array([12, 11, 10, 10, 18, 9, 6, 6, 12, 6]) / 100),
            "gender": rng.choice(np.array(["F", "M", "X"]), size=n, p=[0.495, 0.495, 0.01]),
            "occupation": occupation,
            "is_student": student,
            "tenure_months": tenure,
            "housing": housing,
        }
    )
    groups = np.column_stack(
        [
            age < 30,
            (age < 35) & (housing == "renter"),
            (age >= 30) & (age < 56) & (housing == "owner"),
            income > 75_000,
            (age >= 65) | (occupation == "retired"),
            student,
            income < 22_000,
        ]
    ).astype(np.float64)
    return frame, groups, {"age": age, "income": income, "student": student}


def _risk(rng: np.random.Generator, ids: np.ndarray, traits: dict[str, Any], as_of: datetime) -> pl.DataFrame:
    n = ids.size
    z_income = (np.log(traits["income"]) - 10.3) / 0.6
    score = 640 + 45 * z_income + 1.2 * (traits["age"] - 40) + rng.normal(0, 60, size=n)
    score = np.clip(np.round(score), 300, 850)
    delinquent = rng.random(n) < (0.05 + 0.04 * (z_income < -1))
    dpd_current = np.where(delinquent, rng.choice([5, 15, 30, 60, 90], size=n, p=[0.4, 0.25, 0.2, 0.1, 0.05]), 0)
    past = rng.random(n) < 0.12
    max_dpd = np.maximum(dpd_current, np.where(past, rng.choice([5, 15, 30, 60, 90], size=n), 0))
    score = np.clip(np.where(max_dpd >= 30, score - 80, score), 300, 850)  # stays inside the rules' valid range
    dti = np.clip(rng.normal(0.32 - 0.06 * z_income, 0.12, size=n), 0.0, 1.6).round(3)
    age_days = np.where(rng.random(n) < 0.05, rng.integers(100, 400, size=n), rng.integers(0, 30, size=n))
    as_of_arr = np.datetime64(as_of, "us") - (age_days * 86_400 + rng.integers(0, 86_400, size=n)).astype(
        "timedelta64[s]"
    )
    frame = pl.DataFrame(
        {
            "customer_id": ids,
            "as_of": as_of_arr.astype("datetime64[us]"),
            "credit_score": np.where(rng.random(n) < 0.01, np.nan, score),
            "dpd_current": dpd_current.astype(np.int32),
            "max_dpd_12m": max_dpd.astype(np.int32),
            "dti": dti,
            "fraud_flag": rng.random(n) < 0.003,
            "blacklisted": rng.random(n) < 0.002,
            "kyc_ok": rng.random(n) >= 0.015,
            "total_exposure": np.round(traits["income"] * dti * rng.uniform(2, 6, size=n), -1),
        }
    ).with_columns(pl.col("credit_score").fill_nan(None))
    keep = rng.random(n) >= 0.03  # 3% of customers have no risk record at all
    return frame.filter(pl.Series(keep))


def _consents(rng: np.random.Generator, ids: np.ndarray, as_of: datetime) -> pl.DataFrame:
    parts = []
    start = np.datetime64(as_of - timedelta(days=3 * 365), "s")
    for channel in CHANNELS:
        present = rng.random(ids.size) >= 0.03
        granted = rng.random(ids.size) < CONSENT_RATE[channel]
        updated = start + rng.integers(0, 2 * 365 * 86_400, size=ids.size).astype("timedelta64[s]")
        part = pl.DataFrame(
            {
                "customer_id": ids,
                "channel": channel,
                "purpose": "marketing",
                "granted": granted,
                "updated_at": updated.astype("datetime64[us]"),
                "source": rng.choice(np.array(["app", "branch", "web"]), size=ids.size),
            }
        ).filter(pl.Series(present))
        withdrawn = part.filter(pl.col("granted") & pl.Series(rng.random(part.height) < 0.05)).with_columns(
            pl.lit(False).alias("granted"),
            (pl.col("updated_at") + pl.duration(days=200)).alias("updated_at"),
            pl.lit("web").alias("source"),
        )
        parts += [part, withdrawn]
    return pl.concat(parts).sort("customer_id", "channel", "updated_at", maintain_order=True)


def _suppression(rng: np.random.Generator, ids: np.ndarray, as_of: datetime) -> pl.DataFrame:
    chosen = rng.random(ids.size) < 0.015
    n = int(chosen.sum())
    reason = rng.choice(
        np.array(["do_not_contact", "complaint", "bereavement", "vulnerable"]), size=n, p=[0.5, 0.25, 0.1, 0.15]
    )
    picked = rng.choice(np.array(CHANNELS), size=n)
    channel = [c if r == "complaint" else None for r, c in zip(reason, picked)]
    until_days = rng.integers(-120, 240, size=n)
    until = [None if r == "do_not_contact" else as_of + timedelta(days=int(d)) for r, d in zip(reason, until_days)]
    return pl.DataFrame(
        {
            "customer_id": ids[chosen],
            "reason": reason,
            "channel": pl.Series(channel, dtype=pl.String),
            "until": pl.Series(until, dtype=pl.Datetime("us")),
        }
    )


def _events(
    rng: np.random.Generator,
    ids: np.ndarray,
    utility: np.ndarray,
    catalogue: Catalogue,
    risk_score: np.ndarray,
    as_of: datetime,
    impressions_per_customer: float,
) -> tuple[pl.DataFrame, pl.DataFrame, npt.NDArray[np.float64]]:
    n, p = utility.shape
    activity: npt.NDArray[np.float64] = np.asarray(rng.gamma(2.0, 0.5, size=n))
    exposure = np.exp(0.55 * utility)
    exposure = 0.6 * exposure / exposure.sum(axis=1, keepdims=True) + 0.4 / p  # bank targeting is only partly informed
    counts: npt.NDArray[np.int64] = np.asarray(rng.poisson(impressions_per_customer * activity[:, None] * exposure))
    cust, prod = np.nonzero(counts)
    reps = counts[cust, prod]
    cust = np.repeat(cust, reps)
    prod = np.repeat(prod, reps)
    u = utility[cust, prod]
    end = np.datetime64(as_of, "s")
    t0 = (
        end
        - np.timedelta64(HISTORY_DAYS * 86_400, "s")
        + rng.integers(0, HISTORY_DAYS * 86_400, size=cust.size).astype("timedelta64[s]")
    )
    min_score = catalogue.frame["min_credit_score"].fill_null(0).to_numpy()[prod]
    score = np.nan_to_num(risk_score[cust], nan=550.0)
    steps = {
        "click": (_sigmoid(1.3 * u - 3.0), 3_600 * 2),
        "application": (_sigmoid(1.3 * u - 1.0), 86_400 * 2),
        "approval": (np.where(score >= min_score, 0.92, 0.08), 86_400 * 3),
        "activation": (_sigmoid(u + 0.5), 86_400 * 5),
    }
    times = [t0]
    alive = np.ones(cust.size, dtype=bool)
    frames = [(np.nonzero(alive)[0], "impression", t0)]
    current = t0
    for name, (prob, mean_delay) in steps.items():
        current = current + rng.exponential(mean_delay, size=cust.size).astype("timedelta64[s]")
        alive = alive & (rng.random(cust.size) < prob) & (current <= end)
        frames.append((np.nonzero(alive)[0], name, current))
        times.append(current)
    channel_pick = rng.integers(0, len(EVENT_CHANNELS), size=cust.size)
    amount = np.round(rng.lognormal(8.0, 1.0, size=cust.size), 2)
    pid = catalogue.frame["product_id"].to_numpy()
    parts = []
    for rows, name, t in frames:
        parts.append(
            pl.DataFrame(
                {
                    "customer_id": ids[cust[rows]],
                    "product_id": pid[prod[rows]],
                    "event_type": name,
                    "event_time": t[rows].astype("datetime64[us]"),
                    "channel": np.array(EVENT_CHANNELS)[channel_pick[rows]],
                    "amount": amount[rows] if name == "activation" else np.full(rows.size, np.nan),
                }
            )
        )
    events = (
        pl.concat(parts)
        .with_columns(pl.col("amount").fill_nan(None))
        .sort("customer_id", "event_time", "product_id", "event_type", maintain_order=True)
    )
    activations = events.filter(pl.col("event_type") == "activation")
    return events, activations, activity


def _response_types(
    rng: np.random.Generator, customers: pl.DataFrame, traits: dict[str, Any], activity: np.ndarray
) -> np.ndarray:
    """Each customer's response type, drawn from a softmax over their profile and (hidden) activity.

    Busy customers mostly convert anyway (sure things), working-age renters are persuadable, the unemployed and
    students are mostly lost causes, and older long-standing customers are the ones a contact puts off.
    """
    age, income = traits["age"], traits["income"]
    occupation = customers["occupation"].to_numpy()
    housing = customers["housing"].to_numpy()
    tenure = customers["tenure_months"].to_numpy()
    z = (np.log(activity) - np.log(0.75)) / 0.75
    logits = (
        np.column_stack(
            [
                1.6 * ((age >= 25) & (age < 55)) + 1.0 * (housing == "renter") - 1.2 * z - 0.6,  # persuadable
                2.2 * z + 0.8 * (income > 60_000) - 0.6,  # sure_thing
                2.0 * np.isin(occupation, ("unemployed", "student")) - 0.8 * z + 0.2,  # lost_cause
                2.2 * (age >= 60) + 1.0 * (tenure > 120) - 1.8,  # sleeping_dog
            ]
        )
        * 2.0
    )
    draw = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    types: np.ndarray = np.array(list(RESPONSE_TYPES))[draw]
    return types


def _holdings(rng: np.random.Generator, ids: np.ndarray, activations: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    from_funnel = activations.group_by("customer_id", "product_id", maintain_order=True).agg(
        pl.col("event_time").min().alias("since")
    )
    # Most customers already hold an instant-access savings account from before the event history.
    has_savings = rng.random(ids.size) < 0.55
    start = np.datetime64(as_of - timedelta(days=HISTORY_DAYS + 10 * 365), "s")
    since = start + rng.integers(0, 9 * 365 * 86_400, size=ids.size).astype("timedelta64[s]")
    prior = pl.DataFrame(
        {"customer_id": ids, "product_id": "DEP_SAVINGS", "since": since.astype("datetime64[us]")}
    ).filter(pl.Series(has_savings))
    holdings = (
        pl.concat([prior, from_funnel.select("customer_id", "product_id", "since")])
        .unique(["customer_id", "product_id"], keep="first", maintain_order=True)
        .sort("customer_id", "product_id", maintain_order=True)
    )
    closed = rng.random(holdings.height) < 0.08
    until = pl.Series(
        "until",
        np.where(closed, np.datetime64(as_of, "us") - np.timedelta64(5 * 86_400_000_000, "us"), np.datetime64("NaT")),
    )
    return holdings.with_columns(until.alias("until"))


def _chunk(
    seed: int, index: int, start: int, stop: int, catalogue: Catalogue, as_of: datetime, impressions_per_customer: float
) -> _Chunk:
    rng = np.random.default_rng([seed, index])
    ids = customer_ids(start, stop)
    customers, groups, traits = _customers(rng, ids, as_of)
    latent = rng.normal(0, 0.6, size=(ids.size, LATENT_DIM))
    cvec = np.hstack([latent, groups])
    utility = cvec @ catalogue.vectors.T + catalogue.bias
    risk = _risk(rng, ids, traits, as_of)
    score_lookup = pl.DataFrame({"customer_id": ids}).join(
        risk.select("customer_id", "credit_score"), on="customer_id", how="left"
    )
    events, activations, activity = _events(
        rng,
        ids,
        utility,
        catalogue,
        score_lookup["credit_score"].fill_null(np.nan).to_numpy(),
        as_of,
        impressions_per_customer,
    )
    response = _response_types(np.random.default_rng([seed, index, RESPONSE_STREAM]), customers, traits, activity)
    truth = pl.DataFrame(
        {"customer_id": ids, **{f"gt_{i}": cvec[:, i] for i in range(cvec.shape[1])}, "response_type": response}
    )
    return _Chunk(
        customers=customers,
        consents=_consents(rng, ids, as_of),
        risk=risk,
        holdings=_holdings(rng, ids, activations, as_of),
        suppression=_suppression(rng, ids, as_of),
        events=events,
        truth=truth,
    )


class _TableWriter:
    """Appends chunks to one Parquet or CSV file under a temporary name; ``close`` renames it into place."""

    def __init__(self, path: Path, fmt: str):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.fmt = fmt
        self._writer: pq.ParquetWriter | None = None
        self._fh: BinaryIO | None = None

    def write(self, frame: pl.DataFrame) -> None:
        if self.fmt == "parquet":
            table = frame.to_arrow()
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
            self._writer.write_table(table.cast(self._writer.schema))
        else:
            first = self._fh is None
            if first:
                self._fh = self.tmp.open("wb")
            frame.write_csv(self._fh, include_header=first, datetime_format="%Y-%m-%dT%H:%M:%S%.6f")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._fh is not None:
            self._fh.close()
        self.tmp.replace(self.path)


def generate_world(
    out: Path | str,
    *,
    customers: int = 20_000,
    seed: int = 42,
    fmt: Literal["parquet", "csv"] = "parquet",
    as_of: datetime = DEFAULT_AS_OF,
    impressions_per_customer: float = 18.0,
    progress: Callable[[int, int], object] | None = None,
) -> dict[str, int]:
    """Write every SPEC table plus the ground truth to ``out``; return row counts per table.

    ``progress`` is an optional callable ``(done_customers, total)`` for a progress bar.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    catalogue = build_catalogue(seed)
    tables = ("customers", "consents", "risk", "holdings", "suppression", "events")
    writers = {name: _TableWriter(out / f"{name}.{fmt}", fmt) for name in tables}
    truth_writer = _TableWriter(out / "ground_truth_customers.parquet", "parquet")
    counts = dict.fromkeys(tables, 0)
    for index, start in enumerate(range(0, customers, CHUNK_CUSTOMERS)):
        stop = min(start + CHUNK_CUSTOMERS, customers)
        chunk = _chunk(seed, index, start, stop, catalogue, as_of, impressions_per_customer)
        for name in tables:
            frame = getattr(chunk, name)
            writers[name].write(frame)
            counts[name] += frame.height
        truth_writer.write(chunk.truth)
        if progress:
            progress(stop, customers)
    for writer in (*writers.values(), truth_writer):
        writer.close()
    products = catalogue.frame
    (
        products.write_parquet(out / "products.parquet")
        if fmt == "parquet"
        else products.write_csv(out / "products.csv", datetime_format="%Y-%m-%dT%H:%M:%S")
    )
    counts["products"] = products.height
    pl.DataFrame(
        {
            "product_id": products["product_id"],
            "bias": catalogue.bias,
            **{f"gt_{i}": catalogue.vectors[:, i] for i in range(catalogue.vectors.shape[1])},
        }
    ).write_parquet(out / "ground_truth_offers.parquet")
    meta = {
        "seed": seed,
        "customers": customers,
        "as_of": as_of.isoformat(),
        "latent_dim": LATENT_DIM,
        "groups": list(GROUPS),
        "conversion_offset": CONVERSION_OFFSET,
        "formula": "utility = sum_i customer.gt_i * offer.gt_i + offer.bias; q = sigmoid(utility - conversion_offset); "
        "P(convert | contacted) = min(1, q * response_types[type][1]), "
        "P(convert | not contacted) = min(1, q * response_types[type][0])",
        "response_types": {name: list(factors) for name, factors in RESPONSE_TYPES.items()},
    }
    (out / "ground_truth.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return counts


@dataclass(frozen=True)
class GroundTruth:
    """The hidden preferences of a generated world (for evaluation and conversion simulation only)."""

    customers: pl.DataFrame  # customer_id, gt_0..gt_{d-1}, response_type (worlds before response types: none)
    offers: pl.DataFrame  # product_id, bias, gt_0..gt_{d-1}
    conversion_offset: float
    response_types: dict[str, tuple[float, float]] | None = None  # type -> (uncontacted, contacted) multipliers

    @classmethod
    def load(cls, directory: Path | str) -> GroundTruth:
        directory = Path(directory)
        meta = json.loads((directory / "ground_truth.json").read_text())
        types = meta.get("response_types")
        return cls(
            customers=pl.read_parquet(directory / "ground_truth_customers.parquet"),
            offers=pl.read_parquet(directory / "ground_truth_offers.parquet"),
            conversion_offset=float(meta["conversion_offset"]),
            response_types={k: (float(v[0]), float(v[1])) for k, v in types.items()} if types else None,
        )

    @property
    def has_treatment_effect(self) -> bool:
        return self.response_types is not None and "response_type" in self.customers.columns

    def _vectors(self, frame: pl.DataFrame) -> np.ndarray:
        return frame.select(pl.col(r"^gt_\d+$")).to_numpy()

    def utility_matrix(self, customer_ids: pl.Series | list[str], offer_ids: pl.Series | list[str]) -> np.ndarray:
        """Dense (customers x offers) utilities, in the order given."""
        cust = pl.DataFrame({"customer_id": pl.Series(customer_ids, dtype=pl.String)}).join(
            self.customers, on="customer_id", how="left", maintain_order="left"
        )
        offers = pl.DataFrame({"product_id": pl.Series(offer_ids, dtype=pl.String)}).join(
            self.offers, on="product_id", how="left", maintain_order="left"
        )
        utilities: np.ndarray = self._vectors(cust) @ self._vectors(offers).T + offers["bias"].to_numpy()
        return utilities

    def utility(self, pairs: pl.DataFrame) -> np.ndarray:
        """Utility of each (customer_id, product_id) row of ``pairs``."""
        cust = pairs.select("customer_id").join(self.customers, on="customer_id", how="left", maintain_order="left")
        offers = pairs.select("product_id").join(self.offers, on="product_id", how="left", maintain_order="left")
        utilities: np.ndarray = np.einsum("ij,ij->i", self._vectors(cust), self._vectors(offers))
        utilities += offers["bias"].to_numpy()
        return utilities

    def conversion_probability(self, pairs: pl.DataFrame) -> np.ndarray:
        return _sigmoid(self.utility(pairs) - self.conversion_offset)

    def outcome_probabilities(self, pairs: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(P(convert | not contacted), P(convert | contacted)) of each (customer_id, product_id) row.

        Worlds without response types: the contacted probability is :meth:`conversion_probability` and the
        uncontacted one :data:`LEGACY_UNCONTACTED` times it. Unknown customers or offers get 0.
        """
        q = np.nan_to_num(self.conversion_probability(pairs), nan=0.0)
        if not self.has_treatment_effect or self.response_types is None:
            return LEGACY_UNCONTACTED * q, q
        kinds = pairs.select("customer_id").join(
            self.customers.select("customer_id", "response_type"), on="customer_id", how="left", maintain_order="left"
        )["response_type"]
        table = pl.DataFrame(
            {
                "response_type": list(self.response_types),
                "m0": [v[0] for v in self.response_types.values()],
                "m1": [v[1] for v in self.response_types.values()],
            }
        )
        factors = kinds.to_frame().join(table, on="response_type", how="left", maintain_order="left")
        m0 = factors["m0"].fill_null(0.0).to_numpy()
        m1 = factors["m1"].fill_null(0.0).to_numpy()
        return np.minimum(1.0, q * m0), np.minimum(1.0, q * m1)

    def true_uplift(self, pairs: pl.DataFrame) -> np.ndarray:
        """P(convert | contacted) - P(convert | not contacted) of each (customer_id, product_id) row."""
        p0, p1 = self.outcome_probabilities(pairs)
        uplift: np.ndarray = p1 - p0
        return uplift
