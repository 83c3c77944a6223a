"""``mktg train``, ``mktg evaluate``: thin wrappers over jobs.pipeline_models (``recommend``: jobs/cli/recommend.py)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from campaigns.contracts import load_world
from jobs.cli.context import app_context
from jobs.cli.output import console, err_console, iso_utc, print_json
from jobs.cli.times import parse_time
from jobs.pipeline_models import evaluate_models, latest_event_time, save_and_register, train_models
from recommender.evaluation import METRICS



def _data_dir(ctx: typer.Context, data: Optional[Path]) -> Path:
    return data or app_context(ctx).settings.data_dir


def _names(models: Optional[str]) -> list[str] | None:
    return [m.strip() for m in models.split(",") if m.strip()] if models else None


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        ctx: typer.Context,
        data: Optional[Path] = typer.Option(None, "--data", help="Input directory (default: settings data_dir)."),
        models: Optional[str] = typer.Option(None, "--models", help="Comma-separated model names (default: models.toml `train`)."),
        as_of: Optional[str] = typer.Option(None, "--as-of", help="Train on events up to this time, ISO 8601 UTC (default: last event)."),
        activate: bool = typer.Option(True, "--activate/--no-activate", help="Make the new versions active."),
        as_json: bool = typer.Option(False, "--json", help="Print the trained versions as JSON instead of the table."),
    ) -> None:
        """Train the configured models, save them under <var_dir>/models/<version>/ and register them."""
        context = app_context(ctx)
        engine = context.database()  # before the training: a database that cannot register fails fast
        world = load_world(_data_dir(ctx, data), event_types=context.events.event_types)
        when = parse_time(as_of, option="--as-of") if as_of else latest_event_time(world)
        with err_console.status("training") as status:
            fitted = train_models(world, context.settings, context.events, as_of=when, names=_names(models),
                                  progress=lambda msg: status.update(msg))
            paths = save_and_register(fitted, context.settings, engine=engine, activate=activate)
        if as_json:
            print_json([{"model": name, "version": model.version, "data_as_of": when, "seconds": model.meta["train_seconds"],
                         "path": paths[name], "active": activate} for name, model in fitted.items()])
            return
        table = Table(title=f"trained as of {iso_utc(when)}")
        for column in ("model", "version", "seconds", "path"):
            table.add_column(column, justify="right" if column == "seconds" else "left", overflow="fold")
        for name, model in fitted.items():
            table.add_row(name, model.version, f"{model.meta['train_seconds']:.1f}", str(paths[name]))
        console.print(table)

    @app.command("evaluate")
    def evaluate_cmd(
        ctx: typer.Context,
        data: Optional[Path] = typer.Option(None, "--data", help="Input directory (default: settings data_dir)."),
        models: Optional[str] = typer.Option(None, "--models", help="Comma-separated model names (default: models.toml `train`)."),
        k: int = typer.Option(10, "--k", min=1, help="Cut-off rank."),
        test_days: Optional[float] = typer.Option(None, "--test-days", help="Test window length (default: models.toml)."),
        per_segment: bool = typer.Option(False, "--per-segment", help="Also print metrics per segment."),
        as_json: bool = typer.Option(False, "--json", help="Print all results (incl. per segment) as JSON instead of tables."),
        json_out: Optional[Path] = typer.Option(None, "--json-file", help="Also write all results as JSON to this file."),
    ) -> None:
        """Time-based offline evaluation: train before the cut-off, test on positive events after it."""
        context = app_context(ctx)
        directory = _data_dir(ctx, data)
        world = load_world(directory, event_types=context.events.event_types)
        with err_console.status("evaluating") as status:
            results, info = evaluate_models(world, context.settings, context.events, names=_names(models), k=k,
                                            test_days=test_days, world_dir=directory,
                                            progress=lambda msg: status.update(msg))
        document = {"split": {**info, **{key: iso_utc(datetime.fromisoformat(info[key])) for key in ("cutoff", "end")}},
                    "results": [r.to_dict() for r in results]}
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(document, indent=2) + "\n")
            err_console.print(f"wrote {json_out}")
        if as_json:
            print_json(document)
            return
        has_gt = any(r.ground_truth for r in results)
        table = Table(title=f"offline evaluation @{k}: train < {info['cutoff'][:10]}, {info['test_customers']:,} test "
                            f"customers ({info['warm_test_customers']:,} warm)")
        columns = ["model", *METRICS, "coverage"] + (["gt_ndcg", "gt_gain_ratio"] if has_gt else []) + ["train s"]
        for column in columns:
            table.add_column(column, justify="left" if column == "model" else "right")
        for r in results:
            o = r.result.overall
            gt = [f"{r.ground_truth['ndcg']:.4f}", f"{r.ground_truth['gain_ratio']:.4f}"] if has_gt and r.ground_truth else []
            table.add_row(r.name, *[f"{o[m]:.4f}" for m in METRICS], f"{o['coverage']:.3f}", *gt, f"{r.train_seconds:.1f}")
        console.print(table)
        if per_segment:
            for r in results:
                seg = Table(title=f"{r.name} per segment")
                for column in r.result.per_segment.columns:
                    seg.add_column(column)
                for row in r.result.per_segment.iter_rows():
                    seg.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
                console.print(seg)
