"""Why a customer was or was not targeted by a campaign run, from what the run stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from campaigns import run_repository
from campaigns.arms import CONTROL, is_contacted
from campaigns.run_repository import RunNotFoundError


@dataclass(frozen=True)
class Explanation:
    campaign_id: str
    customer_id: str
    run: dict[str, Any]
    targeted: list[dict[str, Any]] = field(default_factory=list)  # rows + rank_in_segment / segment_size
    exclusions: list[tuple[str | None, list[str]]] = field(default_factory=list)  # (offer or None = all, rule ids)

    @property
    def arm(self) -> str | None:
        return self.targeted[0]["arm"] if self.targeted else None

    def lines(self) -> list[str]:
        head = (
            f"campaign {self.campaign_id}, run {self.run['run_id']} "
            f"(scheduled for {self.run['scheduled_for'].replace(microsecond=0).isoformat()}Z)"
        )
        out = [head]
        if self.targeted:
            if self.arm == CONTROL:
                contacted = "control arm: recorded, not contacted"
            elif self.arm is not None and not is_contacted(self.arm):
                contacted = "held out of the arm's selection: recorded, not contacted"
            else:
                contacted = "contacted"
            out.append(f"customer {self.customer_id}: TARGETED in arm '{self.arm}', {contacted}")
            for row in self.targeted:
                out.append(
                    f"  offer {row['offer_id']} (offer rank {row['offer_rank']}), score {row['score']:.6g}, "
                    f"segment {row['segment']}: rank {row['rank_in_segment']} of {row['segment_size']} by score in segment and arm"
                )
        else:
            out.append(f"customer {self.customer_id}: NOT targeted")
        for offer, rules in self.exclusions:
            target = "every offer" if offer is None else f"offer {offer}"
            out.append(f"  {target}: excluded by {', '.join(rules)}")
        if not self.targeted and not self.exclusions:
            out.append(
                "  not in the campaign's candidate list (outside its target segments, unknown id, or no ranked offer)"
            )
        return out


def _resolve_run(engine: Engine, campaign_id: str, run_id: str | None) -> dict[str, Any]:
    if run_id is not None:
        run = run_repository.get_run(engine, run_id)
        if run is None or run["campaign_id"] != campaign_id:
            raise RunNotFoundError(f"no run '{run_id}' of campaign '{campaign_id}'")
        return run
    run = run_repository.latest_run(engine, campaign_id)
    if run is None:
        raise RunNotFoundError(
            f"campaign '{campaign_id}' has no committed run yet (run `mktg campaign run {campaign_id}`)"
        )
    return run


def explain(engine: Engine, campaign_id: str, customer_id: str, *, run_id: str | None = None) -> Explanation:
    """Targeted rows (arm, offer, score, rank in segment) or the rule ids per excluded offer, for one run."""
    run = _resolve_run(engine, campaign_id, run_id)
    mine = run_repository.target_rows(engine, run["run_id"], customer_id)
    targeted = []
    for row in mine.sort("offer_rank").iter_rows(named=True) if mine.height else []:
        segment_rows = run_repository.segment_scores(engine, run["run_id"], row["segment"], row["arm"])
        better = int((segment_rows > row["score"]).sum())
        targeted.append({**row, "rank_in_segment": better + 1, "segment_size": segment_rows.len()})
    excl = run_repository.exclusion_rows(engine, run["run_id"], customer_id)
    exclusions = []
    if excl.height:
        ordered = excl.sort("offer_id", nulls_last=False)
        exclusions = [(o, r.split(",")) for o, r in zip(ordered["offer_id"].to_list(), ordered["rule_ids"].to_list())]
    return Explanation(
        campaign_id=campaign_id, customer_id=customer_id, run=run, targeted=targeted, exclusions=exclusions
    )
