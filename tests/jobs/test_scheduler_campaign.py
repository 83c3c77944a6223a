"""Two real scheduler processes fire a real campaign (a generated world, a registered model, the full run
flow) every 3 seconds against one database: exactly one campaign run and one target list per fire time."""

from __future__ import annotations

from pathlib import Path

import pytest
from process_helpers import SchedulerProcess, campaign_world, wait_until
from sqlalchemy import func, select

from campaigns.db.models import CampaignRun, ContactHistory, TargetListRow
from campaigns.db.session import session_scope
from jobs.tables import JobRun

pytestmark = pytest.mark.slow  # two scheduler processes firing every 3 seconds


def _succeeded(engine) -> int:
    with session_scope(engine) as s:
        return s.scalar(
            select(func.count())
            .select_from(JobRun)
            .where(JobRun.job_name == "campaign:every3s", JobRun.status == "succeeded")
        )


def test_two_schedulers_run_a_real_campaign_once_per_fire_time(db_engine, tmp_path):
    config = campaign_world(tmp_path, db_engine)

    a = SchedulerProcess(config, "a", tmp_path / "a.log")
    b = SchedulerProcess(config, "b", tmp_path / "b.log")
    try:
        a.wait_for("scheduler started")
        b.wait_for("scheduler started")
        wait_until(lambda: _succeeded(db_engine) >= 3, timeout=90, alive=a, what="three succeeded campaign fire times")
    finally:
        codes = a.stop(), b.stop()
    assert codes == (0, 0), a.text() + b.text()

    with session_scope(db_engine) as s:
        jobs = s.scalars(select(JobRun).where(JobRun.job_name == "campaign:every3s").order_by(JobRun.fire_time)).all()
        runs = s.scalars(select(CampaignRun).order_by(CampaignRun.scheduled_for)).all()
        rows = dict(s.execute(select(TargetListRow.run_id, func.count()).group_by(TargetListRow.run_id)).all())
        contacts = dict(
            s.execute(
                select(ContactHistory.run_id, func.count())
                .where(ContactHistory.contacted.is_(True))
                .group_by(ContactHistory.run_id)
            ).all()
        )
    assert len(jobs) >= 3, a.text() + b.text()
    assert all(j.status == "succeeded" for j in jobs), [(j.fire_time, j.status, j.error) for j in jobs]
    # exactly one campaign run per fire time, linked from its job record, no extra runs
    assert [r.scheduled_for for r in runs] == [j.fire_time for j in jobs]
    assert [r.run_id for r in runs] == [j.run_id for j in jobs]
    for run in runs:
        assert run.status == "succeeded" and run.row_count > run.control_count > 0
        assert rows[run.run_id] == run.row_count  # target list (control included) stored once
        assert contacts[run.run_id] == run.row_count - run.control_count  # control customers are not contacted
        export = Path(run.export_dir)
        assert (export / "manifest.json").exists()
        assert sorted(p.name for p in export.parent.iterdir() if p.name.startswith(".")) == []  # no staging left
    assert len({Path(r.export_dir) for r in runs}) == len(runs)
