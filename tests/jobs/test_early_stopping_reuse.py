"""When the nightly refresh may reuse an earlier early-stopping search (``reusable_early_stopping``), checked against
the rule as written in docs/ranking.md: the search's data ended at most ``early_stopping_days`` before tonight's
evaluation cut-off and not after it, every parameter other than the refit ones is unchanged, and 0 days means never."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.scheduled_jobs import EarlierStopping, reusable_early_stopping

CUTOFF = datetime(2026, 9, 1)
PARAMS = {"loss": "warp", "learning_rate": 0.15, "no_components": 32, "epochs": 20, "patience": 2}
REFIT = {"epochs": 7, "patience": 0}


@settings(max_examples=300, deadline=None)
@given(
    age_hours=st.integers(-30 * 24, 30 * 24),
    max_days=st.sampled_from([0.0, 0.5, 1.0, 7.0, 14.0]),
    change=st.sampled_from([None, "learning_rate", "no_components", "epochs", "patience", "kind", "new_key"]),
    record_as_of=st.sampled_from(["iso", "missing", "garbage"]),
    refit_kept=st.booleans(),
)
def test_reuse_follows_the_rule(age_hours, max_days, change, record_as_of, refit_kept):
    searched = CUTOFF - timedelta(hours=age_hours)
    record = {"best_epochs": 7}
    if refit_kept:
        record["refit_params"] = dict(REFIT)
    if record_as_of == "iso":
        record["as_of"] = searched.isoformat()
    elif record_as_of == "garbage":
        record["as_of"] = "yesterday"
    earlier_params = {"kind": "lightfm", **PARAMS, **REFIT}  # the registry keeps the refit values
    tonight = dict(PARAMS)
    if change == "learning_rate":
        tonight["learning_rate"] = 0.12
    elif change == "no_components":
        tonight["no_components"] = 64
    elif change in ("epochs", "patience"):
        tonight[change] = tonight[change] + 3  # a refit parameter: the search decides it anyway
    elif change == "kind":
        tonight["kind"] = "something_else"  # the registry's label, not a model parameter
    elif change == "new_key":
        tonight["max_sampled"] = 10
    got = reusable_early_stopping(
        EarlierStopping("lightfm-1", earlier_params, record), tonight, cutoff=CUTOFF, max_days=max_days
    )
    age_days = age_hours / 24
    expected = (
        max_days > 0
        and refit_kept
        and record_as_of == "iso"
        and 0 <= age_days <= max_days
        and change not in ("learning_rate", "no_components", "new_key")
    )
    assert got == (REFIT if expected else None)


def test_nothing_earlier_nothing_reused():
    assert reusable_early_stopping(None, dict(PARAMS), cutoff=CUTOFF, max_days=7) is None
