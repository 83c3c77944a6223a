"""The API as a CRM system and the console as marketing ops use them, on a generated world with a registered
model and a real campaign run, against SQLite and the real PostgreSQL (skipped when unreachable)."""

from __future__ import annotations

import io
import logging
import re
import tomllib
from datetime import timedelta

import polars as pl
from process_helpers import campaign_world
from sqlalchemy import func, select
from web_helpers import make_web

from campaigns.db.models import CampaignRun
from campaigns.db.session import session_scope
from jobs.demo import world_as_of
from jobs.tables import JobRun


def test_run_download_explain_and_pages_on_a_real_campaign(db_engine, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    config = campaign_world(tmp_path, db_engine, customers=400)
    web = make_web(config, db_engine)
    client, ops, crm, analyst = web.client, web.as_role("ops"), web.as_role("crm"), web.as_role("analyst")
    fire = (world_as_of(tmp_path / "world") + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    fire_text = fire.strftime("%Y-%m-%dT%H:%M:%SZ")

    listed = client.get("/api/campaigns", headers=crm).json()
    assert [(c["id"], c["channel"], c["schedule"], c["last_run"]) for c in listed] == [
        ("every3s", "email", "*/3 * * * * *", None)
    ]
    # run for a fire time: created once, the same fire time again returns the same run and writes nothing
    first = client.post("/api/campaigns/every3s/runs", json={"fire_time": fire_text}, headers=ops)
    assert first.status_code == 201, first.text
    run = first.json()
    assert run["created"] is True and run["run_id"] == f"every3s-{fire:%Y%m%dT%H%M%S}" and run["status"] == "succeeded"
    again = client.post(
        "/api/campaigns/every3s/runs", json={"fire_time": fire_text.replace("Z", "+00:00")}, headers=ops
    )
    assert again.status_code == 200 and again.json()["created"] is False and again.json()["run_id"] == run["run_id"]
    with session_scope(db_engine) as s:
        assert s.scalar(select(func.count()).select_from(CampaignRun)) == 1
        assert s.scalar(select(func.count()).select_from(JobRun).where(JobRun.job_name == "campaign:every3s")) == 1
    assert client.post("/api/campaigns/every3s/runs", json={"fire_time": "tomorrow"}, headers=ops).status_code == 422
    assert client.post("/api/campaigns/nope/runs", json={"fire_time": fire_text}, headers=ops).status_code == 404

    runs = client.get("/api/campaigns/every3s/runs", headers=crm).json()
    assert [r["run_id"] for r in runs] == [run["run_id"]]
    doc = client.get(f"/api/runs/{run['run_id']}", headers=crm).json()
    manifest = doc["manifest"]
    assert manifest["rows_total"] == run["row_count"] and manifest["rows_not_contacted"] == run["control_count"]
    assert sum(manifest["rows_per_arm"].values()) == manifest["rows_total"] > 0

    # downloads: the published files byte for byte, CSV and Parquet; paged JSON adds up to the same rows
    directory = tmp_path / "var" / "exports" / "every3s" / run["run_id"]
    csv = client.get(f"/api/runs/{run['run_id']}/targets", headers=crm)
    assert csv.status_code == 200 and csv.content == (directory / "targets.csv").read_bytes()
    assert csv.headers["content-type"].startswith("text/csv")
    parquet = client.get(f"/api/runs/{run['run_id']}/targets?format=parquet", headers=crm)
    assert pl.read_parquet(io.BytesIO(parquet.content)).equals(pl.read_parquet(directory / "targets.parquet"))
    control = client.get(f"/api/runs/{run['run_id']}/targets?file=control", headers=crm)
    assert control.content == (directory / "control.csv").read_bytes()
    rows, offset = [], 0
    while offset is not None:
        page = client.get(f"/api/runs/{run['run_id']}/targets?format=json&offset={offset}&limit=37", headers=crm).json()
        assert page["total"] == manifest["rows_contacted"] and len(page["rows"]) <= 37
        rows += page["rows"]
        offset = page["next_offset"]
    expected = pl.read_csv(directory / "targets.csv")
    assert len(rows) == expected.height and [r["customer_id"] for r in rows] == expected["customer_id"].to_list()

    # explain: a contacted customer and a control customer, by the same rules the CLI uses
    targets = pl.read_csv(directory / "targets.csv")
    contacted = targets["customer_id"][0]
    explained = client.get(f"/api/customers/{contacted}/explain?campaign_id=every3s", headers=crm).json()
    assert explained["targeted"] is True and explained["run"]["run_id"] == run["run_id"]
    assert {r["offer_id"] for r in explained["rows"]} == set(
        targets.filter(pl.col("customer_id") == contacted)["offer_id"]
    )
    held = pl.read_csv(directory / "control.csv")["customer_id"][0]
    assert client.get(f"/api/customers/{held}/explain?campaign_id=every3s", headers=crm).json()["arm"] in (
        "control",
        "popularity:holdout",
    )
    absent = client.get("/api/customers/NOBODY/explain?campaign_id=every3s", headers=crm).json()
    assert absent["targeted"] is False

    # the report: 404 until the conversion analysis job has written it, then the HTML it wrote
    assert client.get(f"/api/runs/{run['run_id']}/report", headers=analyst).status_code == 404
    report = tmp_path / "var" / "reports" / f"{run['run_id']}.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html><body>A/B report of the run</body></html>")
    assert client.get(f"/api/runs/{run['run_id']}/report", headers=analyst).text == report.read_text()

    # console pages render the same facts (server-side, autoescaped)
    assert run["run_id"] in client.get("/", headers=crm).text
    page = client.get(f"/runs/{run['run_id']}", headers=crm).text
    assert f"{manifest['rows_contacted']} to contact" in page and "targets.csv" in page
    assert "TARGETED" in client.get(f"/runs/{run['run_id']}/explain?customer_id={contacted}", headers=crm).text
    lookup = client.get(f"/customers?customer_id={contacted}", headers=crm).text
    segment = targets.filter(pl.col("customer_id") == contacted)["segment"][0]
    assert f"Segment: <strong>{segment}</strong>" in lookup and run["run_id"] in lookup
    assert lookup.count("<td>yes</td>") == targets.filter(pl.col("customer_id") == contacted).height  # contacts
    now = lookup[lookup.index("Eligibility now") : lookup.index("Eligibility per campaign")]
    assert "rule set default" in now, now
    rows = re.findall(r"<tr><td>(\w+)</td><td>(eligible|not eligible)</td><td>([^<]*)</td></tr>", now)
    rule_ids = {r["id"] for r in tomllib.loads((config / "eligibility.toml").read_text())["default"]["rules"]}
    assert rows and all((verdict == "eligible") == (reasons == "") for _, verdict, reasons in rows)
    assert all(set(reasons.split(", ")) <= rule_ids for _, _, reasons in rows if reasons)  # the default rules' ids
    stranger = client.get("/customers?customer_id=NOBODY", headers=crm).text
    assert "unknown customer id(s) [&#39;NOBODY&#39;]" in stranger  # judged from the data: not a customer
    preview = client.get(f"/campaigns/every3s/preview?at={fire_text}", headers=ops)
    assert preview.status_code == 200 and "Eligibility funnel" in preview.text
    assert "popularity" in client.get("/models", headers=crm).text
    assert "campaign:every3s" in client.get("/jobs", headers=crm).text
    audit = client.get("/audit", headers=web.as_role("admin")).text
    assert "download" in audit and "every3s" in audit

    # no customer id in any log line the server wrote for the requests above (httpx is the test's own client)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "httpx")
    assert "/api/customers/{customer_id}/explain" in logged
    for customer in (contacted, held):
        assert customer not in logged
