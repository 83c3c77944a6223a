"""Every eligibility rule on hand-built tables, as of the run time; fail-closed reason codes; all rule ids kept."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl
import pytest
from campaign_world import AS_OF, default_rules, tables, world
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.eligibility import (
    EligibilityConfigError,
    compact_eligibility,
    compact_exclusions,
    evaluate,
    load_rule_sets,
)

# Without a risk row every rule that reads risk data fails closed with its own ":missing" code (issue 10: before,
# the credit rules recorded their ordinary code and fraud/blacklist let a missing flag pass).
NO_RISK_CREDIT = [
    "no_risk",
    "stale_risk:missing",
    "credit_score:missing",
    "dti:missing",
    "dpd_current:missing",
    "dpd_12m:missing",
    "fraud:missing",
    "blacklisted:missing",
    "kyc:missing",
]
NO_RISK_OTHER = ["no_risk", "stale_risk:missing", "fraud:missing", "blacklisted:missing", "kyc:missing"]


def judge(frames, *, ids=("A",), offers=("CARD", "SAVE"), history=None, channel="sms"):
    candidates = pl.DataFrame([(c, o) for c in ids for o in offers], schema=["customer_id", "offer_id"], orient="row")
    result = evaluate(
        candidates, world=world(frames), rules=default_rules(), channel=channel, as_of=AS_OF, contact_history=history
    )
    got = {(c, o): r for c, o, r in result.exclusions.iter_rows()}
    eligible = set(result.eligible.iter_rows())
    assert eligible.isdisjoint(got)
    assert len(eligible) + len(got) == candidates.height
    return {o: got.get(("A", o), []) for o in offers}


def patch(frame: pl.DataFrame, **values) -> pl.DataFrame:
    return frame.with_columns(**{k: pl.lit(v, dtype=frame.schema[k]) for k, v in values.items()})


def test_healthy_customer_is_eligible_for_everything():
    assert judge(tables(["A"]), offers=("CARD", "SAVE", "LOAN")) == {"CARD": [], "SAVE": [], "LOAN": []}


def test_missing_risk_fails_closed_with_its_own_code():
    frames = tables(["A"])
    frames["risk"] = frames["risk"].clear()
    got = judge(frames)
    assert got["CARD"] == NO_RISK_CREDIT
    assert got["SAVE"] == NO_RISK_OTHER


def test_stale_risk_and_risk_from_the_future():
    frames = tables(["A"])
    frames["risk"] = patch(frames["risk"], as_of=AS_OF - timedelta(days=46))
    assert judge(frames) == {"CARD": ["stale_risk"], "SAVE": ["stale_risk"]}
    frames["risk"] = patch(frames["risk"], as_of=AS_OF - timedelta(days=44))
    assert judge(frames) == {"CARD": [], "SAVE": []}
    frames["risk"] = patch(frames["risk"], as_of=AS_OF + timedelta(hours=1))  # not known yet at run time
    assert judge(frames)["SAVE"] == NO_RISK_OTHER


def test_consent_latest_by_updated_at_as_of_run_time():
    frames = tables(["A"])
    base = frames["consents"]
    withdrawn = patch(base, granted=False, updated_at=AS_OF - timedelta(days=10))
    frames["consents"] = pl.concat([base, withdrawn])
    assert judge(frames) == {"CARD": ["no_consent"], "SAVE": ["no_consent"]}
    regranted = patch(base, updated_at=AS_OF - timedelta(days=1))
    frames["consents"] = pl.concat([base, withdrawn, regranted])
    assert judge(frames) == {"CARD": [], "SAVE": []}
    later = patch(base, granted=False, updated_at=AS_OF + timedelta(days=1))  # withdrawn after the run time
    frames["consents"] = pl.concat([base, later])
    assert judge(frames) == {"CARD": [], "SAVE": []}


def test_consent_is_per_channel_and_purpose():
    # no record for the channel/purpose: the consent the rule needs is missing (withdrawn consent: "no_consent")
    frames = tables(["A"], channel="email")
    assert judge(frames) == {"CARD": ["no_consent:missing"], "SAVE": ["no_consent:missing"]}
    assert judge(frames, channel="email") == {"CARD": [], "SAVE": []}
    assert judge(frames, channel=" EMAIL ") == {"CARD": [], "SAVE": []}
    frames = tables(["A"])
    frames["consents"] = patch(frames["consents"], purpose="service")
    assert judge(frames)["SAVE"] == ["no_consent:missing"]


@pytest.mark.parametrize(
    ("channel", "until", "suppressed"),
    [
        (None, None, True),  # do-not-contact, every channel, no end
        ("sms", AS_OF + timedelta(days=3), True),
        ("email", None, False),  # other channel
        (None, AS_OF - timedelta(days=1), False),  # expired
        (None, AS_OF, False),  # expires exactly at run time
    ],
)
def test_suppression_channel_and_expiry(channel, until, suppressed):
    frames = tables(["A"])
    frames["suppression"] = pl.DataFrame(
        {"customer_id": ["A"], "reason": ["complaint"], "channel": [channel], "until": [until]},
        schema={"customer_id": pl.String, "reason": pl.String, "channel": pl.String, "until": pl.Datetime("us")},
    )
    expected = ["suppressed"] if suppressed else []
    assert judge(frames) == {"CARD": expected, "SAVE": expected}


@pytest.mark.parametrize(
    ("birth", "card", "save"),
    [
        (date(2008, 6, 2), ["minor", "offer_age"], ["minor", "offer_age"]),  # 17, 18th birthday the next day
        (date(2008, 6, 1), ["offer_age"], []),  # 18 today: adult, but the card needs 21
        (date(2005, 6, 1), [], []),  # 21 today
    ],
)
def test_minimum_age_and_offer_age_band(birth, card, save):
    frames = tables(["A"])
    frames["customers"] = patch(frames["customers"], birth_date=birth)
    assert judge(frames) == {"CARD": card, "SAVE": save}


def test_offer_max_age_and_missing_age_fails_closed():
    frames = tables(["A"])
    frames["customers"] = patch(frames["customers"], birth_date=date(1950, 1, 1))  # 76: LOAN max_age 70
    assert judge(frames, offers=("LOAN", "SAVE")) == {"LOAN": ["offer_age"], "SAVE": []}
    frames["customers"] = frames["customers"].with_columns(pl.lit(None, dtype=pl.Date).alias("birth_date"))
    missing = ["minor:missing", "offer_age:missing"]
    assert judge(frames, offers=("LOAN", "SAVE")) == {"LOAN": missing, "SAVE": missing}


def test_students_are_excluded_from_credit_offers_only():
    frames = tables(["A"])
    frames["customers"] = patch(frames["customers"], is_student=True)
    assert judge(frames, offers=("CARD", "LOAN", "SAVE")) == {
        "CARD": ["student_credit"],
        "LOAN": ["student_credit"],
        "SAVE": [],
    }
    frames["customers"] = patch(tables(["A"])["customers"], occupation="student")
    assert judge(frames)["CARD"] == ["student_credit"]


@pytest.mark.parametrize(
    ("column", "value", "card", "loan"),
    [
        ("credit_score", 649.0, ["credit_score"], []),  # CARD floor 650, LOAN floor 600
        ("credit_score", 650.0, [], []),
        ("credit_score", None, ["credit_score:missing"], ["credit_score:missing"]),  # unknown score fails closed
        ("dti", 0.41, ["dti"], []),  # CARD cap 0.40, LOAN cap 0.45
        ("dti", 0.40, [], []),
        ("dpd_current", 1, ["dpd_current"], ["dpd_current"]),
        ("max_dpd_12m", 30, [], []),
        ("max_dpd_12m", 31, ["dpd_12m"], ["dpd_12m"]),
    ],
)
def test_per_offer_risk_thresholds(column, value, card, loan):
    frames = tables(["A"])
    frames["risk"] = patch(frames["risk"], **{column: value})
    assert judge(frames, offers=("CARD", "LOAN", "SAVE")) == {"CARD": card, "LOAN": loan, "SAVE": []}


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("fraud_flag", True, "fraud"),
        ("blacklisted", True, "blacklisted"),
        ("kyc_ok", False, "kyc"),
        ("kyc_ok", None, "kyc:missing"),
        ("fraud_flag", None, "fraud:missing"),
        ("blacklisted", None, "blacklisted:missing"),
    ],
)
def test_fraud_blacklist_and_kyc_exclude_every_offer(column, value, rule):
    frames = tables(["A"])
    frames["risk"] = patch(frames["risk"], **{column: value})
    assert judge(frames) == {"CARD": [rule], "SAVE": [rule]}


def test_missing_fraud_and_blacklist_columns_exclude_everyone():
    # Changed by issue 10: a missing flag used to pass ("flags only ever exclude"); SPEC 4 now says a value a rule
    # needs that is missing excludes the pair with a reason code. `mktg data validate` warns about the column.
    frames = tables(["A"])
    frames["risk"] = frames["risk"].drop("fraud_flag", "blacklisted")
    both = ["fraud:missing", "blacklisted:missing"]
    assert judge(frames) == {"CARD": both, "SAVE": both}


@pytest.mark.parametrize(
    ("until", "held"), [(None, True), (AS_OF + timedelta(days=1), True), (AS_OF - timedelta(days=1), False)]
)
def test_product_already_held(until, held):
    frames = tables(["A"])
    frames["holdings"] = pl.DataFrame(
        {"customer_id": ["A"], "product_id": ["CARD"], "since": [datetime(2020, 1, 1)], "until": [until]},
        schema_overrides={"since": pl.Datetime("us"), "until": pl.Datetime("us")},
    )
    # holding the card is also holding a credit card: the family rule records it too
    assert judge(frames) == {"CARD": ["already_held", "family_held"] if held else [], "SAVE": []}


def test_holding_opened_after_the_run_time_does_not_count():
    frames = tables(["A"])
    frames["holdings"] = pl.DataFrame(
        {"customer_id": ["A"], "product_id": ["CARD"], "since": [AS_OF + timedelta(days=1)], "until": [None]},
        schema_overrides={"since": pl.Datetime("us"), "until": pl.Datetime("us")},
    )
    assert judge(frames)["CARD"] == []


def test_offer_active_window():
    frames = tables(["A"])
    frames["products"] = frames["products"].with_columns(
        pl.when(pl.col("product_id") == "CARD").then(pl.lit(AS_OF)).otherwise(pl.col("active_to")).alias("active_to")
    )
    assert judge(frames) == {"CARD": ["offer_inactive"], "SAVE": []}
    frames["products"] = tables(["A"])["products"].with_columns(
        pl.when(pl.col("product_id") == "SAVE")
        .then(pl.lit(AS_OF + timedelta(days=1)))
        .otherwise(pl.col("active_from"))
        .alias("active_from")
    )
    assert judge(frames) == {"CARD": [], "SAVE": ["offer_inactive"]}


def test_unknown_customer_has_its_own_code():
    frames = tables(["B"])
    rules = judge(frames)["SAVE"]
    assert rules[0] == "unknown_customer"
    assert "no_risk" in rules and "no_consent:missing" in rules and "minor:missing" in rules


def _history(rows):
    return pl.DataFrame(
        rows, schema={"customer_id": pl.String, "channel": pl.String, "contacted_at": pl.Datetime("us")}, orient="row"
    )


def test_contact_frequency_cap_counts_the_window_before_the_run_on_the_channel():
    inside = [("A", "sms", AS_OF - timedelta(days=d)) for d in (1, 5, 10, 29)]  # cap: 4 per 30 days
    assert judge(tables(["A"]), history=_history(inside)) == {"CARD": ["contact_cap"], "SAVE": ["contact_cap"]}
    not_counted = inside[:3] + [
        ("A", "sms", AS_OF - timedelta(days=31)),  # outside the window
        ("A", "email", AS_OF - timedelta(days=2)),  # other channel
        ("A", "sms", AS_OF),  # not earlier than the run
        ("A", "sms", AS_OF + timedelta(days=1)),
    ]
    assert judge(tables(["A"]), history=_history(not_counted)) == {"CARD": [], "SAVE": []}


def test_every_failing_rule_is_kept_in_rule_set_order():
    frames = tables(["A"])
    frames["customers"] = patch(frames["customers"], is_student=True)
    frames["risk"] = patch(frames["risk"], dti=0.9, fraud_flag=True, credit_score=500.0)
    frames["suppression"] = pl.DataFrame({"customer_id": ["A"], "reason": ["dnc"]})
    assert judge(frames) == {
        "CARD": ["suppressed", "student_credit", "credit_score", "dti", "fraud"],
        "SAVE": ["suppressed", "fraud"],
    }


def test_compact_storage_keeps_customer_level_rules_once():
    frames = tables(["A", "B"])
    frames["risk"] = patch(frames["risk"], fraud_flag=True).with_columns(
        pl.when(pl.col("customer_id") == "B").then(False).otherwise(pl.col("fraud_flag")).alias("fraud_flag"),
        pl.when(pl.col("customer_id") == "A").then(500.0).otherwise(pl.col("credit_score")).alias("credit_score"),
    )
    candidates = pl.DataFrame({"customer_id": ["A", "A", "B", "B"], "offer_id": ["CARD", "SAVE", "CARD", "SAVE"]})
    result = evaluate(candidates, world=world(frames), rules=default_rules(), channel="sms", as_of=AS_OF)
    stored = compact_exclusions(result.exclusions, default_rules())
    assert stored.rows() == [("A", None, "fraud"), ("A", "CARD", "credit_score")]
    from_masks = compact_eligibility(result, default_rules())  # what a run stores: straight from the bit masks
    assert from_masks.sort("customer_id", "offer_id", nulls_last=False).rows() == stored.rows()


def test_rule_file_errors_name_file_rule_and_field(tmp_path):
    bad = tmp_path / "eligibility.toml"
    bad.write_text('[strict]\n[[strict.rules]]\nid = "x"\ncheck = "risk_fresh"\n')
    with pytest.raises(
        EligibilityConfigError, match=r"eligibility.toml: strict.rules\[1\]: .*needs parameter 'max_age_days'"
    ):
        load_rule_sets(bad)
    bad.write_text('[strict]\n[[strict.rules]]\nid = "x"\ncheck = "horoscope"\n')
    with pytest.raises(EligibilityConfigError, match="unknown check 'horoscope'"):
        load_rule_sets(bad)
    bad.write_text(
        '[strict]\n[[strict.rules]]\nid = "x"\ncheck = "kyc_ok"\n[[strict.rules]]\nid = "x"\ncheck = "consent"\n'
    )
    with pytest.raises(EligibilityConfigError, match="duplicate rule id 'x'"):
        load_rule_sets(bad)


def _every_rule_on_every_pair(candidates, frames, rules, *, channel="sms"):
    """Reference: each rule's verdict on the fully joined (customer, offer) frame, as reason codes per pair."""
    from campaigns.eligibility import _code_bits, _in_scope, _offer_features, _rule_bits, customer_features

    w = world(frames)
    history = pl.DataFrame(schema={"customer_id": pl.String, "channel": pl.String, "contacted_at": pl.Datetime("us")})
    features = customer_features(
        candidates,
        w,
        contact_history=history,
        channel=channel,
        purpose="marketing",
        as_of=AS_OF,
        contact_window_days=30,
        valid=rules.valid,
    )
    held = w.holdings.select("customer_id", pl.col("product_id").alias("offer_id")).with_columns(held=pl.lit(True))
    families = w.products.select(pl.col("product_id").alias("offer_id"), "family")
    held_families = (
        held.join(families, on="offer_id")
        .select("customer_id", "family")
        .unique()
        .with_columns(family_held=pl.lit(True))
    )
    pairs = (
        candidates.join(features, on="customer_id", how="left")
        .join(_offer_features(w.products, AS_OF), on="offer_id", how="left")
        .join(held, on=["customer_id", "offer_id"], how="left")
        .with_columns(pl.col("held").fill_null(False))
        .join(held_families, on=["customer_id", "family"], how="left")
        # the holding rules read bit masks; here they say "holds it" straight from a join of every pair
        .with_columns(
            _held_families=pl.col("family_held").fill_null(False).cast(pl.UInt64),
            _family_bit=pl.col("family").is_not_null().cast(pl.UInt64),
            _held_0=pl.when(pl.col("held")).then(pl.col("_offer_bit")).otherwise(0),
            _offer_bit=pl.col("_offer_bit").fill_null(0),
        )
    )
    bits = _code_bits(rules)
    verdicts = pairs.select(
        "customer_id",
        "offer_id",
        *[
            pl.when(_in_scope(r, pl.col("family"), rules))
            .then(_rule_bits(r, bits[i], AS_OF, rules))
            .otherwise(0)
            .alias(r.id)
            for i, r in enumerate(rules.rules)
        ],
    )
    codes = rules.codes
    return {
        (row["customer_id"], row["offer_id"]): [
            c for b, c in enumerate(codes) if any(row[r.id] >> b & 1 for r in rules.rules)
        ]
        for row in verdicts.iter_rows(named=True)
    }


def test_per_customer_evaluation_matches_every_rule_on_every_pair():
    # customer-data rules run once per customer, with family filters as offer bit masks: same answer as the
    # straightforward evaluation of every rule on every pair, including an offer missing from products
    ids = ["A", "B", "C", "D", "E", "F"]
    frames = tables(ids)
    frames["customers"] = frames["customers"].with_columns(
        birth_date=pl.Series(
            [date(1980, 1, 1), date(2010, 5, 5), None, date(1950, 1, 1), date(2001, 1, 1), date(1990, 3, 3)]
        ),
        is_student=pl.Series([False, False, True, False, None, False]),
    )
    frames["risk"] = (
        frames["risk"]
        .filter(pl.col("customer_id") != "F")
        .with_columns(
            credit_score=pl.Series([750.0, 620.0, None, 640.0, 700.0]),
            dti=pl.Series([0.2, 0.5, 0.3, None, 0.42]),
            dpd_current=pl.Series([0, 3, 0, 0, None], dtype=pl.Int32),
            fraud_flag=pl.Series([False, None, True, False, False]),
        )
    )
    frames["holdings"] = pl.DataFrame(
        {
            "customer_id": ["A", "D"],
            "product_id": ["SAVE", "LOAN"],
            "since": [AS_OF - timedelta(days=9)] * 2,
            "until": [None, None],
        },
        schema_overrides={"since": pl.Datetime("us"), "until": pl.Datetime("us")},
    )
    offers = ["CARD", "SAVE", "LOAN", "GHOST"]
    candidates = pl.DataFrame([(c, o) for c in ids for o in offers], schema=["customer_id", "offer_id"], orient="row")
    result = evaluate(candidates, world=world(frames), rules=default_rules(), channel="sms", as_of=AS_OF)
    got = {(c, o): r for c, o, r in result.exclusions.iter_rows()}
    got.update({pair: [] for pair in result.eligible.iter_rows()})
    expected = _every_rule_on_every_pair(candidates, frames, default_rules())
    assert got == expected
    assert expected[("B", "GHOST")][:1] == ["minor"] and "offer_inactive" in expected[("A", "GHOST")]
    assert expected[("C", "CARD")][:1] == ["minor:missing"] and "credit_score:missing" in expected[("C", "CARD")]
    assert expected[("F", "SAVE")][:2] == ["no_risk", "stale_risk:missing"]
    assert got[("A", "SAVE")] == ["already_held"] and got[("A", "CARD")] == []


def test_compact_storage_matches_the_exploded_form_and_keeps_unknown_ids():
    from campaigns.eligibility import _compact_exploded

    exclusions = pl.DataFrame(
        {
            "customer_id": ["A", "A", "B", "C", "C"],
            "offer_id": ["CARD", "SAVE", "CARD", "CARD", "LOAN"],
            "rule_ids": [
                ["no_consent", "credit_score"],
                ["no_consent"],
                ["dti", "credit_score"],
                ["manual_hold"],
                ["kyc", "dti"],
            ],
        }
    )
    stored = compact_exclusions(exclusions, default_rules())
    assert stored.rows() == [
        ("A", None, "no_consent"),
        ("A", "CARD", "credit_score"),
        ("B", "CARD", "credit_score,dti"),
        ("C", None, "kyc"),
        ("C", "CARD", "manual_hold"),
        ("C", "LOAN", "dti"),
    ]
    assert stored.rows() == _compact_exploded(exclusions, default_rules()).rows()


def test_candidates_with_their_customer_rows_are_judged_as_without():
    """A campaign run passes each candidate's row in the customers table (integer joins); an unknown customer,
    a suppression or consent row of an id that is no customer must still be judged exactly as by id."""
    from campaigns.eligibility import CUSTOMER_ROW

    frames = tables(["A", "B", "C"])
    frames["suppression"] = pl.DataFrame(
        {"customer_id": ["B", "ghost"], "reason": ["dnc", "dnc"], "channel": [None, None]},
        schema={"customer_id": pl.String, "reason": pl.String, "channel": pl.String},
    )
    w = world(frames)
    candidates = pl.DataFrame(
        [(c, o) for c in ("C", "ghost", "A", "B") for o in ("CARD", "SAVE")],
        schema=["customer_id", "offer_id"],
        orient="row",
    )
    plain = evaluate(candidates, world=w, rules=default_rules(), channel="sms", as_of=AS_OF)
    with_rows = candidates.with_columns(w.rows_for(candidates["customer_id"]).alias(CUSTOMER_ROW))
    assert with_rows[CUSTOMER_ROW].null_count() == 2  # the ghost's two pairs
    fast = evaluate(with_rows, world=w, rules=default_rules(), channel="sms", as_of=AS_OF)
    key = ["customer_id", "offer_id"]
    assert fast.exclusions.sort(key).rows() == plain.exclusions.sort(key).rows()
    assert fast.eligible.select(key).sort(key).rows() == plain.eligible.sort(key).rows()
    ghost = dict(((o, r) for c, o, r in plain.exclusions.iter_rows() if c == "ghost"))
    assert all("unknown_customer" in r and "suppressed" in r for r in ghost.values()), ghost


def test_pairs_judged_in_slices_give_the_same_verdicts(monkeypatch):
    import campaigns.eligibility as eligibility

    frames = tables(["A", "B", "C"])
    frames["risk"] = frames["risk"].with_columns(  # B fails the card's score floor, C has no score at all
        pl.when(pl.col("customer_id") == "B")
        .then(500.0)
        .when(pl.col("customer_id") == "C")
        .then(None)
        .otherwise(pl.col("credit_score"))
        .alias("credit_score")
    )
    candidates = pl.DataFrame(
        [(c, o) for c in ("A", "B", "C", "ghost") for o in ("CARD", "SAVE")],
        schema=["customer_id", "offer_id"],
        orient="row",
    )
    whole = evaluate(candidates, world=world(frames), rules=default_rules(), channel="sms", as_of=AS_OF)
    monkeypatch.setattr(eligibility, "PAIR_SLICE", 3)  # 8 pairs: slices of 3, 3 and 2
    sliced = evaluate(candidates, world=world(frames), rules=default_rules(), channel="sms", as_of=AS_OF)
    assert sliced.excluded.rows() == whole.excluded.rows() and sliced.eligible.rows() == whole.eligible.rows()
    assert whole.excluded.height + whole.eligible.height == 8
    assert len({tuple(r) for _, _, r in whole.exclusions.iter_rows()}) >= 3  # the customers are judged differently


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["A", "B", "C", "D", "E"]),
            st.sampled_from(["CARD", "SAVE", "LOAN", None]),
            st.integers(0, 15),
        ),
        max_size=40,
    ),
    customer_bits=st.integers(0, 15),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_storage_form_of_bit_masks_follows_its_definition(rows, customer_bits, shuffle, seed):
    """_compact_masked, in customer order (the run's usual case: runs of equal ids, no group-by) and in any order:
    per customer one every-offer row with the OR of its customer-level bits (when not 0), then each pair's other
    bits (when not 0), masks as comma-separated codes. The oracle is that sentence in plain Python."""
    import random

    from campaigns.eligibility import _compact_masked

    codes = ["consent", "fraud", "age", "credit_score"]
    ordered = sorted(rows, key=lambda r: r[0]) if not shuffle else random.Random(seed).sample(rows, len(rows))
    masked = pl.DataFrame(
        ordered, schema={"customer_id": pl.String, "offer_id": pl.String, "_mask": pl.UInt64}, orient="row"
    )

    def text(bits: int) -> str:
        return ",".join(c for b, c in enumerate(codes) if bits >> b & 1)

    expected = []
    for customer in sorted({c for c, _, _ in ordered}):
        mine = [(o, m) for c, o, m in ordered if c == customer]
        everyone = 0
        for _, m in mine:
            everyone |= m & customer_bits
        if everyone:
            expected.append((customer, None, text(everyone)))
        expected += [(customer, o, text(m & ~customer_bits)) for o, m in mine if m & ~customer_bits]
    got = _compact_masked(masked, codes, customer_bits)
    assert got.columns == ["customer_id", "offer_id", "rule_ids"]
    if not shuffle:  # in customer order: exactly that order, nothing to sort
        assert got.rows() == expected
    assert sorted(got.rows(), key=repr) == sorted(expected, key=repr)
