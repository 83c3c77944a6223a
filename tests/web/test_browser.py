"""The console in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright): log in, preview a
campaign, run it for a fire time, download its target list, open its A/B report. `mktg serve` runs as its own
process on 127.0.0.1; screenshots of each page are kept under var/screenshots/ as test artefacts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from process_helpers import campaign_world
from web_helpers import PASSWORD, ROOT

from jobs.demo import world_as_of
from jobs.settings import load_settings
from jobs.web import services

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "var" / "screenshots"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, sqlite_engine):
    config = campaign_world(tmp_path, sqlite_engine, customers=400)
    services.add_user(sqlite_engine, "marketer", PASSWORD, "ops,crm,analyst")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKTG_")}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-c", "from jobs.cli import main; main()", "--config", str(config), "serve"]
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "serve.log").open("w") as log_file:
        process = subprocess.Popen(
            [*command, "--port", str(port)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log_file
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=2)
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"mktg serve did not start: {(tmp_path / 'serve.log').read_text()[-2000:]}")
                    time.sleep(0.3)
            yield url, tmp_path, load_settings(config, environ={})
        finally:
            process.terminate()
            process.wait(timeout=20)


def write_report(settings, engine, run_id: str, world_dir: Path) -> None:
    """The run's A/B report as the demo writes it: conversions simulated from the world's ground truth."""
    import polars as pl

    from campaigns.demo.simulate import simulate_for_run
    from campaigns.report_campaign import build_campaign_report, write_html
    from campaigns.report_data import load_run_assignments
    from jobs.campaign_service import load_spec

    spec = load_spec(settings, "every3s")
    loaded = load_run_assignments(engine, spec.id, run_id=run_id)
    simulated = simulate_for_run(
        loaded.assignments, world_dir, seed=1, audience=loaded.audience, campaign_offers=loaded.offers
    )
    products = pl.read_parquet(world_dir / "products.parquet").select("product_id", "family")
    report = build_campaign_report(loaded, simulated, spec=spec, products=products, title=f"A/B report: {run_id}")
    write_html(report, settings.var_dir / "reports" / f"{run_id}.html")


def test_log_in_preview_run_download_and_open_the_report(server, sqlite_engine):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    url, tmp_path, settings = server
    fire = (world_as_of(tmp_path / "world") + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    fire_text = fire.strftime("%Y-%m-%dT%H:%M:%SZ")
    run_id = f"every3s-{fire:%Y%m%dT%H%M%S}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 900})
            page.goto(url + "/")
            assert page.url.startswith(url + "/login")  # anonymous: sent to the login form
            page.fill("input[name=username]", "marketer")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(url + "/")
            assert page.inner_text("h1") == "Campaigns" and "every3s" in page.content()
            page.screenshot(path=str(SHOTS / "01-campaigns.png"), full_page=True)

            page.click("text=every3s")
            page.fill("input[name=at]", fire_text)
            page.click("form[action$='/preview'] button")
            page.wait_for_selector("#preview")
            assert "Eligibility funnel" in page.content()
            page.screenshot(path=str(SHOTS / "02-preview.png"), full_page=True)

            page.fill("input[name=fire_time]", fire_text)
            page.click("form[action$='/run'] button")
            page.wait_for_url(f"{url}/runs/{run_id}")
            assert f"Run {run_id}" == page.inner_text("h1")
            page.screenshot(path=str(SHOTS / "03-run.png"), full_page=True)

            with page.expect_download() as download:
                page.click("a:text('targets.csv')")
            saved = tmp_path / "downloaded.csv"
            download.value.save_as(saved)
            published = tmp_path / "var" / "exports" / "every3s" / run_id / "targets.csv"
            assert saved.read_bytes() == published.read_bytes()

            write_report(settings, sqlite_engine, run_id, tmp_path / "world")
            page.click("text=A/B report")
            page.wait_for_load_state()
            assert "A/B report" in page.content()
            page.screenshot(path=str(SHOTS / "04-report.png"), full_page=True)
        finally:
            browser.close()
    actions = {(a["username"], a["action"]) for a in services.audit_entries(sqlite_engine)}
    assert {("marketer", "login"), ("marketer", "run"), ("marketer", "download")} <= actions
    assert shutil.which(CHROMIUM)
