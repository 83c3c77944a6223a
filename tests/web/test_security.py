"""Every route refuses anonymous requests and grants each role exactly the rights issue 14 gives it; ids that
try path traversal or injection are refused; sessions, CSRF, passwords and tokens behave."""

from __future__ import annotations

import re

from sqlalchemy import text
from web_helpers import PASSWORD, ROLES, login

from jobs.web import services

# From the issue: ops (run, pause, activate), crm (read runs and target lists), analyst (read reports), admin
# (users, tokens: and the audit log shown in the console). Every signed-in role reads the non-personal overview
# (campaigns, run manifests, models, jobs). Customer-level data (explain, lookup) belongs to crm.
EVERYONE = set(ROLES)
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/api/openapi.json"): EVERYONE,
    ("GET", "/api/campaigns"): EVERYONE,
    ("GET", "/api/campaigns/{campaign_id}"): EVERYONE,
    ("GET", "/api/campaigns/{campaign_id}/runs"): EVERYONE,
    ("POST", "/api/campaigns/{campaign_id}/runs"): {"ops"},
    ("POST", "/api/campaigns/{campaign_id}/pause"): {"ops"},
    ("POST", "/api/campaigns/{campaign_id}/resume"): {"ops"},
    ("GET", "/api/runs/{run_id}"): EVERYONE,
    ("GET", "/api/runs/{run_id}/targets"): {"crm"},
    ("GET", "/api/runs/{run_id}/report"): {"analyst"},
    ("GET", "/api/customers/{customer_id}/explain"): {"crm"},
    ("POST", "/api/models/{version}/activate"): {"ops"},
    ("GET", "/"): EVERYONE,
    ("GET", "/campaigns/{campaign_id}"): EVERYONE,
    ("GET", "/campaigns/{campaign_id}/preview"): {"ops"},
    ("POST", "/campaigns/{campaign_id}/run"): {"ops"},
    ("POST", "/campaigns/{campaign_id}/pause"): {"ops"},
    ("POST", "/campaigns/{campaign_id}/resume"): {"ops"},
    ("GET", "/runs/{run_id}"): EVERYONE,
    ("GET", "/runs/{run_id}/explain"): {"crm"},
    ("GET", "/runs/{run_id}/files/{name}"): {"crm"},
    ("GET", "/runs/{run_id}/report"): {"analyst"},
    ("GET", "/models"): EVERYONE,
    ("POST", "/models/{version}/activate"): {"ops"},
    ("GET", "/jobs"): EVERYONE,
    ("GET", "/customers"): {"crm"},
    ("GET", "/audit"): {"admin"},
    ("POST", "/logout"): EVERYONE,
}
ANONYMOUS = {("GET", "/healthz"), ("GET", "/login"), ("POST", "/login")}
SAMPLE = {
    "campaign_id": "cc_cross_sell",
    "run_id": "cc_cross_sell-20261102T090000",
    "customer_id": "C00000001",
    "version": "popularity-v1",
    "name": "targets.csv",
}


def routes(app) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        for method in sorted(getattr(route, "methods", None) or []):
            if method != "HEAD":
                found.append((method, route.path))
    return found


def call(client, method: str, path: str, headers=None):
    url = re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m.group(1)], path)
    query = {"campaign_id": "cc_cross_sell"} if "explain" in path else {}
    body = {"fire_time": "2026-11-02T09:00:00Z"} if method == "POST" and path.startswith("/api/") else None
    return client.request(method, url, headers=headers or {}, params=query, json=body)


def refused(response) -> bool:
    return response.status_code in (401, 403) or (
        response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    )


def test_every_route_refuses_anonymous_and_each_role_gets_exactly_its_rights(config_only):
    web = config_only
    listed = routes(web.client.app)
    assert set(listed) == set(EXPECTED) | ANONYMOUS, "a route was added or removed: update EXPECTED from the issue"
    for method, path in listed:
        anonymous = call(web.client, method, path)
        if (method, path) in ANONYMOUS:
            # reachable without signing in (POST /login without the form's CSRF token: 403, see the login test)
            assert anonymous.status_code in ((200,) if method == "GET" else (403,)), (method, path)
            continue
        if path.startswith("/api/"):
            assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer", (method, path)
        else:
            assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login"), (method, path)
        for role in ROLES:
            response = call(web.client, method, path, web.as_role(role))
            allowed = role in EXPECTED[(method, path)]
            assert refused(response) != allowed, (method, path, role, response.status_code, response.text[:200])
            if not allowed:
                assert response.status_code == 403, (method, path, role)
    # the OpenAPI document lists the API routes (and no console page)
    schema = web.client.get("/api/openapi.json", headers=web.as_role("crm")).json()
    assert {p for p in schema["paths"]} == {
        p for m, p in EXPECTED if p.startswith("/api/") and p != "/api/openapi.json"
    }


def test_healthz_is_anonymous_and_says_ok(config_only):
    response = config_only.client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


BAD_IDS = [
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "..",
    "x' OR '1'='1",
    "x;DROP TABLE users",
    "cc_cross_sell-20261102T090000%2F..%2F..%2Fmanifest",
    "%00",
    "a" * 300,
    "C1%0Aforged log line",
]


def test_ids_trying_traversal_or_injection_are_refused(config_only):
    web = config_only
    for bad in BAD_IDS:
        for path in (
            f"/api/campaigns/{bad}",
            f"/api/campaigns/{bad}/runs",
            f"/api/runs/{bad}",
            f"/api/runs/{bad}/targets",
            f"/api/runs/{bad}/report",
            f"/api/customers/{bad}/explain?campaign_id=cc_cross_sell",
            f"/api/customers/C1/explain?campaign_id={bad}",
            f"/runs/cc_cross_sell-20261102T090000/files/{bad}",
            f"/runs/{bad}/files/targets.csv",
            f"/customers?customer_id={bad}",
        ):
            role = (
                "crm"
                if any(w in path for w in ("targets", "explain", "files", "customers"))
                else ("analyst" if "report" in path else "ops")
            )
            response = web.client.get(path, headers=web.as_role(role))
            assert response.status_code in (404, 422), (path, response.status_code, response.text[:200])
    with web.engine.connect() as conn:  # the injection attempts left the tables alone
        assert conn.execute(text("select count(*) from users")).scalar_one() == len(ROLES)


def test_a_run_whose_directory_lies_outside_the_export_root_is_not_served(config_only, tmp_path):
    web = config_only
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "targets.csv").write_text("secret\n")
    (outside / "manifest.json").write_text("{}")
    with web.engine.begin() as conn:  # a tampered row: export_dir outside <var>/exports
        conn.execute(
            text(
                "insert into campaign_runs (run_id, campaign_id, scheduled_for, status, started_at, export_dir)"
                " values ('cc_cross_sell-20261102T090000', 'cc_cross_sell', '2026-11-02 09:00:00',"
                " 'succeeded', '2026-11-02 09:00:00', :d)"
            ),
            {"d": str(outside)},
        )
    for path in (
        "/api/runs/cc_cross_sell-20261102T090000/targets",
        "/runs/cc_cross_sell-20261102T090000/files/targets.csv",
    ):
        response = web.client.get(path, headers=web.as_role("crm"))
        assert response.status_code == 404 and "secret" not in response.text
    assert web.client.get("/api/runs/cc_cross_sell-20261102T090000", headers=web.as_role("ops")).status_code == 404


def test_login_session_cookie_csrf_and_audit(config_only):
    web = config_only
    client = web.client
    bad = client.post("/login", data={"username": "user_ops", "password": PASSWORD, "next": "/"})
    assert bad.status_code == 403  # no CSRF token: refused before the password is even looked at
    csrf = login(client, "user_ops")
    cookie = client.cookies.jar
    raw = next(c for c in cookie if c.name == "mktg_session")
    assert raw.has_nonstandard_attr("HttpOnly") or "httponly" in str(raw._rest).lower()
    assert client.get("/").status_code == 200
    # a form POST without the session's CSRF token is refused, with it accepted
    assert client.post("/campaigns/cc_cross_sell/pause", data={}).status_code == 403
    assert client.post("/campaigns/cc_cross_sell/pause", data={"csrf_token": "forged"}).status_code == 403
    assert services.paused_jobs(web.engine) == {}
    ok = client.post("/campaigns/cc_cross_sell/pause", data={"csrf_token": csrf})
    assert ok.status_code == 303 and "campaign:cc_cross_sell" in services.paused_jobs(web.engine)
    assert "paused" in client.get("/campaigns/cc_cross_sell").text
    listed = {c["id"]: c for c in client.get("/api/campaigns", headers=web.as_role("crm")).json()}
    assert listed["cc_cross_sell"]["paused"] and listed["cc_cross_sell"]["next_fire_time"] is None
    assert listed["instalment_push"]["next_fire_time"] is not None
    # an API POST riding on the session cookie needs the header; a bearer token does not
    assert client.post("/api/campaigns/cc_cross_sell/resume").status_code == 403
    assert client.post("/api/campaigns/cc_cross_sell/resume", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/").status_code == 303  # signed out
    actions = [(a["username"], a["action"], a["target"]) for a in services.audit_entries(web.engine)]
    assert ("user_ops", "login", None) in actions and ("user_ops", "pause", "cc_cross_sell") in actions
    assert ("user_ops", "resume", "cc_cross_sell") in actions


def test_wrong_password_unknown_user_and_revoked_token_are_refused(config_only):
    web = config_only
    client = web.client
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    for user, password in (("user_ops", "wrong password"), ("nobody", PASSWORD)):
        response = client.post("/login", data={"username": user, "password": password, "csrf_token": csrf})
        assert response.status_code == 401 and "wrong user name or password" in response.text
    assert client.get("/").status_code == 303
    headers = web.as_role("crm")
    assert client.get("/api/campaigns", headers=headers).status_code == 200
    services.revoke_token(web.engine, web.tokens["crm"][:12])
    assert client.get("/api/campaigns", headers=headers).status_code == 401
    assert client.get("/api/campaigns", headers={"Authorization": "Bearer mktg_made_up"}).status_code == 401
    with web.engine.connect() as conn:  # stored hashed: neither the secret nor the password is in the database
        stored = " ".join(str(v) for row in conn.execute(text("select * from api_tokens")) for v in row)
        users = " ".join(str(v) for row in conn.execute(text("select * from users")) for v in row)
    assert web.tokens["ops"] not in stored and PASSWORD not in users and "$argon2id$" in users


def test_users_and_tokens_commands(tmp_path, monkeypatch, capsys):
    import shutil

    from web_helpers import ROOT

    from jobs.cli import main

    shutil.copytree(ROOT / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    for name in ("MKTG_CONFIG_DIR", "MKTG_DATABASE_URL", "MKTG_VAR_DIR", "MKTG_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)

    def mktg(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err

    assert mktg("db", "upgrade")[0] == 0
    assert mktg("users", "add", "ann", "--roles", "ops,crm", "--password", PASSWORD) == (
        0,
        "user ann added with roles ops, crm\n",
        "",
    )
    code, _, err = mktg("users", "add", "bob", "--roles", "ops,root", "--password", PASSWORD)
    assert code == 2 and err == "error: roles: root not known; choose from ops, crm, analyst, admin\n"
    assert (
        mktg("users", "add", "ann", "--roles", "ops", "--password", PASSWORD)[2] == "error: user 'ann' exists already\n"
    )
    code, secret, err = mktg("tokens", "create", "ann", "--name", "crm-sync")
    secret = secret.strip()
    assert code == 0 and secret.startswith("mktg_") and len(secret) > 40 and "not shown again" in err
    assert secret[:12] in mktg("tokens", "list")[1] and secret not in mktg("tokens", "list", "--json")[1]
    assert mktg("tokens", "revoke", secret[:12]) == (0, f"revoked 1 token(s) starting with {secret[:12]}\n", "")
    assert "no active token" in mktg("tokens", "revoke", secret[:12])[2]


def test_pages_escape_what_campaign_files_say_and_forbid_scripts(config_only):
    web = config_only
    path = web.settings.config_dir / "campaigns" / "cc_cross_sell.toml"
    text = path.read_text()
    path.write_text(text.replace('name = "Credit-card cross-sell (SMS)"', 'name = "<script>alert(1)</script>"', 1))
    for url in ("/", "/campaigns/cc_cross_sell"):
        response = web.client.get(url, headers=web.as_role("ops"))
        assert response.status_code == 200
        assert (
            "<script>alert(1)</script>" not in response.text
            and "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
        )
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
