"""Issue 10, eligibility findings: every value a rule needs that is missing, NaN, out of range or unrecognised
excludes the pair with its own reason code. Each test failed on the code before the fix."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from campaign_world import AS_OF, RULES_FILE, default_rules, tables, world

from campaigns.contracts import TABLES, load_world
from campaigns.eligibility import EligibilityConfigError, compact_exclusions, evaluate, load_rule_sets
from campaigns.eligibility_config import input_gaps, unknown_families
from campaigns.segments import SegmentRules

OFFERS = ("CARD", "SAVE", "LOAN")


def judge(frames_or_world, *, ids=("A",), offers=OFFERS, channel="sms", rules=None):
    w = frames_or_world if not isinstance(frames_or_world, dict) else world(frames_or_world)
    candidates = pl.DataFrame([(c, o) for c in ids for o in offers], schema=["customer_id", "offer_id"], orient="row")
    result = evaluate(candidates, world=w, rules=rules or default_rules(), channel=channel, as_of=AS_OF)
    got = {(c, o): r for c, o, r in result.exclusions.iter_rows()}
    got.update({pair: [] for pair in result.eligible.iter_rows()})
    assert len(got) == candidates.height
    return got if len(ids) > 1 else {o: got[(ids[0], o)] for o in offers}


def patch(frame: pl.DataFrame, **values) -> pl.DataFrame:
    return frame.with_columns(**{k: pl.lit(v, dtype=frame.schema[k]) for k, v in values.items()})


def suppression(rows) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"customer_id": pl.String, "reason": pl.String, "channel": pl.String}, orient="row"
    )


# ---- suppression channels and ids ------------------------------------------------------------------------------


def _write_world(directory: Path, frames: dict[str, pl.DataFrame], *, suppression_csv: str) -> Path:
    for name, frame in frames.items():
        frame.write_csv(directory / f"{name}.csv", datetime_format="%Y-%m-%dT%H:%M:%S")
    (directory / "events.csv").write_text("customer_id,product_id,event_type,event_time\n")
    (directory / "suppression.csv").write_text(suppression_csv)
    return directory


def test_suppression_in_any_case_padding_or_all_channels_is_honoured_end_to_end(tmp_path):
    # finding: channel SMS / " sms" / "all" and a padded id " C0001 " were ignored (5,401 pairs targeted)
    ids = ["C1", "C2", "C3", "C4", "C5"]
    frames = tables(ids)
    frames.pop("holdings")
    text = (
        "customer_id,reason,channel\nC1,complaint,SMS\nC2,complaint, sms\nC3,dnc,all\n C4 ,dnc,\nC5,complaint,Email\n"
    )
    w = load_world(_write_world(tmp_path, frames, suppression_csv=text), event_types={"click"})
    got = judge(w, ids=ids, offers=("SAVE",))
    assert {c: got[(c, "SAVE")] for c in ids} == {
        "C1": ["suppressed"],
        "C2": ["suppressed"],
        "C3": ["suppressed"],
        "C4": ["suppressed"],
        "C5": [],
    }


@pytest.mark.parametrize(
    ("channel", "codes"),
    [
        ("SMS", ["suppressed"]),
        (" sms ", ["suppressed"]),
        ("ALL", ["suppressed"]),
        ("*", ["suppressed"]),
        ("", ["suppressed"]),
        ("smss", ["suppressed:invalid"]),
        ("email", []),
    ],
)
def test_suppression_channel_is_compared_normalised_and_an_unknown_one_fails_closed(channel, codes):
    # also when the world did not come through validation (eligibility normalises the small suppression table)
    frames = tables(["A"])
    frames["suppression"] = suppression([("A", "complaint", channel)])
    assert judge(frames, offers=("SAVE",)) == {"SAVE": codes}


# ---- numbers: missing, NaN, out of range -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "card", "save"),
    [
        # finding: credit_score = NaN passed the floor (NaN < 600 is false)
        ("credit_score", float("nan"), ["credit_score:invalid"], []),
        ("credit_score", float("inf"), ["credit_score:invalid"], []),
        ("credit_score", 9999.0, ["credit_score:invalid"], []),  # outside the valid range 300-850
        ("credit_score", 250.0, ["credit_score:invalid"], []),
        ("credit_score", 850.0, [], []),
        ("dti", float("nan"), ["dti:invalid"], []),
        ("dti", 7.0, ["dti:invalid"], []),  # a percentage where a ratio belongs
        ("dti", None, ["dti:missing"], []),
        ("dpd_current", None, ["dpd_current:missing"], []),
        ("dpd_current", -1, ["dpd_current:invalid"], []),
        ("max_dpd_12m", 99_999, ["dpd_12m:invalid"], []),
    ],
)
def test_risk_values_a_rule_needs(column, value, card, save):
    frames = tables(["A"])
    frames["risk"] = patch(frames["risk"], **{column: value})
    assert judge(frames, offers=("CARD", "SAVE")) == {"CARD": card, "SAVE": save}


def test_a_nan_product_threshold_excludes_instead_of_letting_everyone_through():
    # finding: a product with max_dti = NaN let everyone through
    frames = tables(["A", "B"])
    frames["products"] = frames["products"].with_columns(
        pl.when(pl.col("product_id") == "CARD").then(float("nan")).otherwise(pl.col("max_dti")).alias("max_dti"),
        pl.when(pl.col("product_id") == "LOAN")
        .then(float("nan"))
        .otherwise(pl.col("min_credit_score"))
        .alias("min_credit_score"),
    )
    got = judge(frames, ids=("A", "B"), offers=("CARD", "LOAN", "SAVE"))
    assert got[("A", "CARD")] == ["dti:invalid"] and got[("B", "LOAN")] == ["credit_score:invalid"]
    assert got[("A", "SAVE")] == []


@pytest.mark.parametrize(
    ("birth", "codes"),
    [
        (date(2030, 1, 1), ["minor:invalid", "offer_age:invalid"]),  # born after the run: negative age
        (date(1880, 1, 1), ["minor:invalid", "offer_age:invalid"]),  # 146 years old
        (None, ["minor:missing", "offer_age:missing"]),
    ],
)
def test_impossible_or_missing_age(birth, codes):
    frames = tables(["A"])
    frames["customers"] = frames["customers"].with_columns(pl.lit(birth, dtype=pl.Date).alias("birth_date"))
    assert judge(frames, offers=("SAVE",)) == {"SAVE": codes}


def test_age_column_is_used_when_there_is_no_birth_date():
    frames = tables(["A", "B"])
    frames["customers"] = (
        frames["customers"].drop("birth_date").with_columns(pl.Series("age", [17, 30], dtype=pl.Int32))
    )
    got = judge(frames, ids=("A", "B"), offers=("SAVE",))
    assert got == {("A", "SAVE"): ["minor", "offer_age"], ("B", "SAVE"): []}


# ---- flags and categories --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "code"),
    [("fraud_flag", "fraud:missing"), ("blacklisted", "blacklisted:missing"), ("kyc_ok", "kyc:missing")],
)
def test_an_empty_flag_excludes_with_its_missing_code(column, code):
    # finding: an empty fraud_flag / blacklisted passed everyone
    frames = tables(["A"])
    frames["risk"] = patch(frames["risk"], **{column: None})
    assert judge(frames, offers=("SAVE",)) == {"SAVE": [code]}


def test_a_rule_column_the_table_lacks_excludes_everyone_and_is_reported():
    # finding: a risk table without kyc_ok excluded everyone with no warning
    frames = tables(["A"])
    frames["risk"] = frames["risk"].drop("kyc_ok")
    assert judge(frames, offers=("SAVE",)) == {"SAVE": ["kyc:missing"]}
    columns = {name: list(frames.get(name, TABLES[name].empty()).columns) for name in TABLES}
    gaps = [(g.table, g.column, g.rule_id, g.effect) for g in input_gaps(columns, default_rules())]
    assert gaps == [("risk", "kyc_ok", "kyc", "excludes every pair")]


def test_input_gaps_name_absent_tables_and_rules_that_then_never_exclude():
    columns = {name: list(TABLES[name].columns) for name in TABLES}
    columns["risk"] = None
    columns["suppression"] = None
    gaps = {(g.table, g.column, g.rule_id, g.effect) for g in input_gaps(columns, default_rules())}
    assert ("risk", None, "fraud", "excludes every pair") in gaps and (
        "risk",
        None,
        "no_risk",
        "excludes every pair",
    ) in gaps
    assert ("suppression", None, "suppressed", "never excludes anyone") in gaps
    assert {g[0] for g in gaps} == {"risk", "suppression"}


@pytest.mark.parametrize(
    ("occupation", "is_student", "codes"),
    [
        ("Student", None, ["student_credit"]),  # finding: case-sensitive check let "Student" get credit offers
        (" PhD STUDENT ", None, ["student_credit"]),
        ("student", False, ["student_credit"]),  # conflicting: the occupation says student, fail closed
        ("employee", None, []),
        (None, False, []),
        (None, None, ["student_credit:missing"]),
        ("  ", None, ["student_credit:missing"]),
    ],
)
def test_student_status_is_case_insensitive_and_unknown_status_fails_closed(occupation, is_student, codes):
    frames = tables(["A"])
    frames["customers"] = frames["customers"].with_columns(
        pl.lit(occupation, dtype=pl.String).alias("occupation"),
        pl.lit(is_student, dtype=pl.Boolean).alias("is_student"),
    )
    assert judge(frames, offers=("CARD", "SAVE")) == {"CARD": codes, "SAVE": []}


def test_the_student_tag_agrees_with_the_student_rule():
    # segments.py had the same case-sensitive test for the `student` tag
    customers = pl.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "age": [20, 20, 20, 20],
            "occupation": ["Student", " part-time STUDENT", "employee", None],
            "is_student": [None, None, None, True],
        },
        schema_overrides={"is_student": pl.Boolean},
    )
    rules = SegmentRules.from_toml_dict({"default_segment": {"name": "all"}})
    assert rules.tag(customers, as_of=AS_OF)["student"].to_list() == [True, True, False, True]


def test_families_are_compared_normalised_and_an_unknown_family_is_in_scope_of_family_rules():
    frames = tables(["A"])
    frames["customers"] = patch(frames["customers"], is_student=True)
    frames["products"] = frames["products"].with_columns(
        pl.Series("family", [" Credit_Card ", "deposit", "creditcard"])
    )  # CARD normalised, LOAN's family unknown
    assert judge(frames) == {"CARD": ["student_credit"], "SAVE": [], "LOAN": ["student_credit"]}
    assert unknown_families(["credit_card", "creditcard", None], default_rules()) == ["creditcard"]


# ---- the product-family rule -----------------------------------------------------------------------------------


def _holding(product: str, *, until=None) -> pl.DataFrame:
    return pl.DataFrame(
        {"customer_id": ["A"], "product_id": [product], "since": [datetime(2020, 1, 1)], "until": [until]},
        schema_overrides={"since": pl.Datetime("us"), "until": pl.Datetime("us")},
    )


def test_no_second_product_of_a_held_credit_family():
    frames = tables(["A"])
    frames["products"] = pl.concat(
        [
            frames["products"],
            frames["products"]
            .filter(pl.col("product_id") == "CARD")
            .with_columns(product_id=pl.lit("CARD2"), name=pl.lit("Other card")),
        ]
    )
    frames["holdings"] = _holding("CARD2")
    assert judge(frames, offers=("CARD", "CARD2", "SAVE", "LOAN")) == {
        "CARD": ["family_held"],
        "CARD2": ["already_held", "family_held"],
        "SAVE": [],
        "LOAN": [],
    }
    frames["holdings"] = _holding("CARD2", until=AS_OF - timedelta(days=1))  # closed before the run
    assert judge(frames, offers=("CARD", "SAVE")) == {"CARD": [], "SAVE": []}


def test_holding_a_deposit_does_not_block_another_deposit():
    frames = tables(["A"])
    frames["products"] = pl.concat(
        [
            frames["products"],
            frames["products"].filter(pl.col("product_id") == "SAVE").with_columns(product_id=pl.lit("SAVE2")),
        ]
    )
    frames["holdings"] = _holding("SAVE")
    assert judge(frames, offers=("SAVE", "SAVE2")) == {"SAVE": ["already_held"], "SAVE2": []}


def test_family_rule_on_an_offer_missing_from_the_catalogue_fails_closed():
    frames = tables(["A"])
    got = judge(frames, offers=("GHOST",))["GHOST"]
    assert "family_held:missing" in got and "offer_inactive" in got


# ---- configuration and storage ---------------------------------------------------------------------------------


def test_valid_ranges_are_configurable(tmp_path):
    text = RULES_FILE.read_text().replace(
        "credit_score = { min = 300, max = 850 }", "credit_score = { min = 0, max = 999 }"
    )
    path = tmp_path / "eligibility.toml"
    path.write_text(text)
    rules = load_rule_sets(path)["default"]
    frames = tables(["A"])
    frames["risk"] = patch(frames["risk"], credit_score=990.0)
    assert judge(frames, offers=("CARD",), rules=rules) == {"CARD": []}
    assert judge(frames, offers=("CARD",)) == {"CARD": ["credit_score:invalid"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[s]\n[[s.rules]]\nid = "a:b"\ncheck = "kyc_ok"\n', "letters, digits"),
        (
            '[s]\n[s.valid]\ncredit_score = { min = 900, max = 300 }\n[[s.rules]]\nid = "k"\ncheck = "kyc_ok"\n',
            "is above max",
        ),
    ],
)
def test_rule_file_rejects_ambiguous_ids_and_inverted_ranges(tmp_path, body, message):
    path = tmp_path / "eligibility.toml"
    path.write_text(body)
    with pytest.raises(EligibilityConfigError, match=message):
        load_rule_sets(path)


def test_more_than_63_reason_codes_is_a_configuration_error(tmp_path):
    rules = "".join(
        f'[[s.rules]]\nid = "r{i}"\ncheck = "max_dpd_current"\nmax_days = 0\n' for i in range(22)
    )  # 66 codes
    path = tmp_path / "eligibility.toml"
    path.write_text("[s]\n" + rules)
    with pytest.raises(EligibilityConfigError, match="66 reason codes; at most 63"):
        load_rule_sets(path)


def test_storage_keeps_missing_and_invalid_codes_and_customer_level_ones_once():
    frames = tables(["A", "B"])
    frames["risk"] = frames["risk"].with_columns(
        pl.Series("kyc_ok", [None, True], dtype=pl.Boolean), pl.Series("credit_score", [700.0, float("nan")])
    )
    candidates = pl.DataFrame(
        [(c, o) for c in ("A", "B") for o in ("CARD", "SAVE")], schema=["customer_id", "offer_id"], orient="row"
    )
    rules = default_rules()
    result = evaluate(candidates, world=world(frames), rules=rules, channel="sms", as_of=AS_OF)
    stored = compact_exclusions(result.exclusions, rules)
    assert stored.rows() == [("A", None, "kyc:missing"), ("B", "CARD", "credit_score:invalid")]
    from campaigns.eligibility import _compact_exploded

    assert _compact_exploded(result.exclusions, rules).rows() == stored.rows()
    from campaigns.eligibility import compact_eligibility

    assert compact_eligibility(result, rules).sort("customer_id", "offer_id", nulls_last=False).rows() == stored.rows()


def test_data_warnings_group_rules_per_missing_input_and_name_unknown_families():
    from campaigns.eligibility import data_warnings

    frames = tables(["A"])
    frames["products"] = frames["products"].with_columns(pl.Series("family", ["credit_card", "deposit", "bnpl"]))
    w = world(frames)
    w.sources = {name: Path(f"{name}.csv") for name in ("customers", "products", "events", "consents", "holdings")}
    lines = data_warnings(w, {"default": default_rules()}, campaigns={"default": ["b_camp", "a_camp"]})
    where = "(rule set 'default', used by a_camp, b_camp)"
    assert lines[0] == (
        f"table 'risk' is absent: rules 'no_risk', 'stale_risk', 'credit_score', 'dti', 'dpd_current', "
        f"'dpd_12m', 'fraud', 'blacklisted', 'kyc' {where} exclude every pair"
    )
    assert f"table 'suppression' is absent: rule 'suppressed' {where} never excludes anyone" in lines
    assert lines[-1] == (
        "table 'products', column 'family': 'bnpl' not in valid.families of rule set 'default', used by "
        "a_camp, b_camp: every family-restricted rule applies to those offers"
    )
