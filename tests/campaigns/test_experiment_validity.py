"""Experiments valid by construction (SPEC 2 and 4): arms split the eligible audience before any strategy acts.

The A/A simulation runs a campaign whose caps bind, with a popularity-like strategy that takes whole segments,
on a world with no treatment effect, over 200 salts, and checks that the p-values of every arm comparison are
uniform. A negative control (the old comparison of one strategy's selection against another's) shows the
harness detects the bias the issue found.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from arm_oracle import oracle_arm, oracle_held_out
from campaign_world import AS_OF, default_rules, spec, tables, world
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from campaigns.arms import holdout_label
from campaigns.campaign_run import plan_campaign, ranker_from_frames
from campaigns.report_campaign import build_campaign_report
from campaigns.report_data import RunAssignments
from campaigns.stats import ProportionStats, compare_proportions

OFFERS = ["CARD", "SAVE", "LOAN"]
SEGMENTS = {"young": 0.35, "mass": 0.30, "family": 0.20, "affluent": 0.15}
RATE = {"young": 0.20, "mass": 0.30, "family": 0.40, "affluent": 0.55}  # conversion depends on the segment only


def population(n: int, seed: int = 0) -> tuple[list[str], pl.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"C{i:05d}" for i in range(n)]
    segment = rng.choice(list(SEGMENTS), size=n, p=list(SEGMENTS.values()))
    return ids, pl.DataFrame({"customer_id": ids, "segment": segment})


def rankings(segments: pl.DataFrame, seed: int = 1) -> dict[str, pl.DataFrame]:
    """``model``: a score per customer and offer; ``popularity``: one score per (segment, offer), the affluent
    segment first, so under a binding audience cap it takes whole segments."""
    rng = np.random.default_rng(seed)
    pairs = segments.join(pl.DataFrame({"offer_id": OFFERS}), how="cross")
    model = pairs.with_columns(pl.Series("score", rng.random(pairs.height)))
    order = {"affluent": 4.0, "family": 3.0, "mass": 2.0, "young": 1.0}
    popularity = pairs.with_columns(
        (
            pl.col("segment").replace_strict(order, return_dtype=pl.Float64) + pl.col("offer_id").rank("dense") * 0.1
        ).alias("score")
    )
    ranked = {}
    for name, frame in (("model", model), ("popularity", popularity)):
        ranked[name] = frame.with_columns(
            pl.col("score").rank("ordinal", descending=True).over("customer_id").cast(pl.Int32).alias("rank")
        )
    return ranked


def campaign(salt: str, *, n: int, **overrides):
    return spec(
        id="aa",
        salt=salt,
        max_audience=n // 4,
        holdout=0.2,
        arms=[{"name": "control", "share": 0.2}, {"name": "model", "share": 0.4}, {"name": "popularity", "share": 0.4}],
        **overrides,
    )


def run_of(plan, conversions_seed: int) -> tuple[RunAssignments, pl.DataFrame]:
    """The plan as a stored run would be read back, and conversions with no treatment effect at all."""
    exposed = pl.lit(AS_OF, dtype=pl.Datetime("us")).alias("exposed_at")
    run = RunAssignments(
        "aa-run",
        "aa",
        AS_OF,
        AS_OF,
        plan.targets.select("customer_id", "arm", "segment", "offer_id").with_columns(exposed),
        plan.audience.with_columns(exposed),
        plan.offers,
        True,
    )
    rng = np.random.default_rng(conversions_seed)
    people = plan.audience.select("customer_id", "segment")
    rate = people["segment"].replace_strict(RATE, return_dtype=pl.Float64).to_numpy()
    hit = rng.random(people.height) < rate
    product = np.array(OFFERS)[rng.integers(0, len(OFFERS), people.height)]
    conversions = pl.DataFrame(
        {
            "customer_id": people["customer_id"].filter(hit),
            "product_id": product[hit],
            "converted_at": AS_OF + timedelta(days=2),
        }
    )
    return run, conversions


@pytest.mark.slow
def test_aa_simulation_gives_uniform_p_values_when_caps_bind():
    n = 10_000
    ids, segments = population(n)
    frames = world(tables(ids))
    ranker = ranker_from_frames(rankings(segments))
    p_values: dict[str, list[float]] = {}
    checks: dict[str, list[float]] = {"srm": [], "balance": []}
    biased: list[float] = []
    for index in range(200):
        plan = plan_campaign(
            campaign(f"salt-{index}", n=n),
            world=frames,
            segments=segments,
            ranker=ranker,
            rules=default_rules(),
            as_of=AS_OF,
        )
        assert plan.targets["customer_id"].n_unique() == n // 4  # the audience cap binds
        run, conversions = run_of(plan, conversions_seed=10_000 + index)
        report = build_campaign_report(run, conversions, spec=campaign(f"salt-{index}", n=n))
        checks["srm"].append(report.srm.p_value)
        checks["balance"].append(report.balance.p_value)
        for section in report.sections:
            for comparison in section.result.primary.comparisons:
                p_values.setdefault(f"{section.key}/{comparison.arm}", []).append(comparison.p_value)
        # negative control: the old report compared the selections of different strategies
        outcome = run.assignments.unique("customer_id").join(
            conversions.select("customer_id", pl.lit(True).alias("converted")), on="customer_id", how="left"
        )
        cells = {
            arm: ProportionStats(
                int((outcome["arm"] == arm).sum()),
                int(outcome.filter(pl.col("arm") == arm)["converted"].fill_null(False).sum()),
            )
            for arm in ("model", "popularity")
        }
        biased.append(compare_proportions(cells["model"], cells["popularity"]).p_value)

    assert sorted(p_values) == [
        "holdout:model/model",
        "holdout:popularity/popularity",
        "itt/model",
        "itt/popularity",
        "itt:model-vs-popularity/popularity",
        "selection:model/model",
    ]
    pooled = np.concatenate([np.asarray(v) for v in p_values.values()])
    ks = sps.kstest(pooled, "uniform")
    false_positive_rate = float((pooled < 0.05).mean())
    print(
        f"A/A: {len(pooled)} p-values over 200 salts, KS p = {ks.pvalue:.3f}, "
        f"false-positive rate at 0.05 = {false_positive_rate:.3%}"
    )
    assert ks.pvalue > 0.01
    assert 0.03 <= false_positive_rate <= 0.07
    for name, values in p_values.items():  # each comparison on its own, Bonferroni over the six
        assert sps.kstest(values, "uniform").pvalue > 0.01 / len(p_values), name
    for name, values in checks.items():  # the randomisation checks are uniform too (they flag, they do not cry wolf)
        assert sps.kstest(values, "uniform").pvalue > 0.01, name
    # the harness has the power to see the bias of comparing different strategies' selections
    biased_rate = float((np.asarray(biased) < 0.05).mean())
    print(f"negative control (model's selection vs popularity's): false-positive rate {biased_rate:.1%}")
    assert biased_rate > 0.5


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(200, 3_000),
    salt=st.text(min_size=1, max_size=12),
    control=st.floats(0.05, 0.5),
    split=st.floats(0.1, 0.9),
    audience_share=st.floats(0.05, 1.0),
    holdout=st.sampled_from([0.0, 0.1, 0.5]),
    unconsented=st.floats(0.0, 0.5),
)
def test_every_arm_is_a_random_share_of_the_eligible_audience(
    n, salt, control, split, audience_share, holdout, unconsented
):
    ids, segments = population(n, seed=n)
    frames = tables(ids)
    rng = np.random.default_rng(n + 1)
    frames["consents"] = frames["consents"].with_columns(pl.Series("granted", rng.random(n) >= unconsented))
    shares = [control, (1 - control) * split, (1 - control) * (1 - split)]
    plan = plan_campaign(
        spec(
            id="prop",
            salt=salt,
            max_audience=max(1, int(n * audience_share)),
            holdout=holdout,
            arms=[
                {"name": "control", "share": shares[0]},
                {"name": "model", "share": shares[1]},
                {"name": "popularity", "share": shares[2]},
            ],
        ),
        world=world(frames),
        segments=segments,
        ranker=ranker_from_frames(rankings(segments)),
        rules=default_rules(),
        as_of=AS_OF,
    )
    eligible = set(frames["consents"].filter("granted")["customer_id"].to_list())
    audience = plan.audience
    assert set(audience["customer_id"].to_list()) == eligible
    # exactly the documented hash, whatever the strategies did: an oracle written from campaigns/arms.py's text
    names = ["control", "model", "popularity"]
    assert audience["arm"].to_list() == [
        oracle_arm(c, salt=salt, campaign_id="prop", arms=list(zip(names, shares)))
        for c in audience["customer_id"].to_list()
    ]
    # and so the segment mix of every arm matches the audience's within sampling error (4.5 sigma)
    by_segment = audience.group_by("segment").len()
    for arm, share in zip(names, shares):
        mine = dict(audience.filter(pl.col("arm") == arm).group_by("segment").len().iter_rows())
        for segment, total in by_segment.iter_rows():
            expected = total * share
            assert abs(mine.get(segment, 0) - expected) <= 4.5 * np.sqrt(total * share * (1 - share)) + 1, (
                arm,
                segment,
            )
    # held-out customers: selected by a treatment arm, and exactly those under the holdout hash
    for row in plan.targets.unique("customer_id").iter_rows(named=True):
        base = row["arm"].removesuffix(":holdout")
        if base != "control":
            expected = oracle_held_out(row["customer_id"], salt=salt, campaign_id="prop", share=holdout)
            assert row["arm"] == (holdout_label(base) if expected else base)


def test_one_arms_strategy_never_changes_another_arms_customers():
    ids, segments = population(3_000, seed=5)
    frames = world(tables(ids))
    ranked = rankings(segments)
    reversed_popularity = {**ranked, "popularity": ranked["popularity"].with_columns(-pl.col("score"))}
    plans = [
        plan_campaign(
            campaign("fixed", n=3_000),
            world=frames,
            segments=segments,
            ranker=ranker_from_frames(r),
            rules=default_rules(),
            as_of=AS_OF,
        )
        for r in (ranked, reversed_popularity)
    ]
    assert plans[0].audience.select("customer_id", "arm").equals(plans[1].audience.select("customer_id", "arm"))
    for arm in ("control", "model", "model:holdout"):
        rows = [p.targets.filter(pl.col("arm") == arm).sort("customer_id", "offer_id") for p in plans]
        assert rows[0].height > 0 and rows[0].equals(rows[1]), arm
    popular = [set(p.targets.filter(pl.col("arm").str.starts_with("popularity"))["customer_id"]) for p in plans]
    assert popular[0] != popular[1]  # the changed strategy did change its own selection
