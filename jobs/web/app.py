"""The FastAPI application of ``mktg serve``: the REST API under /api and the server-rendered console.

Every route needs a signed-in user (session cookie) or an API token (``Authorization: Bearer ...``) holding
the route's right (:data:`jobs.web.security.RIGHTS`), except ``/healthz`` and the login form itself. Anonymous
requests get 401 on /api and a redirect to /login on console pages; a role without the right gets 403.
Forms carry a CSRF token; an API POST authenticated by the session cookie needs the ``X-CSRF-Token`` header.
Requests are logged by route template (``/api/customers/{customer_id}/explain``), never by their actual path
or query, so no customer id reaches the logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import Body, Depends, FastAPI, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from sqlalchemy import Engine
from starlette.middleware.sessions import SessionMiddleware

from jobs.settings import Settings
from jobs.web import services
from jobs.web.security import ROLES, Principal, csrf_matches, new_csrf_token
from recommender.errors import UserError

log = logging.getLogger("mktg.web")
TEMPLATES = Path(__file__).with_name("templates")
SESSION_COOKIE = "mktg_session"
SESSION_SECONDS = 8 * 3600

CampaignId = Annotated[str, PathParam(pattern=services.CAMPAIGN_ID, max_length=128)]
RunId = Annotated[str, PathParam(pattern=services.RUN_ID, max_length=64)]
CustomerId = Annotated[str, PathParam(pattern=services.CUSTOMER_ID, max_length=64)]
ModelVersionId = Annotated[str, PathParam(pattern=services.MODEL_VERSION, max_length=128)]
FileName = Annotated[str, PathParam(pattern=r"^(targets\.csv|targets\.parquet|control\.csv|manifest\.json)$")]


class AuthRequired(Exception):
    """No valid session or token."""


class Forbidden(Exception):
    """Signed in, but the role lacks the route's right."""


class CsrfFailed(Exception):
    """A form or session-authenticated API POST without the session's CSRF token."""


class RunRequest(BaseModel):
    fire_time: str


def _principal(request: Request) -> Principal | None:
    engine: Engine = request.app.state.engine
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return services.principal_for_token(engine, header[7:].strip())
    username = request.session.get("user")
    return services.principal_of(engine, username) if username else None


def require(right: str) -> Callable[[Request], Principal]:
    def dependency(request: Request) -> Principal:
        principal = _principal(request)
        if principal is None:
            raise AuthRequired()
        if not principal.can(right):
            raise Forbidden(right)
        request.state.principal = principal
        return principal

    dependency.right = right  # type: ignore[attr-defined]  # read by the route-enumerating test
    return dependency


def require_post(right: str) -> Callable[..., Any]:
    """:func:`require` for a POST, then the CSRF check (a token-authenticated call needs none): anonymous -> 401."""

    async def dependency(request: Request, principal: Principal = Depends(require(right))) -> Principal:  # noqa: B008
        await check_csrf(request)
        return principal

    dependency.right = right  # type: ignore[attr-defined]
    return dependency


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = new_csrf_token()
    return token


async def check_csrf(request: Request) -> None:
    """Forms: the ``csrf_token`` field; API POSTs with the session cookie: the ``X-CSRF-Token`` header."""
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return  # no cookie involved: a browser cannot be tricked into sending a bearer token
    given: str | None = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        field = (await request.form()).get("csrf_token")
        given = field if isinstance(field, str) else None
    if not csrf_matches(request.session.get("csrf"), given):
        raise CsrfFailed()


def create_app(settings: Settings, engine: Engine, *, secret_key: str, secure_cookies: bool = False) -> FastAPI:
    app = FastAPI(
        title="mktg",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        description="Campaigns, runs, target lists, reports and explanations of the mktg engine.",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret_key,
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_SECONDS,
        same_site="lax",
        https_only=secure_cookies,
    )
    templates = Jinja2Templates(env=jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True))
    templates.env.filters["utc"] = fmt_time

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        principal = getattr(request.state, "principal", None)
        log.info(
            "%s %s %s %.1fms user=%s",
            request.method,
            getattr(route, "path", "(no route)"),
            response.status_code,
            (time.perf_counter() - started) * 1000,
            principal.username if principal else "-",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def page(
        request: Request, name: str, principal: Principal | None, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        response = templates.TemplateResponse(
            request, name, {"me": principal, "csrf": csrf_token(request), **context}, status_code=status_code
        )
        # console pages: no script at all, styles inline in the page, forms only to this server
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"
        )
        return response

    def is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    @app.exception_handler(AuthRequired)
    async def _auth(request: Request, _exc: AuthRequired) -> Response:
        if is_api(request):
            return JSONResponse(
                {"detail": "authentication required"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        message = f"your role does not have the right '{exc.args[0]}'"
        if is_api(request):
            return JSONResponse({"detail": message}, status_code=403)
        return page(request, "error.html", getattr(request.state, "principal", None), 403, message=message)

    @app.exception_handler(CsrfFailed)
    async def _csrf(request: Request, _exc: CsrfFailed) -> Response:
        return JSONResponse({"detail": "CSRF token missing or wrong: reload the page"}, status_code=403)

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> Response:
        status = 404 if isinstance(exc, services.NotFound) else 409 if isinstance(exc, services.Conflict) else 422
        message = " ".join(str(exc).split())
        if is_api(request):
            return JSONResponse({"detail": message}, status_code=status)
        return page(request, "error.html", getattr(request.state, "principal", None), status, message=message)

    # ------------------------------------------------------------------------------------------ anonymous

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        ok = services.healthy(engine)
        return JSONResponse({"status": "ok" if ok else "database unreachable"}, status_code=200 if ok else 503)

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return page(
            request, "login.html", None, next=next if next.startswith("/") and not next.startswith("//") else "/"
        )

    @app.post("/login", include_in_schema=False, dependencies=[Depends(check_csrf)])
    def login(
        request: Request,
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=256)],
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        principal = services.authenticate(engine, username, password)
        if principal is None:
            services.audit(engine, username[:64], "login_failed")
            return page(request, "login.html", None, 401, next="/", error="wrong user name or password")
        request.session.clear()
        request.session["user"] = principal.username
        request.session["csrf"] = new_csrf_token()
        services.audit(engine, principal.username, "login")
        target = next if next.startswith("/") and not next.startswith("//") else "/"
        return RedirectResponse(target, status_code=303)

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, me: Annotated[Principal, Depends(require_post("view"))]) -> Response:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # ------------------------------------------------------------------------------------------ API

    def api_json(value: Any, status_code: int = 200) -> JSONResponse:
        return JSONResponse(jsonable_encoder(value), status_code=status_code)

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(me: Annotated[Principal, Depends(require("view"))]) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/api/campaigns", tags=["campaigns"])
    def api_campaigns(me: Annotated[Principal, Depends(require("view"))]) -> JSONResponse:
        return api_json(services.list_campaigns(settings, engine))

    @app.get("/api/campaigns/{campaign_id}", tags=["campaigns"])
    def api_campaign(campaign_id: CampaignId, me: Annotated[Principal, Depends(require("view"))]) -> JSONResponse:
        return api_json(services.campaign(settings, engine, campaign_id))

    @app.get("/api/campaigns/{campaign_id}/runs", tags=["campaigns"])
    def api_campaign_runs(
        campaign_id: CampaignId,
        me: Annotated[Principal, Depends(require("view"))],
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> JSONResponse:
        return api_json(services.campaign_runs(settings, engine, campaign_id, limit=limit))

    @app.post("/api/campaigns/{campaign_id}/runs", tags=["campaigns"])
    def api_run(
        campaign_id: CampaignId,
        body: Annotated[RunRequest, Body()],
        me: Annotated[Principal, Depends(require_post("run"))],
    ) -> JSONResponse:
        """Run the campaign for ``fire_time`` (ISO 8601, UTC when no offset): 201 with the new run, or 200 with
        the existing run of that fire time (the scheduler's exactly-once claim: nothing is written twice)."""
        from campaigns.times import parse_time

        when = parse_time(body.fire_time, option="fire_time")
        outcome = services.run_campaign(settings, engine, campaign_id, when)
        services.audit(
            engine,
            me.username,
            "run",
            campaign_id,
            f"fire time {when:%Y-%m-%dT%H:%M:%SZ}: run {outcome.run['run_id']} "
            f"({'created' if outcome.created else 'existing'})",
        )
        return api_json({"created": outcome.created, **outcome.run}, 201 if outcome.created else 200)

    @app.post("/api/campaigns/{campaign_id}/pause", tags=["campaigns"])
    def api_pause(campaign_id: CampaignId, me: Annotated[Principal, Depends(require_post("pause"))]) -> JSONResponse:
        services.set_paused(settings, engine, campaign_id, me.username, True)
        services.audit(engine, me.username, "pause", campaign_id)
        return api_json({"campaign_id": campaign_id, "paused": True})

    @app.post("/api/campaigns/{campaign_id}/resume", tags=["campaigns"])
    def api_resume(campaign_id: CampaignId, me: Annotated[Principal, Depends(require_post("pause"))]) -> JSONResponse:
        services.set_paused(settings, engine, campaign_id, me.username, False)
        services.audit(engine, me.username, "resume", campaign_id)
        return api_json({"campaign_id": campaign_id, "paused": False})

    @app.get("/api/runs/{run_id}", tags=["runs"])
    def api_manifest(run_id: RunId, me: Annotated[Principal, Depends(require("view"))]) -> JSONResponse:
        return api_json(services.manifest(settings, engine, run_id))

    @app.get("/api/runs/{run_id}/targets", tags=["runs"])
    def api_targets(
        run_id: RunId,
        me: Annotated[Principal, Depends(require("targets"))],
        format: Annotated[str, Query(pattern="^(csv|parquet|json)$")] = "csv",
        file: Annotated[str, Query(pattern="^(targets|control)$")] = "targets",
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> Response:
        """The run's target list (``file=control``: the control arm and holdouts, CSV only) streamed from its
        published file: CSV or Parquet whole, or JSON one page at a time (``offset``, ``limit``)."""
        if file == "control" and format != "csv":
            raise UserError("the control list is published as CSV only: format=csv")
        name = (
            "control.csv"
            if file == "control"
            else ("targets.parquet" if format in ("parquet", "json") else "targets.csv")
        )
        path = services.run_file(settings, engine, run_id, name)
        services.audit(
            engine,
            me.username,
            "download",
            run_id,
            f"{file} as {format}" + (f" rows {offset}+{limit}" if format == "json" else ""),
        )
        if format == "json":
            return api_json(services.targets_page(path, offset=offset, limit=limit))
        return StreamingResponse(
            services.stream_file(path),
            media_type=services.DOWNLOADS[name],
            headers={
                "Content-Disposition": f'attachment; filename="{run_id}-{name}"',
                "Content-Length": str(path.stat().st_size),
            },
        )

    @app.get("/api/runs/{run_id}/report", tags=["runs"])
    def api_report(run_id: RunId, me: Annotated[Principal, Depends(require("reports"))]) -> Response:
        """The run's A/B report (HTML, as the conversion_analysis job wrote it; JSON next to it)."""
        path = services.report_path(settings, engine, run_id)
        return FileResponse(path, media_type="text/html")

    @app.get("/api/customers/{customer_id}/explain", tags=["customers"])
    def api_explain(
        customer_id: CustomerId,
        me: Annotated[Principal, Depends(require("customers"))],
        campaign_id: Annotated[str, Query(pattern=services.CAMPAIGN_ID, max_length=128)],
        run_id: Annotated[str | None, Query(pattern=services.RUN_ID, max_length=64)] = None,
    ) -> JSONResponse:
        """Why the customer was (not) offered each offer in a run (default: the campaign's latest committed run)."""
        return api_json(services.explain(settings, engine, campaign_id, customer_id, run_id))

    @app.post("/api/models/{version}/activate", tags=["models"])
    def api_activate(
        version: ModelVersionId, me: Annotated[Principal, Depends(require_post("activate"))]
    ) -> JSONResponse:
        name = services.activate_model(engine, version)
        services.audit(engine, me.username, "activate", version, f"model {name}")
        return api_json({"version": version, "name": name, "is_active": True})

    # ------------------------------------------------------------------------------------------ console

    @app.get("/", include_in_schema=False)
    def campaigns_page(request: Request, me: Annotated[Principal, Depends(require("view"))]) -> HTMLResponse:
        return page(request, "campaigns.html", me, campaigns=services.list_campaigns(settings, engine))

    @app.get("/campaigns/{campaign_id}", include_in_schema=False)
    def campaign_page(
        request: Request, campaign_id: CampaignId, me: Annotated[Principal, Depends(require("view"))]
    ) -> HTMLResponse:
        return page(request, "campaign.html", me, c=services.campaign(settings, engine, campaign_id), preview=None)

    @app.get("/campaigns/{campaign_id}/preview", include_in_schema=False)
    def preview_page(
        request: Request,
        campaign_id: CampaignId,
        me: Annotated[Principal, Depends(require("run"))],
        at: Annotated[str | None, Query(max_length=40)] = None,
    ) -> HTMLResponse:
        from campaigns.times import now_utc, parse_time

        when = parse_time(at, option="at") if at else now_utc(to="minute")
        return page(
            request,
            "campaign.html",
            me,
            c=services.campaign(settings, engine, campaign_id),
            preview=services.preview(settings, engine, campaign_id, when),
        )

    @app.post("/campaigns/{campaign_id}/run", include_in_schema=False)
    def run_form(
        request: Request,
        campaign_id: CampaignId,
        fire_time: Annotated[str, Form(max_length=40)],
        me: Annotated[Principal, Depends(require_post("run"))],
    ) -> Response:
        from campaigns.times import parse_time

        when = parse_time(fire_time, option="fire time")
        outcome = services.run_campaign(settings, engine, campaign_id, when)
        services.audit(
            engine,
            me.username,
            "run",
            campaign_id,
            f"fire time {when:%Y-%m-%dT%H:%M:%SZ}: run {outcome.run['run_id']} "
            f"({'created' if outcome.created else 'existing'})",
        )
        return RedirectResponse(f"/runs/{outcome.run['run_id']}", status_code=303)

    @app.post("/campaigns/{campaign_id}/pause", include_in_schema=False)
    def pause_form(campaign_id: CampaignId, me: Annotated[Principal, Depends(require_post("pause"))]) -> Response:
        services.set_paused(settings, engine, campaign_id, me.username, True)
        services.audit(engine, me.username, "pause", campaign_id)
        return RedirectResponse(f"/campaigns/{campaign_id}", status_code=303)

    @app.post("/campaigns/{campaign_id}/resume", include_in_schema=False)
    def resume_form(campaign_id: CampaignId, me: Annotated[Principal, Depends(require_post("pause"))]) -> Response:
        services.set_paused(settings, engine, campaign_id, me.username, False)
        services.audit(engine, me.username, "resume", campaign_id)
        return RedirectResponse(f"/campaigns/{campaign_id}", status_code=303)

    @app.get("/runs/{run_id}", include_in_schema=False)
    def run_page(request: Request, run_id: RunId, me: Annotated[Principal, Depends(require("view"))]) -> HTMLResponse:
        return page(request, "run.html", me, r=services.manifest(settings, engine, run_id), explanation=None)

    @app.get("/runs/{run_id}/explain", include_in_schema=False)
    def run_explain_page(
        request: Request,
        run_id: RunId,
        me: Annotated[Principal, Depends(require("customers"))],
        customer_id: Annotated[str, Query(pattern=services.CUSTOMER_ID, max_length=64)],
    ) -> HTMLResponse:
        r = services.manifest(settings, engine, run_id)
        return page(
            request,
            "run.html",
            me,
            r=r,
            explanation=services.explain(settings, engine, r["run"]["campaign_id"], customer_id, run_id),
        )

    @app.get("/runs/{run_id}/files/{name}", include_in_schema=False)
    def download(run_id: RunId, name: FileName, me: Annotated[Principal, Depends(require("targets"))]) -> Response:
        path = services.run_file(settings, engine, run_id, name)
        services.audit(engine, me.username, "download", run_id, name)
        return FileResponse(path, media_type=services.DOWNLOADS[name], filename=f"{run_id}-{name}")

    @app.get("/runs/{run_id}/report", include_in_schema=False)
    def report_page(run_id: RunId, me: Annotated[Principal, Depends(require("reports"))]) -> Response:
        return FileResponse(services.report_path(settings, engine, run_id), media_type="text/html")

    @app.get("/models", include_in_schema=False)
    def models_page(request: Request, me: Annotated[Principal, Depends(require("view"))]) -> HTMLResponse:
        return page(request, "models.html", me, models=services.model_versions(engine))

    @app.post("/models/{version}/activate", include_in_schema=False)
    def activate_form(version: ModelVersionId, me: Annotated[Principal, Depends(require_post("activate"))]) -> Response:
        name = services.activate_model(engine, version)
        services.audit(engine, me.username, "activate", version, f"model {name}")
        return RedirectResponse("/models", status_code=303)

    @app.get("/jobs", include_in_schema=False)
    def jobs_page(request: Request, me: Annotated[Principal, Depends(require("view"))]) -> HTMLResponse:
        return page(request, "jobs.html", me, history=services.job_history(engine))

    @app.get("/customers", include_in_schema=False)
    def customer_page(
        request: Request,
        me: Annotated[Principal, Depends(require("customers"))],
        customer_id: Annotated[str | None, Query(pattern=services.CUSTOMER_ID, max_length=64)] = None,
    ) -> HTMLResponse:
        found = services.customer(settings, engine, customer_id) if customer_id else None
        return page(request, "customer.html", me, customer=found)

    @app.get("/audit", include_in_schema=False)
    def audit_page(request: Request, me: Annotated[Principal, Depends(require("admin"))]) -> HTMLResponse:
        return page(
            request,
            "audit.html",
            me,
            entries=services.audit_entries(engine),
            users=services.list_users(engine),
            tokens=services.list_tokens(engine),
            roles=ROLES,
        )

    return app


def fmt_time(value: datetime | None) -> str:
    return "-" if value is None else value.replace(microsecond=0).isoformat() + "Z"
