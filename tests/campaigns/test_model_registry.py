"""Registry on a real database (SQLite always, PostgreSQL when reachable)."""

from __future__ import annotations

from datetime import datetime

from campaigns.db.session import session_scope
from campaigns.model_registry import active_version, active_versions, latest_version, list_versions, register_model


def _register(session, version: str, name: str, when: datetime, **kw):
    return register_model(
        session,
        version=version,
        name=name,
        params={"factors": 8},
        data_hash="abc",
        trained_at=when,
        train_seconds=1.5,
        path=f"/m/{version}",
        metrics={"ndcg": 0.3},
        **kw,
    )


def test_register_activates_latest_and_deactivates_previous(db_engine):
    with session_scope(db_engine) as s:
        _register(s, "als-1", "als", datetime(2026, 1, 1))
        _register(s, "lfm-1", "lightfm_warp", datetime(2026, 1, 1))
    with session_scope(db_engine) as s:
        _register(s, "als-2", "als", datetime(2026, 2, 1))
        _register(s, "als-3", "als", datetime(2026, 3, 1), activate=False)
    with session_scope(db_engine) as s:
        assert active_version(s, "als").version == "als-2"
        assert latest_version(s, "als").version == "als-3"
        assert {n: v.version for n, v in active_versions(s).items()} == {"als": "als-2", "lightfm_warp": "lfm-1"}
        assert [v.version for v in list_versions(s, "als")] == ["als-3", "als-2", "als-1"]
        assert active_version(s, "bpr") is None
        row = active_version(s, "als")
        assert (row.params, row.metrics, row.train_seconds, row.path) == (
            {"factors": 8},
            {"ndcg": 0.3},
            1.5,
            "/m/als-2",
        )


def test_re_registering_a_version_is_idempotent(db_engine):
    with session_scope(db_engine) as s:
        _register(s, "als-1", "als", datetime(2026, 1, 1))
    with session_scope(db_engine) as s:
        _register(s, "als-1", "als", datetime(2026, 1, 1))
    with session_scope(db_engine) as s:
        assert len(list_versions(s)) == 1 and active_version(s, "als").version == "als-1"
