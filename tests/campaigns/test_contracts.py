"""Every class of contract violation is rejected with the right table, column, rows and reason."""

from pathlib import Path

import polars as pl
import pytest

from campaigns.contracts import ContractError, load_world

EVENT_TYPES = {"impression", "click", "application", "approval", "activation"}

VALID = {
    "customers": "customer_id,birth_date,income,region,is_student,housing\n"
                 "c1,1990-01-02,50000,north,false,renter\nc2,1960-05-06,80000,south,no,owner\n",
    "products": "product_id,family,name,min_credit_score,max_dti\n"
                "p1,credit_card,Card,600,0.4\np2,deposit,Savings,,\n",
    "events": "customer_id,product_id,event_type,event_time,channel\n"
              "c1,p1,impression,2026-01-01T10:00:00,app\n"
              "c1,p1,click,2026-01-01 10:05:00,app\n"
              "c2,p2,activation,2026-02-01,branch\n",
    "risk": "customer_id,as_of,credit_score,dpd_current,max_dpd_12m,dti,fraud_flag\n"
            "c1,2026-05-01,650,0,0,0.3,false\nc2,2026-05-01,,0,30,0.2,true\n",
    "consents": "customer_id,channel,purpose,granted,updated_at\n"
                "c1,email,marketing,true,2025-01-01\nc1,email,marketing,false,2025-06-01\n",
    "holdings": "customer_id,product_id,since,until\nc2,p2,2020-01-01,\n",
    "suppression": "customer_id,reason,channel,until\nc9,do_not_contact,,\n",
}


def write(tmp_path: Path, **overrides: str) -> Path:
    for name, text in {**VALID, **overrides}.items():
        if text is not None:
            (tmp_path / f"{name}.csv").write_text(text)
    return tmp_path


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
    err = rejected(tmp_path, customers="customer_id,birth_date,income,region\n"
                                       "c1,1990-01-02,50000,north\nc2,1960-05-06,lots,south\nc3,1970-01-01,x,east\n")
    assert (err.table, err.column, err.rows, err.values) == ("customers", "income", [2, 3], ["lots", "x"])
    assert "not a number" in str(err) and "rows 2 ('lots'), 3 ('x')" in str(err)


def test_unparseable_timestamp(tmp_path):
    err = rejected(tmp_path, events="customer_id,product_id,event_type,event_time\nc1,p1,click,yesterday\n")
    assert (err.table, err.column, err.rows) == ("events", "event_time", [1])
    assert "timestamp" in err.reason


def test_null_id(tmp_path):
    err = rejected(tmp_path, events="customer_id,product_id,event_type,event_time\nc1,p1,click,2026-01-01\n"
                                    ",p1,click,2026-01-02\n")
    assert (err.table, err.column, err.rows) == ("events", "customer_id", [2])
    assert "must not be empty" in err.reason


def test_duplicate_key(tmp_path):
    err = rejected(tmp_path, products="product_id,family,name\np1,credit_card,A\np2,deposit,B\np1,deposit,C\n")
    assert (err.table, err.column, err.rows, err.values) == ("products", "product_id", [1, 3], ["p1", "p1"])
    assert "duplicate key" in err.reason


def test_unknown_event_type(tmp_path):
    err = rejected(tmp_path, events="customer_id,product_id,event_type,event_time\nc1,p1,click,2026-01-01\n"
                                    "c1,p1,like,2026-01-02\n")
    assert (err.table, err.column, err.rows, err.values) == ("events", "event_type", [2], ["like"])
    assert "unknown event type" in err.reason


@pytest.mark.parametrize(("table", "text", "column", "target"), [
    ("events", "customer_id,product_id,event_type,event_time\nc1,p1,click,2026-01-01\nc7,p1,click,2026-01-01\n",
     "customer_id", "customers"),
    ("events", "customer_id,product_id,event_type,event_time\nc1,p9,click,2026-01-01\n", "product_id", "products"),
    ("holdings", "customer_id,product_id,since\nc1,p7,2020-01-01\n", "product_id", "products"),
    ("risk", "customer_id,as_of,credit_score,dpd_current,max_dpd_12m,dti\nc8,2026-01-01,600,0,0,0.1\n",
     "customer_id", "customers"),
])
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
    err = rejected(tmp_path, events="customer_id,product_id,event_type,event_time\nc1,p1,click,2026-01-01\n"
                                    "c1,p1,click,2026-01-02\n\"  \",p1,click,2026-01-03\nc7,p1,click,2026-01-04\n")
    assert (err.table, err.column, err.rows, err.values) == ("events", "customer_id", [3], ["  "])
    assert "must not be empty (1 row)" in err.reason


def test_checks_report_in_contract_order_before_references(tmp_path):
    # row 2 refers to an unknown customer, row 3 has an unknown event type: the contract check is reported
    err = rejected(tmp_path, events="customer_id,product_id,event_type,event_time\nc1,p1,click,2026-01-01\n"
                                    "c7,p1,click,2026-01-02\nc1,p1,like,2026-01-03\n")
    assert (err.column, err.rows) == ("event_type", [3])
    err = rejected(tmp_path, events="customer_id,product_id,event_type,event_time\nc1,p1,click,2026-01-01\n"
                                    "c7,p1,click,2026-01-02\nc8,p1,click,2026-01-03\n")
    assert (err.column, err.rows, err.values) == ("customer_id", [2, 3], ["c7", "c8"])
    assert "refers to unknown customers (2 rows)" in err.reason


def test_duplicate_compound_key_counts_every_duplicated_row(tmp_path):
    consents = ("customer_id,channel,purpose,granted,updated_at\nc1,email,marketing,true,2025-01-01\n"
                "c1,email,marketing,false,2025-01-01T00:00:00\nc1,sms,marketing,true,2025-01-01\n"
                "c2,sms,marketing,true,2025-01-01\nc2,sms,marketing,true,2025-01-01\n")
    err = rejected(tmp_path, consents=consents)
    assert (err.table, err.column, err.rows) == ("consents", "customer_id", [1, 2, 4, 5])
    assert "duplicate key" in err.reason and "(4 rows)" in err.reason
