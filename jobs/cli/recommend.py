"""``mktg recommend``: a customer's ranked offers from the active model, with eligibility applied.

Eligibility is on by default (a bank must not show an offer the customer may not get): a campaign's rules with
``--campaign ID``, else rule set ``--rules NAME`` (default ``default``) on ``--channel`` (without a channel the
consent, suppression and contact-cap checks are skipped and the output says so). ``--all`` shows the model's
ranking with the excluded offers marked by the rule ids that excluded them.
"""

from __future__ import annotations

from pathlib import Path

import typer

from campaigns.times import iso_utc, parse_time
from jobs import campaign_service
from jobs.cli.context import app_context
from jobs.cli.output import console, err_console, frame_records, print_json, table


def register(app: typer.Typer) -> None:
    @app.command("recommend")
    def recommend_cmd(
        ctx: typer.Context,
        customer: list[str] = typer.Option(..., "--customer", help="Customer id (repeat for several)."),
        data: Path | None = typer.Option(None, "--data", help="Input directory (default: settings data_dir)."),
        k: int = typer.Option(5, "--k", min=1, help="Offers per customer."),
        model: str | None = typer.Option(None, "--model", help="Model name (default: models.toml `default`)."),
        campaign: str | None = typer.Option(
            None,
            "--campaign",
            help="Judge eligibility as this campaign would (its rule set, channel, contact cap and offers).",
        ),
        channel: str | None = typer.Option(
            None,
            "--channel",
            help="Channel for consent, suppression and contact cap (default: none, those checks are skipped).",
        ),
        rules: str | None = typer.Option(
            None, "--rules", help="Eligibility rule set (default: `default`, or the campaign's)."
        ),
        show_all: bool = typer.Option(
            False, "--all", help="Show excluded offers too, with the rules that excluded them."
        ),
        at: str | None = typer.Option(None, "--at", help="As of this time, ISO 8601 UTC (default: now)."),
        allow_future_models: bool = typer.Option(
            False, "--allow-future-models", help="Use a model trained on data after --at."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the table."),
    ) -> None:
        """A customer's ranked offers (segment, score) from the active registered model, eligible ones only."""
        context = app_context(ctx)
        settings = context.settings
        result = campaign_service.recommend(
            settings,
            context.events,
            data_dir=data or settings.data_dir,
            customer_ids=customer,
            k=k,
            engine=context.database(),
            model_name=model,
            at=parse_time(at) if at else None,
            campaign_id=campaign,
            channel=channel,
            rule_set=rules,
            show_all=show_all,
            allow_future_models=allow_future_models,
        )
        warm = dict(zip(customer, result.model.is_warm(customer)))
        shown = set(result.offers["customer_id"].to_list())
        without = [c for c in dict.fromkeys(customer) if c not in shown]
        if as_json:
            print_json(
                {
                    "model": result.model.version,
                    "as_of": result.as_of,
                    "rule_set": result.rule_set,
                    "channel": result.channel,
                    "skipped_checks": result.skipped_checks,
                    "offers": [
                        {**row, "history": "warm" if warm[row["customer_id"]] else "cold"}
                        for row in frame_records(result.offers)
                    ],
                    "excluded_offers": result.excluded,
                    "customers_without_offer": without,
                }
            )
            return
        out = table(
            f"recommendations from {result.model.version} as of {iso_utc(result.as_of)}, eligibility: rule set "
            f"'{result.rule_set}'" + (f" on {result.channel}" if result.channel else ", no channel"),
            ["customer", "segment", "rank", "offer", "score", "history"] + (["excluded by"] if show_all else []),
            right=("rank", "score"),
        )
        for row in result.offers.iter_rows(named=True):
            cells = [
                row["customer_id"],
                row["segment"],
                str(row["rank"]),
                row["offer_id"],
                f"{row['score']:.4f}",
                "warm" if warm[row["customer_id"]] else "cold (segment/features)",
            ]
            if show_all:
                cells.append(", ".join(row["excluded_by"]) if row["excluded_by"] is not None else "-")
            out.add_row(*cells)
        console.print(out)
        if result.skipped_checks:
            err_console.print(
                f"no channel given: not checked {', '.join(result.skipped_checks)} (pass --channel or --campaign)"
            )
        if not show_all:
            hidden = {c: n for c, n in result.excluded.items() if n}
            for customer_id, n in sorted(hidden.items()):
                err_console.print(f"{customer_id}: {n} ranked offer(s) excluded by eligibility (--all shows them)")
        if without:
            err_console.print(f"no {'offer' if show_all else 'eligible offer'} for: {', '.join(without)}")
