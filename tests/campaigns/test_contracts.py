"""Every class of contract violation is rejected with the right table, column, rows and reason."""

from pathlib import Path

import polars as pl
import pytest
from contract_tables import EVENT_TYPES, VALID, write

from campaigns.contracts import ContractError, load_world


def rejected(tmp_path: Path, **overrides: str) -> ContractError:
    with pytest.raises(ContractError) as info:
        load_world(write(tmp_path, **overrides), event_types=EVENT_TYPES)
    return info.value


def test_valid_world_loads_with_canonical_types(tmp_path):
    world = load_world(write(tmp_path), event_types=EVENT_TYPES)
    assert world.row_counts()["events"] == 3
    assert world.customers["is_student"].to_list() == [False, False]
    assert world.customers["housing"].to_list() == ["renter", "owner"]  # extra tag columns are kept
    assert world.risk["credit_score"].to_list() == [650.0, None]  # missing risk values stay missing
    events = world.events.collect()
    assert events.schema["event_time"] == pl.Datetime("us")
    assert events["event_time"].dt.minute().to_list() == [0, 5, 0]


def test_parquet_and_csv_give_the_same_world(tmp_path):
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    csv_world = load_world(write(csv_dir), event_types=EVENT_TYPES)
    pq_dir = tmp_path / "pq"
    pq_dir.mkdir()
    for name in VALID:
        getattr(csv_world, name).lazy().collect().write_parquet(pq_dir / f"{name}.parquet")
    pq_world = load_world(pq_dir, event_types=EVENT_TYPES)
    assert pq_world.events.collect().equals(csv_world.events.collect())
    assert pq_world.risk.equals(csv_world.risk)


def test_missing_required_column(tmp_path):
    err = rejected(tmp_path, customers="customer_id,birth_date,region\nc1,1990-01-01,north\n")
    assert (err.table, err.column) == ("customers", "income")
    assert "required column is missing" in str(err)


def test_birth_date_or_age_required(tmp_path):
    err = rejected(tmp_path, customers="customer_id,income,region\nc1,1,north\nc2,2,south\n")
    assert (err.table, err.column) == ("customers", "birth_date")


def test_bad_type_names_rows_and_values(tmp_path):
    err = rejected(
        tmp_path,
        customers="customer_id,birth_date,income,region\n"
        "c1,1990-01-02,50000,north\nc2,1960-05-06,lots,south\nc3,1970-01-01,x,east\n",
    )
    assert (err.table, err.column, err.rows, err.values) == ("customers", "income", [2, 3], ["lots", "x"])
    assert "not a number" in str(err) and "rows 2 ('lots'), 3 ('x')" in str(err)


def test_unparseable_timestamp(tmp_path):
    err = rejected(tmp_path, events="customer_id,product_id,event_type,event_time\nc1,p1,click,yesterday\n")
    assert (err.table, err.column, err.rows) == ("events", "event_time", [1])
    assert "timestamp" in err.reason


def test_null_id(tmp_path):
    err = rejected(
        tmp_path, events="customer_id,product_id,event_type,event_time\nc1,p1,click,2026-01-01\n,p1,click,2026-01-02\n"
    )
    assert (err.table, err.column, err.rows) == ("events", "customer_id", [2])
    assert "must not be empty" in err.reason


def test_duplicate_key(tmp_path):
    err = rejected(tmp_path, products="product_id,family,name\np1,credit_card,A\np2,deposit,B\np1,deposit,C\n")
    assert (err.table, err.column, err.rows, err.values) == ("products", "product_id", [1, 3], ["p1", "p1"])
    assert "duplicate key" in err.reason


def test_unknown_event_type(tmp_path):
    err = rejected(
        tmp_path, events="customer_id,product_id,event_type,event_time\nc1,p1,click,2026-01-01\nc1,p1,like,2026-01-02\n"
    )
    assert (err.table, err.column, err.rows, err.values) == ("events", "event_type", [2], ["like"])
    assert "unknown event type" in err.reason


@pytest.mark.parametrize(
    ("table", "text", "column", "target"),
    [
        (
            "events",
            "customer_id,product_id,event_type,event_time\nc1,p1,click,2026-01-01\nc7,p1,click,2026-01-01\n",
            "customer_id",
            "customers",
        ),
        ("events", "customer_id,product_id,event_type,event_time\nc1,p9,click,2026-01-01\n", "product_id", "products"),
        ("holdings", "customer_id,product_id,since\nc1,p7,2020-01-01\n", "product_id", "products"),
        (
            "risk",
            "customer_id,as_of,credit_score,dpd_current,max_dpd_12m,dti\nc8,2026-01-01,600,0,0,0.1\n",
            "customer_id",
            "customers",
        ),
    ],
)
def test_dangling_reference(tmp_path, table, text, column, target):
    err = rejected(tmp_path, **{table: text})
    assert (err.table, err.column) == (table, column)
    assert f"refers to unknown {target}" in err.reason


def test_missing_required_table(tmp_path):
    write(tmp_path)
    (tmp_path / "events.csv").unlink()
    with pytest.raises(ContractError, match="events.parquet or events.csv not found"):
        load_world(tmp_path, event_types=EVENT_TYPES)


def test_blank_id_in_a_referencing_column_is_empty_not_dangling(tmp_path):
    # blank ids are found through the reference check (one pass); they must still be reported as empty
    err = rejected(
        tmp_path,
        events="customer_id,product_id,event_type,event_time\nc1,p1,click,2026-01-01\n"
        'c1,p1,click,2026-01-02\n"  ",p1,click,2026-01-03\nc7,p1,click,2026-01-04\n',
    )
    assert (err.table, err.column, err.rows, err.values) == ("events", "customer_id", [3], ["  "])
    assert "must not be empty (1 row)" in err.reason


def test_checks_report_in_contract_order_before_references(tmp_path):
    # row 2 refers to an unknown customer, row 3 has an unknown event type: the contract check is reported
    err = rejected(
        tmp_path,
        events="customer_id,product_id,event_type,event_time\nc1,p1,click,2026-01-01\n"
        "c7,p1,click,2026-01-02\nc1,p1,like,2026-01-03\n",
    )
    assert (err.column, err.rows) == ("event_type", [3])
    err = rejected(
        tmp_path,
        events="customer_id,product_id,event_type,event_time\nc1,p1,click,2026-01-01\n"
        "c7,p1,click,2026-01-02\nc8,p1,click,2026-01-03\n",
    )
    assert (err.column, err.rows, err.values) == ("customer_id", [2, 3], ["c7", "c8"])
    assert "refers to unknown customers (2 rows)" in err.reason


def test_duplicate_compound_key_counts_every_duplicated_row(tmp_path):
    consents = (
        "customer_id,channel,purpose,granted,updated_at\nc1,email,marketing,true,2025-01-01\n"
        "c1,email,marketing,false,2025-01-01T00:00:00\nc1,sms,marketing,true,2025-01-01\n"
        "c2,sms,marketing,true,2025-01-01\nc2,sms,marketing,true,2025-01-01\n"
    )
    err = rejected(tmp_path, consents=consents)
    assert (err.table, err.column, err.rows) == ("consents", "customer_id", [1, 2, 4, 5])
    assert "duplicate key" in err.reason and "(4 rows)" in err.reason


# ---- issue 10: fail closed on every path -------------------------------------------------------------------------
# Each test below failed before the fix (the finding it names is in the test's first line).


@pytest.mark.parametrize("kind", ["broken_link", "link_loop", "directory", "gzip"])
def test_a_suppression_file_that_cannot_be_read_is_an_error_not_absent(tmp_path, kind):
    # finding: an unreadable suppression file was "no suppressions" and validate said "all tables valid"
    write(tmp_path, suppression=None)
    target = tmp_path / "suppression.csv"
    if kind == "broken_link":
        target.symlink_to(tmp_path / "gone.csv")
    elif kind == "link_loop":
        target.symlink_to(tmp_path / "suppression.csv")
    elif kind == "directory":
        target.mkdir()
    else:
        (tmp_path / "suppression.csv.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(ContractError) as info:
        load_world(tmp_path, event_types=EVENT_TYPES)
    assert info.value.table == "suppression"
    assert "cannot be read" in str(info.value) or "unsupported type" in str(info.value)


def test_any_unreadable_table_is_an_error(tmp_path):
    write(tmp_path)
    (tmp_path / "risk.csv").unlink()
    (tmp_path / "risk.csv").symlink_to(tmp_path / "nowhere.csv")
    with pytest.raises(ContractError) as info:
        load_world(tmp_path, event_types=EVENT_TYPES)
    err = info.value
    assert err.table == "risk" and "broken or looping link" in err.reason


def test_table_file_names_are_matched_in_any_letter_case(tmp_path):
    # finding: suppression.CSV was not found, so nobody was suppressed
    write(tmp_path)
    (tmp_path / "suppression.csv").rename(tmp_path / "suppression.CSV")
    world = load_world(tmp_path, event_types=EVENT_TYPES)
    assert world.suppression["customer_id"].to_list() == ["c9"]
    (tmp_path / "suppression.csv").write_text(VALID["suppression"])  # two spellings of one table: ambiguous
    if len(list(tmp_path.glob("suppression.*"))) == 2:  # case-sensitive file system
        assert "more than one file" in rejected(tmp_path).reason


def test_ids_are_stripped_and_categories_normalised_in_every_table(tmp_path):
    # finding: ' C0001 ' and channel 'SMS' / ' sms' / 'all' in suppression were silently ignored
    world = load_world(
        write(
            tmp_path,
            customers="customer_id,birth_date,income,region,occupation\n c1 ,1990-01-02,1,north, Student \nc2,1960-05-06,2,south,\n",
            suppression="customer_id,reason,channel\n c1,dnc,SMS\nc2 ,dnc, sms\nc1,dnc,all\nc2,dnc,  \n",
            consents="customer_id,channel,purpose,granted,updated_at\n c1,Email , Marketing,TRUE,2025-01-01\n",
            products="product_id,family,name\n p1 , Credit_Card,Card\np2,DEPOSIT,Savings\n",
            events="customer_id,product_id,event_type,event_time\n c1 , p1,click,2026-01-01\n",
            holdings="customer_id,product_id,since\nc2 , p2 ,2020-01-01\n",
        ),
        event_types=EVENT_TYPES,
    )
    assert world.customers["customer_id"].to_list() == ["c1", "c2"]
    assert world.customers["occupation"].to_list() == ["student", None]
    assert world.suppression.rows() == [
        ("c1", "dnc", "sms"),
        ("c2", "dnc", "sms"),
        ("c1", "dnc", "all"),
        ("c2", "dnc", None),
    ]
    assert world.consents.select("customer_id", "channel", "purpose", "granted").rows() == [
        ("c1", "email", "marketing", True)
    ]
    assert world.products.select("product_id", "family").rows() == [("p1", "credit_card"), ("p2", "deposit")]
    assert world.events.collect().select("customer_id", "product_id").rows() == [("c1", "p1")]
    assert world.holdings.select("customer_id", "product_id").rows() == [("c2", "p2")]


def test_conflicting_rows_that_differ_only_in_case_are_a_duplicate_key(tmp_path):
    consents = (
        "customer_id,channel,purpose,granted,updated_at\n"
        "c1,sms,marketing,true,2025-01-01\nc1,SMS,marketing,false,2025-01-01\n"
    )
    err = rejected(tmp_path, consents=consents)
    assert (err.table, err.rows) == ("consents", [1, 2]) and "duplicate key" in err.reason


RISK_HEAD = "customer_id,as_of,credit_score,dpd_current,max_dpd_12m,dti\n"


@pytest.mark.parametrize(
    ("table", "text", "column", "reason"),
    [
        # finding: dpd_current = 0.9 was truncated to 0 and passed max_days = 0
        ("risk", RISK_HEAD + "c1,2026-05-01,650,0.9,0,0.3\n", "dpd_current", "not an integer"),
        # findings: NaN / inf / negative numbers were accepted
        ("risk", RISK_HEAD + "c1,2026-05-01,NaN,0,0,0.3\n", "credit_score", "not a finite number"),
        ("risk", RISK_HEAD + "c1,2026-05-01,-5,0,0,0.3\n", "credit_score", "must be at least 0"),
        ("risk", RISK_HEAD + "c1,2026-05-01,650,0,0,-0.1\n", "dti", "must be at least 0"),
        ("risk", RISK_HEAD + "c1,2026-05-01,650,-1,0,0.1\n", "dpd_current", "must be at least 0"),
        ("products", "product_id,family,name,max_dti\np1,credit_card,Card,nan\n", "max_dti", "not a finite number"),
        ("customers", "customer_id,birth_date,income,region\nc1,1990-01-02,-1,north\n", "income", "must be at least 0"),
        (
            "customers",
            "customer_id,birth_date,income,region\nc1,1990-01-02,inf,north\n",
            "income",
            "not a finite number",
        ),
        (
            "customers",
            "customer_id,birth_date,income,region\nc1,1990-01-02,NaN,north\n",
            "income",
            "not a finite number",
        ),
        ("customers", "customer_id,age,income,region\nc1,-3,1,north\n", "age", "must be between 0 and 150"),
        # finding: booleans y / t were accepted though the documented set is true/false/1/0/yes/no
        (
            "customers",
            "customer_id,birth_date,income,region,is_student\nc1,1990-01-02,1,north,y\n",
            "is_student",
            "not a boolean",
        ),
        ("risk", RISK_HEAD.strip() + ",kyc_ok\nc1,2026-05-01,650,0,0,0.3,t\n", "kyc_ok", "not a boolean"),
    ],
)
def test_impossible_and_mistyped_values_reject_the_table(tmp_path, table, text, column, reason):
    err = rejected(tmp_path, **{table: text})
    assert (err.table, err.column, err.rows) == (table, column, [1])
    assert reason in err.reason


def test_whole_numbers_and_documented_booleans_in_any_case_are_accepted(tmp_path):
    world = load_world(
        write(
            tmp_path,
            customers="customer_id,birth_date,income,region,is_student\nc1,1990-01-02,1,north, YES \nc2,1960-05-06,2,south,No\n",
            risk=RISK_HEAD.strip() + ",fraud_flag\nc1,2026-05-01,650,1.0,0,0.3,FALSE\nc2,2026-05-01,9999,0,0,0.3,1\n",
        ),
        event_types=EVENT_TYPES,
    )
    assert world.customers["is_student"].to_list() == [True, False]
    assert world.risk["dpd_current"].to_list() == [1, 0] and world.risk["fraud_flag"].to_list() == [False, True]
    assert world.risk["credit_score"].to_list() == [650.0, 9999.0]  # possible; eligibility's valid range excludes it


def test_parquet_integer_birth_date_is_not_days_since_1970(tmp_path):
    # finding: an Int64 birth_date in Parquet was read as days since 1970
    write(tmp_path)
    (tmp_path / "customers.csv").unlink()
    pl.DataFrame(
        {"customer_id": ["c1", "c2"], "birth_date": [7305, 8000], "income": [1.0, 2.0], "region": ["n", "s"]}
    ).write_parquet(tmp_path / "customers.parquet")
    err = rejected(tmp_path)
    assert (err.table, err.column, err.rows) == ("customers", "birth_date", [1, 2])
    assert "not a date" in err.reason and "int64" in err.reason.lower()


def test_parquet_float_in_an_integer_column_must_be_whole(tmp_path):
    write(tmp_path)
    (tmp_path / "risk.csv").unlink()
    pl.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "as_of": ["2026-05-01"] * 2,
            "credit_score": [650.0, 700.0],
            "dpd_current": [0.0, 0.9],
            "max_dpd_12m": [0, 0],
            "dti": [0.1, 0.2],
        }
    ).write_parquet(tmp_path / "risk.parquet")
    err = rejected(tmp_path)
    assert (err.table, err.column, err.rows) == ("risk", "dpd_current", [2]) and "not an integer" in err.reason


def test_latin1_bytes_are_rejected_naming_the_line(tmp_path):
    # finding: Latin-1 (non-UTF-8) bytes were read with replacement characters
    write(tmp_path)
    (tmp_path / "customers.csv").write_bytes(
        "customer_id,birth_date,income,region\nc1,1990-01-02,1,north\nc2,1960-05-06,2,Plze\u0148\n".encode("cp1250")
    )
    with pytest.raises(ContractError) as info:
        load_world(tmp_path, event_types=EVENT_TYPES)
    err = info.value
    assert err.table == "customers" and "line 3 is not valid UTF-8" in err.reason


def test_z_suffixed_and_offset_timestamps_are_utc(tmp_path):
    # finding: 2026-01-31T09:30:00Z (valid ISO 8601, what our own files write) was rejected
    world = load_world(
        write(
            tmp_path,
            events="customer_id,product_id,event_type,event_time\n"
            "c1,p1,click,2026-01-31T09:30:00Z\nc1,p1,click,2026-01-31T09:30:00.250Z\n"
            "c1,p1,click,2026-01-31 10:30:00+01:00\nc1,p1,click,2026-01-31T09:30:00\n",
        ),
        event_types=EVENT_TYPES,
    )
    times = world.events.collect()["event_time"].to_list()
    assert [t.isoformat() for t in times] == [
        "2026-01-31T09:30:00",
        "2026-01-31T09:30:00.250000",
        "2026-01-31T09:30:00",
        "2026-01-31T09:30:00",
    ]


def test_an_unterminated_quote_is_one_short_line_naming_the_row(tmp_path):
    # finding: an unterminated quote printed 9,001 lines of customer rows to stderr (and the job history)
    rows = "".join(f"c{i},1990-01-02,{i},Region number {i} with a long name\n" for i in range(2, 9002))
    err = rejected(tmp_path, customers='customer_id,birth_date,income,region\nc1,1990-01-02,1,"north\n' + rows)
    message = str(err)
    assert "\n" not in message and len(message) < 200, message
    assert err.table == "customers" and "row 1" in message and "Region number" not in message


def test_a_ragged_row_names_its_row_number(tmp_path):
    err = rejected(
        tmp_path, customers="customer_id,birth_date,income,region\nc1,1990-01-02,1,north\nc2,1960-05-06,2,south,extra\n"
    )
    assert err.table == "customers" and "row 2 has 5 fields but the header has 4" in err.reason


@pytest.mark.parametrize(
    ("text", "reason"), [("", "the file is empty"), ("customer_id,birth_date,income,region\n", "header but no rows")]
)
def test_an_empty_customers_file_is_a_clear_error(tmp_path, text, reason):
    err = rejected(tmp_path, customers=text)
    assert err.table == "customers" and reason in err.reason and "unexpected" not in str(err)


def test_error_values_are_cut_to_40_characters_and_at_most_five(tmp_path):
    long = "x" * 500
    customers = "customer_id,birth_date,income,region\n" + "".join(f"c{i},1990-01-02,{long}{i},n\n" for i in range(9))
    err = rejected(tmp_path, customers=customers)
    assert len(err.rows) == 5 and all(len(v) <= 40 for v in err.values)
    assert "(9 rows)" in err.reason and long not in str(err)
