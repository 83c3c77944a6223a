"""``mktg train``, ``mktg evaluate``, ``mktg tune``: thin wrappers over jobs.model_service and jobs.model_tuning
(``recommend``: jobs/cli/recommend.py)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from campaigns.times import iso_utc, parse_time
from jobs.cli.context import app_context
from jobs.cli.output import console, err_console, print_json
from jobs.cli.progress import reporting
from jobs.inputs import load_data
from jobs.model_service import evaluate_models, latest_event_time, load_models_config, save_and_register, train_models
from jobs.model_tuning import tune_train_register, tuned_params
from recommender.evaluation import METRICS


def _data_dir(ctx: typer.Context, data: Path | None) -> Path:
    return data or app_context(ctx).settings.data_dir


def _names(models: str | None) -> list[str] | None:
    return [m.strip() for m in models.split(",") if m.strip()] if models else None


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        ctx: typer.Context,
        data: Path | None = typer.Option(None, "--data", help="Input directory (default: settings data_dir)."),
        models: str | None = typer.Option(
            None, "--models", help="Comma-separated model names (default: models.toml `train`)."
        ),
        as_of: str | None = typer.Option(
            None, "--as-of", help="Train on events up to this time, ISO 8601 UTC (default: last event)."
        ),
        activate: bool = typer.Option(True, "--activate/--no-activate", help="Make the new versions active."),
        tuned: bool = typer.Option(
            True, "--tuned/--defaults", help="Use each model's latest `mktg tune` winner (else models.toml defaults)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the trained versions as JSON instead of the table."),
    ) -> None:
        """Train the configured models, save them under <var_dir>/models/<version>/ and register them."""
        context = app_context(ctx)
        engine = context.database()  # before the training: a database that cannot register fails fast
        world = load_data(context.settings, context.events, _data_dir(ctx, data))
        when = parse_time(as_of, option="--as-of") if as_of else latest_event_time(world)
        chosen = _names(models) or load_models_config(context.settings).train
        params = tuned_params(engine, chosen) if tuned else {}
        with reporting("mktg train") as status:
            fitted = train_models(
                world,
                context.settings,
                context.events,
                as_of=when,
                names=chosen,
                progress=status.stage,
                params=params,
            )
            paths = save_and_register(fitted, context.settings, engine=engine, activate=activate)
        if as_json:
            print_json(
                [
                    {
                        "model": name,
                        "version": model.version,
                        "data_as_of": when,
                        "seconds": model.meta["train_seconds"],
                        "path": paths[name],
                        "active": activate,
                        "tuned": name in params,
                    }
                    for name, model in fitted.items()
                ]
            )
            return
        table = Table(title=f"trained as of {iso_utc(when)}")
        for column in ("model", "version", "seconds", "path"):
            table.add_column(column, justify="right" if column == "seconds" else "left", overflow="fold")
        for name, model in fitted.items():
            table.add_row(name, model.version, f"{model.meta['train_seconds']:.1f}", str(paths[name]))
        console.print(table)
        if params:
            console.print(f"tuned parameters used for: {', '.join(sorted(params))}")

    @app.command("evaluate")
    def evaluate_cmd(
        ctx: typer.Context,
        data: Path | None = typer.Option(None, "--data", help="Input directory (default: settings data_dir)."),
        models: str | None = typer.Option(
            None, "--models", help="Comma-separated model names (default: models.toml `train`)."
        ),
        k: int = typer.Option(10, "--k", min=1, help="Cut-off rank."),
        test_days: float | None = typer.Option(None, "--test-days", help="Test window length (default: models.toml)."),
        per_segment: bool = typer.Option(False, "--per-segment", help="Also print metrics per segment."),
        as_json: bool = typer.Option(
            False, "--json", help="Print all results (incl. per segment) as JSON instead of tables."
        ),
        json_out: Path | None = typer.Option(None, "--json-file", help="Also write all results as JSON to this file."),
        tuned: bool = typer.Option(
            False,
            "--tuned/--defaults",
            help="Evaluate each model's latest `mktg tune` winner (tuned before the test window).",
        ),
    ) -> None:
        """Time-based offline evaluation: train before the cut-off, test on positive events after it.

        Every model is compared with the best popularity model: the paired bootstrap 95 % interval of the
        per-customer NDCG (and MAP) difference; "yes" under "beats popularity" only when it excludes 0."""
        context = app_context(ctx)
        directory = _data_dir(ctx, data)
        world = load_data(context.settings, context.events, directory)
        chosen = _names(models) or load_models_config(context.settings).train
        params = tuned_params(context.database(), chosen) if tuned else None
        with reporting("mktg evaluate") as status:
            results, info = evaluate_models(
                world,
                context.settings,
                context.events,
                names=chosen,
                k=k,
                test_days=test_days,
                world_dir=directory,
                progress=status.stage,
                params=params,
            )
        document = {
            "split": {**info, **{key: iso_utc(datetime.fromisoformat(info[key])) for key in ("cutoff", "end")}},
            "results": [r.to_dict() for r in results],
        }
        for warning in info["warnings"]:
            err_console.print(f"[yellow]warning:[/] {warning}")
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(document, indent=2) + "\n")
            err_console.print(f"wrote {json_out}")
        if as_json:
            print_json(document)
            return
        has_gt = any(r.ground_truth for r in results)
        table = Table(
            title=f"offline evaluation @{k}: train < {info['cutoff'][:10]}, {info['test_customers']:,} test "
            f"customers ({info['warm_test_customers']:,} warm)"
        )
        versus = f"NDCG - {info['baseline']} [95% CI]" if info.get("baseline") else "NDCG vs popularity"
        columns = (
            ["model", *METRICS, "coverage"]
            + (["gt_ndcg", "gt_gain_ratio"] if has_gt else [])
            + [versus, "beats popularity", "train s"]
        )
        for column in columns:
            table.add_column(column, justify="left" if column == "model" else "right", overflow="fold")
        for r in results:
            o = r.result.overall
            gt = (
                [f"{r.ground_truth['ndcg']:.4f}", f"{r.ground_truth['gain_ratio']:.4f}"]
                if has_gt and r.ground_truth
                else []
            )
            diff = r.versus_baseline.get("ndcg")
            interval = f"{diff['difference']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}]" if diff else "baseline"
            beats = "" if r.beats_popularity is None else ("yes" if r.beats_popularity else "no")
            table.add_row(
                r.name,
                *[f"{o[m]:.4f}" for m in METRICS],
                f"{o['coverage']:.3f}",
                *gt,
                interval,
                beats,
                f"{r.train_seconds:.1f}",
            )
        console.print(table)
        if per_segment:
            for r in results:
                seg = Table(title=f"{r.name} per segment")
                for column in r.result.per_segment.columns:
                    seg.add_column(column)
                for row in r.result.per_segment.iter_rows():
                    seg.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
                console.print(seg)

    @app.command("tune")
    def tune_cmd(
        ctx: typer.Context,
        data: Path | None = typer.Option(None, "--data", help="Input directory (default: settings data_dir)."),
        models: str | None = typer.Option(
            None, "--models", help="Comma-separated model names (default: models.toml `train`)."
        ),
        trials: int | None = typer.Option(
            None, "--trials", min=1, help="Trials per model (default: models.toml [tuning])."
        ),
        budget: float | None = typer.Option(
            None, "--budget", min=0, help="Seconds for the whole search (default: models.toml [tuning])."
        ),
        activate: bool = typer.Option(True, "--activate/--no-activate", help="Make the winners' new versions active."),
        as_json: bool = typer.Option(
            False, "--json", help="Print the searches (every trial) as JSON instead of the table."
        ),
        json_out: Path | None = typer.Option(None, "--json-file", help="Also write the searches as JSON to this file."),
    ) -> None:
        """Search each model's hyper-parameters on a validation window carved from the training period, then
        fit the winners on all events and register them with their search (docs/ranking.md)."""
        context = app_context(ctx)
        engine = context.database()
        world = load_data(context.settings, context.events, _data_dir(ctx, data))
        with reporting("mktg tune") as status:
            run, fitted = tune_train_register(
                world,
                context.settings,
                context.events,
                engine=engine,
                names=_names(models),
                trials=trials,
                budget_seconds=budget,
                activate=activate,
                progress=status.stage,
            )
        document = {
            "run_id": run.run_id,
            "seconds": run.seconds,
            "info": run.info,
            "champions": run.champions,
            "not_searched": sorted(run.skipped),
            "results": {n: run.record(n) for n in [*run.results, *run.skipped]},
            "versions": {n: m.version for n, m in fitted.items()},
        }
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(document, indent=2, default=str) + "\n")
            err_console.print(f"wrote {json_out}")
        if as_json:
            print_json(document)
            return
        metric = next(iter(run.results.values())).metric if run.results else "ndcg"
        table = Table(
            title=f"tuning run {run.run_id}: validation {run.validation_start:%Y-%m-%d} .. "
            f"{run.validation_end:%Y-%m-%d}, {run.info['validation_customers']:,} customers, "
            f"{run.seconds:.0f} s of {run.budget_seconds:.0f} s"
        )
        for column in ("model", f"default {metric}", f"tuned {metric}", "trials", "seconds", "stopped by", "version"):
            table.add_column(column, justify="left" if column in ("model", "version", "stopped by") else "right")
        for name, r in run.results.items():
            table.add_row(
                name,
                f"{r.default_value:.4f}",
                f"{r.best_value:.4f}",
                str(len(r.trials)),
                f"{r.seconds:.1f}",
                r.stopped_by,
                fitted[name].version,
            )
        for name, record in run.skipped.items():  # its last trial would not fit: earlier winner refitted
            table.add_row(
                name, "", f"{record['best_value']:.4f}", "0", "0.0", "not searched (time)", fitted[name].version
            )
        console.print(table)
        console.print(
            "validation champions per segment: " + ", ".join(f"{seg}={name}" for seg, name in run.champions.items())
        )
