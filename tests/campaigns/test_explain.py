"""Explain: targeted (arm, offer, score, rank in segment) or the rule ids per excluded offer."""

from __future__ import annotations

import pytest
from campaign_world import do_run

from campaigns.explain import explain
from campaigns.run_repository import RunNotFoundError


def test_targeted_excluded_and_unknown_customers(db_engine, tmp_path):
    result = do_run(db_engine, tmp_path)
    student = explain(db_engine, "test_campaign", "C010")
    assert student.run["run_id"] == result.run_id
    assert student.targeted and student.targeted[0]["offer_id"] == "SAVE"
    assert student.exclusions == [("CARD", ["student_credit"]), ("LOAN", ["student_credit"])]
    row = student.targeted[0]
    assert 1 <= row["rank_in_segment"] <= row["segment_size"]
    text = "\n".join(student.lines())
    assert f"arm '{student.arm}'" in text and "offer SAVE" in text

    no_consent = explain(db_engine, "test_campaign", "C000", run_id=result.run_id)
    assert not no_consent.targeted and no_consent.exclusions == [(None, ["no_consent"])]
    assert "  every offer: excluded by no_consent" in no_consent.lines()

    stranger = explain(db_engine, "test_campaign", "NOBODY")
    assert not stranger.targeted and not stranger.exclusions
    assert "not in the campaign's candidate list" in "\n".join(stranger.lines())


def test_missing_runs_are_one_clear_error(db_engine, tmp_path):
    with pytest.raises(RunNotFoundError, match="has no committed run"):
        explain(db_engine, "test_campaign", "C000")
    do_run(db_engine, tmp_path)
    with pytest.raises(RunNotFoundError, match="no run 'nope'"):
        explain(db_engine, "test_campaign", "C000", run_id="nope")
