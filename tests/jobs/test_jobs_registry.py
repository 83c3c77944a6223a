"""One broken campaign file never stops the others: the scheduler's job list schedules the rest and logs it."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from process_helpers import ROOT

from jobs.job_catalog import build_jobs, find_job, scan_jobs
from jobs.settings import ConfigError, load_settings


@pytest.fixture
def settings(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    broken = config / "campaigns" / "instalment_push.toml"
    broken.write_text(broken.read_text().replace('schedule = "30 18 * * FRI"', 'schedule = "30 18 30 2 *"'))
    (config / "campaigns" / "garbage.toml").write_bytes(b"\xff\xfe")
    (config / "settings.toml").write_text(
        (config / "settings.toml")
        .read_text()
        .replace(
            "# [scheduler.extra_jobs.refresh_suppression]\n# func", "[scheduler.extra_jobs.refresh_suppression]\nfunc"
        )
        .replace('# schedule = "30 1 * * *"', 'schedule = "30 1 * * *"')
    )
    return load_settings(config, environ={})


def test_broken_jobs_are_reported_and_the_rest_scheduled(settings, caplog):
    jobs, invalid = scan_jobs(settings)
    assert [j.name for j in jobs] == [
        "campaign:cc_cross_sell",
        "campaign:savings_wealth_email",
        "conversion_analysis",
        "model_refresh",
    ]
    errors = {bad.name: bad.error for bad in invalid}
    assert set(errors) == {"campaign:garbage", "campaign:instalment_push", "refresh_suppression"}
    assert (
        "instalment_push.toml: schedule: invalid schedule '30 18 30 2 *': it never fires"
        in errors["campaign:instalment_push"]
    )
    assert "is not UTF-8 text" in errors["campaign:garbage"]
    assert "extra job function 'mypkg.jobs:refresh_suppression' cannot be imported" in errors["refresh_suppression"]
    with caplog.at_level(logging.ERROR, logger="mktg.jobs"):
        assert [j.name for j in build_jobs(settings)] == [j.name for j in jobs]
    logged = {r.fields["job"]: r.fields["error"] for r in caplog.records if r.message.startswith("job not scheduled")}
    assert logged == errors


def test_running_a_broken_job_by_hand_gives_its_error(settings):
    with pytest.raises(ConfigError) as info:
        find_job(settings, "campaign:instalment_push")
    assert str(info.value).startswith("job 'campaign:instalment_push' cannot run: ") and "never fires" in str(
        info.value
    )
    assert find_job(settings, "campaign:cc_cross_sell").kwargs == {"campaign_id": "cc_cross_sell"}


def test_jobs_list_shows_the_broken_ones(project, cli):
    broken = project / "config" / "campaigns" / "instalment_push.toml"
    broken.write_text(broken.read_text().replace("max_audience = 3000", "max_audience = -1"))
    listed = cli("jobs", "list", "--json")
    assert listed.code == 1
    rows = {row["job"]: row for row in json.loads(listed.out)}
    assert rows["campaign:cc_cross_sell"]["valid"] and rows["campaign:cc_cross_sell"]["next_fire_time"].endswith("Z")
    assert not rows["campaign:instalment_push"]["valid"]
    assert (
        "instalment_push.toml: max_audience: Input should be greater than or equal to 1, got -1"
        in rows["campaign:instalment_push"]["error"]
    )
    table = cli("jobs", "list")
    assert table.code == 1 and "invalid, not scheduled" in table.out and "campaign:savings_wealth_email" in table.out
