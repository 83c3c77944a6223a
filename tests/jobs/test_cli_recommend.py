"""``mktg recommend`` never offers a product the customer may not get, unless asked to show everything.

The property test perturbs one customer of a generated world (age, credit score, debt-to-income, holdings)
and checks every offer shown against an oracle written from the rules' text (docs/campaigns.md: minors
under 18, the product's min/max age band inclusive, its credit-score floor and DTI cap, products already held),
not by calling the eligibility code.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from process_helpers import ROOT

from campaigns.contracts import load_world
from campaigns.demo.synthetic import generate_world
from jobs import campaign_service
from jobs.model_service import latest_event_time, save_and_register, train_models
from jobs.settings import load_events, load_settings

AT = datetime(2026, 11, 1, 9)
CUSTOMERS = [f"C{i:08d}" for i in range(0, 60, 3)]


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("world")
    generate_world(path, customers=300, seed=11)
    return path


@pytest.fixture
def setup(db_engine, world_dir, tmp_path):
    settings = load_settings(ROOT / "config", environ={"MKTG_VAR_DIR": str(tmp_path / "var")})
    events = load_events(settings)
    world = load_world(world_dir, event_types=events.event_types)
    models = train_models(world, settings, events, as_of=latest_event_time(world), names=["popularity"])
    save_and_register(models, settings, engine=db_engine)
    return settings, events, world


def _age(born: date, at: datetime) -> int:
    return at.year - born.year - ((at.month, at.day) < (born.month, born.day))


def oracle_violations(offer: dict, *, age: int, score: float, dti: float, held: set[str]) -> set[str]:
    """Reason codes an offer must carry for this customer, from the rules' text."""
    reasons = set()
    if age < 18:
        reasons.add("minor")
    if (offer["min_age"] is not None and age < offer["min_age"]) or (
        offer["max_age"] is not None and age > offer["max_age"]
    ):
        reasons.add("offer_age")
    if offer["min_credit_score"] is not None and score < offer["min_credit_score"]:
        reasons.add("credit_score")
    if offer["max_dti"] is not None and dti > offer["max_dti"]:
        reasons.add("dti")
    if offer["product_id"] in held:
        reasons.add("already_held")
    return reasons


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    customer=st.sampled_from(CUSTOMERS),
    years=st.integers(min_value=12, max_value=90),
    days=st.integers(min_value=0, max_value=364),
    score=st.integers(min_value=300, max_value=850),
    dti=st.floats(min_value=0.0, max_value=0.9),
    hold=st.integers(min_value=0, max_value=3),
)
def test_no_offer_shown_breaks_a_rule_and_all_marks_every_one_that_does(
    setup, db_engine, customer, years, days, score, dti, hold
):
    settings, events, world = setup
    born = date(AT.year - years, 1, 1) + timedelta(days=days)
    products = world.products.sort("product_id")
    held_now = products["product_id"].to_list()[hold * 7 : hold * 7 + hold]  # 0-3 products held since last year
    customers = world.customers.with_columns(
        pl.when(pl.col("customer_id") == customer)
        .then(pl.lit(born))
        .otherwise(pl.col("birth_date"))
        .alias("birth_date")
    )
    risk = world.risk.filter(pl.col("customer_id") != customer).vstack(
        world.risk.filter(pl.col("customer_id") == customer)
        .head(1)
        .with_columns(
            as_of=pl.lit(AT - timedelta(days=1)).cast(world.risk.schema["as_of"]),
            credit_score=pl.lit(float(score)),
            dti=pl.lit(dti),
            dpd_current=pl.lit(0, dtype=world.risk.schema["dpd_current"]),
            max_dpd_12m=pl.lit(0, dtype=world.risk.schema["max_dpd_12m"]),
            fraud_flag=pl.lit(False),
            blacklisted=pl.lit(False),
            kyc_ok=pl.lit(True),
        )
    )
    holdings = world.holdings.filter(pl.col("customer_id") != customer)
    if held_now:
        extra = pl.DataFrame({"customer_id": customer, "product_id": held_now, "since": AT - timedelta(days=365)})
        holdings = pl.concat(
            [holdings, extra.cast({k: v for k, v in holdings.schema.items() if k in extra.columns})],
            how="diagonal_relaxed",
        )
    perturbed = world.replace(customers=customers, risk=risk, holdings=holdings)
    age = _age(born, AT)
    catalogue = {row["product_id"]: row for row in products.iter_rows(named=True)}

    shown = campaign_service.recommend(
        settings,
        events,
        data_dir=ROOT,
        customer_ids=[customer],
        k=50,
        engine=db_engine,
        model_name="popularity",
        at=AT,
        world=perturbed,
    )
    for offer in shown.offers.iter_rows(named=True):
        assert offer["eligible"] and offer["excluded_by"] is None
        assert not oracle_violations(catalogue[offer["offer_id"]], age=age, score=score, dti=dti, held=set(held_now)), (
            offer
        )

    everything = campaign_service.recommend(
        settings,
        events,
        data_dir=ROOT,
        customer_ids=[customer],
        k=50,
        engine=db_engine,
        model_name="popularity",
        at=AT,
        world=perturbed,
        show_all=True,
    )
    for offer in everything.offers.iter_rows(named=True):
        expected = oracle_violations(catalogue[offer["offer_id"]], age=age, score=score, dti=dti, held=set(held_now))
        assert expected <= set(offer["excluded_by"] or []), (offer, expected)
    eligible = everything.offers.filter(pl.col("eligible"))["offer_id"].to_list()
    assert shown.offers["offer_id"].to_list() == eligible  # same order: the model's ranking minus the excluded
    assert shown.excluded.get(customer, 0) == everything.offers.height - len(eligible)


def test_cli_campaign_channel_and_all(project, cli, world_dir):
    assert cli("db", "upgrade").code == 0
    assert cli("train", "--data", str(world_dir), "--models", "popularity").code == 0
    args = ("recommend", "--data", str(world_dir), "--model", "popularity", "--at", "2026-11-01T09:00:00Z")
    plain = json.loads(cli(*args, "--customer", "C00000003", "--json").out)
    assert plain["channel"] is None and plain["skipped_checks"] == ["no_consent", "suppressed", "contact_cap"]
    assert plain["as_of"] == "2026-11-01T09:00:00Z" and all(o["eligible"] for o in plain["offers"])

    family = dict(pl.read_parquet(world_dir / "products.parquet").select("product_id", "family").iter_rows())
    several = [arg for c in CUSTOMERS for arg in ("--customer", c)]
    campaign = json.loads(cli(*args, *several, "--campaign", "cc_cross_sell", "--all", "--json").out)
    assert campaign["channel"] == "sms" and campaign["skipped_checks"] == [] and campaign["offers"]
    assert {family[o["offer_id"]] for o in campaign["offers"]} == {"credit_card"}  # the campaign's offers only

    no_sms = (
        pl.read_parquet(world_dir / "consents.parquet")
        .filter(pl.col("channel") == "sms")
        .group_by("customer_id")
        .agg(pl.col("granted").sort_by("updated_at").last())
        .filter(~pl.col("granted"))["customer_id"]
        .sort()
        .to_list()
    )
    assert no_sms, "the generated world has customers who refused SMS"
    refused = json.loads(cli(*args, "--customer", no_sms[0], "--channel", "sms", "--all", "--json").out)
    assert refused["offers"] and all("no_consent" in o["excluded_by"] for o in refused["offers"])
    hidden = cli(*args, "--customer", no_sms[0], "--channel", "sms")
    assert hidden.code == 0 and f"no eligible offer for: {no_sms[0]}" in hidden.err and no_sms[0] not in hidden.out

    mismatch = cli(*args, "--customer", "C00000003", "--campaign", "cc_cross_sell", "--channel", "email")
    assert mismatch.code == 2 and mismatch.err == "error: --channel email: campaign 'cc_cross_sell' runs on sms\n"
    table = cli(*args, "--customer", "C00000003", "--all")
    assert table.code == 0 and "excluded by" in table.out and "…" not in table.out
