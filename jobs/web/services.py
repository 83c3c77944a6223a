"""Every database and file access of the web layer, over the application functions the CLI uses.

The routes (:mod:`jobs.web.app`) call only this module, so pointing the web layer at other repositories is a
change here. Nothing here logs customer data: log lines name runs, campaigns and users, never customer ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import Engine, delete, desc, select
from sqlalchemy.exc import IntegrityError

from campaigns import run_repository
from campaigns.db.session import session_scope
from jobs import campaign_service
from jobs.settings import Settings, load_events
from jobs.web.models import ApiToken, AuditEntry, SchedulePause, User
from jobs.web.security import (
    DUMMY_HASH,
    USERNAME,
    Principal,
    hash_password,
    new_token,
    parse_roles,
    token_hash,
    verify_password,
)
from recommender.errors import UserError

# Ids accepted in paths: what campaign files, run ids and customer ids look like; anything else is refused (422)
CAMPAIGN_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
RUN_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # <campaign>-<YYYYmmddTHHMMSS>: no dot, no slash
CUSTOMER_ID = r"^[A-Za-z0-9][A-Za-z0-9_:-]{0,63}$"
MODEL_VERSION = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
DOWNLOADS = {
    "targets.csv": "text/csv",
    "targets.parquet": "application/vnd.apache.parquet",
    "control.csv": "text/csv",
    "manifest.json": "application/json",
}
CAMPAIGN_JOB_PREFIX = "campaign:"


class NotFound(UserError):
    """The thing asked for does not exist (HTTP 404)."""


class Conflict(UserError):
    """The fire time is being run by another process right now (HTTP 409: ask again later)."""


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# ---------------------------------------------------------------------------------------------- users, tokens


def add_user(engine: Engine, username: str, password: str, roles: str) -> tuple[str, ...]:
    if not USERNAME.match(username):
        raise UserError(f"user name {username!r}: 1-64 letters, digits or _.@-")
    parsed = parse_roles(roles)
    try:
        with session_scope(engine) as s:
            s.add(
                User(
                    username=username,
                    password_hash=hash_password(password),
                    roles=",".join(parsed),
                    created_at=utcnow(),
                    disabled=False,
                )
            )
    except IntegrityError:
        raise UserError(f"user {username!r} exists already") from None
    return parsed


def list_users(engine: Engine) -> list[dict[str, Any]]:
    with session_scope(engine) as s:
        return [
            {"username": u.username, "roles": u.roles, "created_at": u.created_at, "disabled": u.disabled}
            for u in s.scalars(select(User).order_by(User.username))
        ]


def authenticate(engine: Engine, username: str, password: str) -> Principal | None:
    with session_scope(engine) as s:
        user = s.scalar(select(User).where(User.username == username))
    if user is None or user.disabled:
        verify_password(DUMMY_HASH, password)  # the same time whether the user exists or not
        return None
    if not verify_password(user.password_hash, password):
        return None
    return Principal(user.username, tuple(user.roles.split(",")), "session")


def principal_of(engine: Engine, username: str) -> Principal | None:
    """The signed-in user of a session (None once the user is deleted or disabled)."""
    with session_scope(engine) as s:
        user = s.scalar(select(User).where(User.username == username))
    if user is None or user.disabled:
        return None
    return Principal(user.username, tuple(user.roles.split(",")), "session")


def principal_for_token(engine: Engine, secret: str) -> Principal | None:
    digest = token_hash(secret)
    with session_scope(engine) as s:
        row = s.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
        ).first()
        if row is None or row[1].disabled:
            return None
        token, user = row
        token.last_used_at = utcnow()
        return Principal(user.username, tuple(user.roles.split(",")), "token")


def create_token(engine: Engine, username: str, name: str) -> tuple[str, str]:
    """A new token of ``username``: (secret, shown once; its prefix, which names it in listings)."""
    secret, digest = new_token()
    prefix = secret[:12]
    with session_scope(engine) as s:
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise UserError(f"user {username!r} does not exist (`mktg users add` first)")
        s.add(ApiToken(user_id=user.id, name=name[:64], token_hash=digest, prefix=prefix, created_at=utcnow()))
    return secret, prefix


def revoke_token(engine: Engine, prefix: str) -> int:
    """Revoke the token(s) whose prefix is ``prefix`` (the first 12 characters shown at creation)."""
    if len(prefix) < 8:
        raise UserError("token prefix: give at least 8 characters (e.g. mktg_AbCdEfG)")
    with session_scope(engine) as s:
        tokens = [
            t
            for t in s.scalars(select(ApiToken).where(ApiToken.revoked_at.is_(None)))
            if t.prefix.startswith(prefix) or prefix.startswith(t.prefix)
        ]
        if not tokens:
            raise UserError(f"no active token starts with {prefix!r} (`mktg tokens list`)")
        for token in tokens:
            token.revoked_at = utcnow()
        return len(tokens)


def list_tokens(engine: Engine) -> list[dict[str, Any]]:
    with session_scope(engine) as s:
        return [
            {
                "prefix": t.prefix,
                "name": t.name,
                "user": u.username,
                "created_at": t.created_at,
                "revoked_at": t.revoked_at,
                "last_used_at": t.last_used_at,
            }
            for t, u in s.execute(
                select(ApiToken, User).join(User, User.id == ApiToken.user_id).order_by(ApiToken.created_at)
            )
        ]


def audit(engine: Engine, username: str, action: str, target: str | None = None, detail: str | None = None) -> None:
    with session_scope(engine) as s:
        s.add(AuditEntry(at=utcnow(), username=username, action=action, target=target, detail=detail))


def audit_entries(engine: Engine, *, limit: int = 200) -> list[dict[str, Any]]:
    with session_scope(engine) as s:
        return [
            {"at": a.at, "username": a.username, "action": a.action, "target": a.target, "detail": a.detail}
            for a in s.scalars(select(AuditEntry).order_by(desc(AuditEntry.at), desc(AuditEntry.id)).limit(limit))
        ]


# ---------------------------------------------------------------------------------------------- campaigns


def _next_fire(schedule: str | None, tz: str) -> datetime | None:
    if not schedule:
        return None
    from campaigns.schedules import cron_trigger

    now = datetime.now(UTC)
    nxt = cron_trigger(schedule, timezone=tz).get_next_fire_time(None, now)
    return nxt.astimezone(UTC).replace(tzinfo=None) if nxt else None


def paused_jobs(engine: Engine) -> dict[str, dict[str, Any]]:
    with session_scope(engine) as s:
        return {
            p.job_name: {"paused_at": p.paused_at, "paused_by": p.paused_by} for p in s.scalars(select(SchedulePause))
        }


def list_campaigns(settings: Settings, engine: Engine) -> list[dict[str, Any]]:
    """Every campaign file: channel, schedule, next fire time, paused, last run and its status; broken files too."""
    scan = campaign_service.scan_all_specs(settings)
    paused = paused_jobs(engine)
    rows: list[dict[str, Any]] = []
    for spec in scan.valid.values():
        last = run_repository.list_runs(engine, spec.id, limit=1)
        is_paused = CAMPAIGN_JOB_PREFIX + spec.id in paused
        rows.append(
            {
                "id": spec.id,
                "valid": True,
                "name": spec.name,
                "channel": spec.channel,
                "schedule": spec.schedule,
                "enabled": spec.enabled,
                "paused": is_paused,
                "next_fire_time": None
                if is_paused or not spec.enabled
                else _next_fire(spec.schedule, settings.scheduler.timezone),
                "last_run": campaign_service.run_summary(last[0]) if last else None,
                "error": None,
            }
        )
    rows += [{"id": stem, "valid": False, "error": error} for stem, error in scan.invalid.items()]
    return sorted(rows, key=lambda r: r["id"])


def _spec(settings: Settings, campaign_id: str):
    scan = campaign_service.scan_all_specs(settings)
    if campaign_id in scan.invalid:
        raise UserError(scan.invalid[campaign_id])
    if campaign_id not in scan.valid:
        raise NotFound(f"unknown campaign {campaign_id!r}")
    return scan.valid[campaign_id]


def campaign(settings: Settings, engine: Engine, campaign_id: str) -> dict[str, Any]:
    spec = _spec(settings, campaign_id)
    is_paused = CAMPAIGN_JOB_PREFIX + spec.id in paused_jobs(engine)
    return {
        "id": spec.id,
        "spec": spec.model_dump(mode="json"),
        "file": spec.source,
        "strategies": spec.strategies,
        "paused": is_paused,
        "next_fire_time": None
        if is_paused or not spec.enabled
        else _next_fire(spec.schedule, settings.scheduler.timezone),
        "runs": campaign_runs(settings, engine, campaign_id, limit=20),
    }


def campaign_runs(settings: Settings, engine: Engine, campaign_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
    _spec(settings, campaign_id)
    return [campaign_service.run_summary(r) for r in run_repository.list_runs(engine, campaign_id, limit=limit)]


def frame_records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dicts()


def preview(settings: Settings, engine: Engine, campaign_id: str, at: datetime) -> dict[str, Any]:
    """The eligibility funnel of a preview as of ``at``: audience, exclusions per rule, per arm/segment/offer."""
    _spec(settings, campaign_id)
    plan = campaign_service.preview(
        settings, load_events(settings), campaign_id=campaign_id, data_dir=settings.data_dir, at=at, engine=engine
    )
    summary = plan.summary()
    return {
        "campaign_id": campaign_id,
        "as_of": at,
        "rows": plan.targets.height,
        "customers": plan.targets["customer_id"].n_unique(),
        **{name: frame_records(frame) for name, frame in summary.items()},
    }


@dataclass(frozen=True)
class RunOutcome:
    run: dict[str, Any]
    created: bool


def run_campaign(settings: Settings, engine: Engine, campaign_id: str, when: datetime) -> RunOutcome:
    """Run for fire time ``when`` through the job runner: the scheduler's exactly-once claim on (campaign, time)."""
    from jobs.runner import Outcome
    from jobs.scheduled_jobs import campaign_job
    from jobs.scheduler import make_runner

    _spec(settings, campaign_id)
    when = when.replace(second=when.second, microsecond=0)
    report = make_runner(engine, settings, label="web").run(
        CAMPAIGN_JOB_PREFIX + campaign_id, when, campaign_job, {"campaign_id": campaign_id}, trigger="manual"
    )
    if report.outcome == Outcome.RUNNING_ELSEWHERE:
        raise Conflict(f"{campaign_id} for {when:%Y-%m-%d %H:%M:%S} is running in another process right now")
    if report.exception is not None:
        raise report.exception
    run = run_repository.get_run(engine, report.run_id) if report.run_id else None
    if run is None:
        raise UserError(f"{campaign_id} for {when:%Y-%m-%d %H:%M:%S}: {report.outcome.value}, but no campaign run")
    created = report.outcome == Outcome.SUCCEEDED and bool(getattr(report.value, "created", False))
    return RunOutcome(campaign_service.run_summary(run), created)


def set_paused(settings: Settings, engine: Engine, campaign_id: str, username: str, paused: bool) -> None:
    _spec(settings, campaign_id)
    job = CAMPAIGN_JOB_PREFIX + campaign_id
    with session_scope(engine) as s:
        s.execute(delete(SchedulePause).where(SchedulePause.job_name == job))
        if paused:
            s.add(SchedulePause(job_name=job, paused_at=utcnow(), paused_by=username))


# ---------------------------------------------------------------------------------------------- runs and files


def get_run(engine: Engine, run_id: str) -> dict[str, Any]:
    run = run_repository.get_run(engine, run_id)
    if run is None:
        raise NotFound(f"unknown run {run_id!r}")
    return run


def run_dir(settings: Settings, run: dict[str, Any]) -> Path:
    """The run's published directory, refused unless it lies under the export root."""
    root = Path(settings.export_dir).resolve()
    if not run.get("export_dir"):
        raise NotFound(f"run {run['run_id']} has no published files")
    directory = Path(run["export_dir"]).resolve()
    if not directory.is_relative_to(root) or not directory.is_dir():
        raise NotFound(f"run {run['run_id']} has no published files")
    return directory


def manifest(settings: Settings, engine: Engine, run_id: str) -> dict[str, Any]:
    run = get_run(engine, run_id)
    directory = run_dir(settings, run)
    document = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    return {"run": campaign_service.run_summary(run), "manifest": document}


def run_file(settings: Settings, engine: Engine, run_id: str, name: str) -> Path:
    """A published file of the run, by its name in the manifest: never a path built from user input."""
    if name not in DOWNLOADS:
        raise NotFound(f"no file {name!r} in a run (files: {', '.join(DOWNLOADS)})")
    path = run_dir(settings, get_run(engine, run_id)) / name
    if not path.is_file():
        raise NotFound(f"run {run_id} has no {name}")
    return path


def targets_page(path: Path, *, offset: int, limit: int) -> dict[str, Any]:
    """One page of a run's target list read from its Parquet file (only the rows asked for are read)."""
    lazy = pl.scan_parquet(path)
    total = lazy.select(pl.len()).collect().item()
    page = lazy.slice(offset, limit).collect()
    rows = page.with_columns(pl.col(pl.Datetime).dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_dicts()
    return {
        "offset": offset,
        "limit": limit,
        "total": total,
        "rows": rows,
        "next_offset": offset + limit if offset + limit < total else None,
    }


def stream_file(path: Path, *, chunk: int = 1 << 16) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            yield block


def report_path(settings: Settings, engine: Engine, run_id: str) -> Path:
    """The A/B report (HTML) the conversion analysis job wrote for the run."""
    get_run(engine, run_id)
    root = (Path(settings.var_dir) / "reports").resolve()
    path = settings.report_base(run_id).with_suffix(".html").resolve()  # where the conversion analysis writes it
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"run {run_id} has no A/B report yet (the conversion_analysis job writes it)")
    return path


def explain(
    settings: Settings, engine: Engine, campaign_id: str, customer_id: str, run_id: str | None = None
) -> dict[str, Any]:
    from campaigns.explain import explain as explain_customer
    from campaigns.run_repository import RunNotFoundError

    _spec(settings, campaign_id)
    try:
        explanation = explain_customer(engine, campaign_id, customer_id, run_id=run_id)
    except RunNotFoundError as exc:
        raise NotFound(str(exc)) from None
    return {
        "campaign_id": campaign_id,
        "customer_id": customer_id,
        "run": campaign_service.run_summary(explanation.run),
        "targeted": bool(explanation.targeted),
        "arm": explanation.arm,
        "rows": explanation.targeted,
        "exclusions": [{"offer_id": offer, "rule_ids": rules} for offer, rules in explanation.exclusions],
        "lines": explanation.lines(),
    }


def customer(settings: Settings, engine: Engine, customer_id: str) -> dict[str, Any]:
    """A customer's segment, eligibility per offer with reasons (as of each campaign's latest run) and contact
    history: nothing more about the customer."""
    scan = campaign_service.scan_all_specs(settings)
    campaigns_seen = []
    for spec in scan.valid.values():
        if run_repository.latest_run(engine, spec.id) is None:
            continue
        campaigns_seen.append(explain(settings, engine, spec.id, customer_id))
    segment = run_repository.customer_segment(engine, customer_id)
    contacts = run_repository.customer_contacts(engine, customer_id)
    if segment is None:
        segment = next((row["segment"] for c in campaigns_seen for row in c["rows"]), None)
    return {
        "customer_id": customer_id,
        "segment": segment,
        "now": eligibility_now(settings, engine, customer_id),
        "campaigns": campaigns_seen,
        "contacts": contacts,
    }


def eligibility_now(settings: Settings, engine: Engine, customer_id: str) -> dict[str, Any]:
    """Every offer the active model ranks for the customer, eligible or not with the rule ids that exclude it,
    judged now by the ``default`` rule set without a channel (what ``mktg recommend --all`` shows); the error
    as one line when it cannot be judged (no active model, no data)."""
    from campaigns.model_registry import active_versions
    from jobs.model_service import load_models_config

    try:
        config = load_models_config(settings)
        with session_scope(engine) as s:
            active = sorted(name for name in active_versions(s) if name in config.models)
        if not active:
            raise UserError("no active ranking model in the registry: run `mktg train` first")
        result = campaign_service.recommend(
            settings,
            load_events(settings),
            data_dir=settings.data_dir,
            customer_ids=[customer_id],
            k=10_000,  # every offer of the catalogue
            engine=engine,
            model_name=config.default if config.default in active else active[0],
            show_all=True,
        )
    except UserError as exc:
        return {"error": str(exc)}
    offers = result.offers.sort("rank").select("offer_id", "eligible", "excluded_by").to_dicts()
    return {
        "as_of": result.as_of,
        "model": result.model.version,
        "rule_set": result.rule_set,
        "skipped_checks": result.skipped_checks,
        "offers": offers,
    }


# ---------------------------------------------------------------------------------------------- models, jobs


def model_versions(engine: Engine) -> list[dict[str, Any]]:
    from campaigns.model_registry import list_versions

    with session_scope(engine) as s:
        return [
            {
                "version": m.version,
                "name": m.kind,
                "trained_at": m.trained_at,
                "metrics": m.metrics,
                "is_active": m.is_active,
            }
            for m in list_versions(s)
        ]


def activate_model(engine: Engine, version: str) -> str:
    from campaigns.model_registry import activate_version

    with session_scope(engine) as s:
        try:
            return activate_version(s, version).kind
        except LookupError:
            raise NotFound(f"model version {version!r} is not registered") from None


def job_history(engine: Engine, *, limit: int = 100) -> list[dict[str, Any]]:
    from jobs.repository import history_with_attempts

    return [
        {
            "job": h.run.job_name,
            "fire_time": h.run.fire_time,
            "status": h.run.status,
            "rows": h.run.rows_produced,
            "attempts": h.run.attempts,
            "error": h.run.error,
            "note": h.run.note,
            "started_at": h.run.started_at,
            "finished_at": h.run.finished_at,
            "retries": [
                {"attempt": a.attempt, "trigger": a.trigger, "status": a.status, "error": a.error} for a in h.attempts
            ],
        }
        for h in history_with_attempts(engine, limit=limit)
    ]


def healthy(engine: Engine) -> bool:
    from sqlalchemy import text

    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        return True
    except Exception:
        return False
