"""Real job functions for the scheduler tests (importable by the scheduler subprocesses: PYTHONPATH=tests/jobs).

``write_probe_row`` writes one row per execution into ``probe_rows`` (a table without a unique key, so a
duplicate execution would show) inside the job's transaction, i.e. together with its ``succeeded`` record.
"""

from __future__ import annotations

import os
import time

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table

from jobs.runner import JobContext, JobResult

metadata = MetaData()
probe_rows = Table(
    "probe_rows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_name", String(128), nullable=False),
    Column("fire_time", DateTime, nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("pid", Integer, nullable=False),
)


def write_probe_row(ctx: JobContext, *, sleep: float = 0.0) -> JobResult:
    """Write one row after ``sleep`` seconds. Environment knobs for the tests: PROBE_MARKER (a file written
    when the job starts), PROBE_SLEEP (overrides ``sleep``), PROBE_FAIL=1 (raise after writing the row)."""
    if marker := os.environ.get("PROBE_MARKER"):
        with open(marker, "a") as fh:
            fh.write(f"{ctx.fire_time.isoformat()} {ctx.run_id}\n")
    time.sleep(float(os.environ.get("PROBE_SLEEP", sleep)))
    ctx.session.execute(
        probe_rows.insert().values(job_name=ctx.job_name, fire_time=ctx.fire_time, run_id=ctx.run_id, pid=os.getpid())
    )
    if os.environ.get("PROBE_FAIL") == "1":
        raise RuntimeError("probe failure after writing its row")
    return JobResult(rows_produced=1)


def campaign_then_die(ctx: JobContext, *, campaign_id: str) -> JobResult:
    """The real campaign job, then kill -9 of this process: its campaign run is committed (own transaction,
    files published), its job record is not."""
    import signal

    from jobs.scheduled_jobs import campaign_job

    campaign_job(ctx, campaign_id=campaign_id)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")
