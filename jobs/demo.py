"""The demo pipeline: every stage of the SPEC data flow on one generated world, printed as it goes."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from campaigns.contracts import load_world
from campaigns.db.session import upgrade
from campaigns.demo.simulate import simulate_for_run
from campaigns.report_campaign import build_campaign_report, write_html, write_json
from campaigns.report_data import load_run_assignments
from jobs.campaign_service import load_all_specs, run_demo_campaigns
from jobs.cli.report import print_campaign_result
from jobs.model_service import load_models_config, save_and_register, train_models
from jobs.model_tuning import BEST, tune_train_register
from jobs.settings import EventConfig, Settings
from recommender.columns import Columns
from recommender.idmap import IdMap
from recommender.interactions import build_interactions


def world_as_of(world_dir: Path) -> datetime:
    """The generated world's reference time (end of its event history)."""
    import json

    meta = json.loads((world_dir / "ground_truth.json").read_text())
    return datetime.fromisoformat(meta["as_of"])


def run_demo(
    world_dir: Path,
    *,
    settings: Settings,
    events: EventConfig,
    engine: Engine,
    console: Console,
    seed: int = 42,
    uplift: bool = True,
) -> None:
    """Migrate the database -> validate -> interactions -> train and register -> run every example campaign ->
    simulate conversions from the ground truth -> A/B report per campaign -> (``uplift``) learn uplift from those
    runs, run the uplift campaign, simulate and report it against the ground truth.

    The demo is the one command besides ``mktg db upgrade`` that migrates: it sets up a fresh installation.
    """
    upgrade(engine)
    (world_dir / "conversions.parquet").unlink(missing_ok=True)  # conversions come last, from this run
    world = load_world(world_dir, event_types=events.event_types)
    console.print(f"validated {len(world.sources)} tables in {world_dir}")
    as_of = world_as_of(world_dir)
    matrix = build_interactions(
        world.events,
        weights=events.weights,
        half_life_days=events.half_life_days,
        as_of=as_of,
        customers=IdMap.from_sorted(world.customers[Columns.Customer], name=Columns.Customer),
        products=IdMap(world.products[Columns.Product]),
    )
    rows, cols = matrix.shape
    active = int((matrix.matrix.getnnz(axis=1) > 0).sum())
    console.print(
        f"interaction matrix: {rows:,} customers x {cols} products, {matrix.matrix.nnz:,} non-zeros, "
        f"density {matrix.density:.2%}, {active:,} customers with interactions, as of {as_of:%Y-%m-%d}"
    )
    console.print(top_products_table(matrix.to_frame(), world.products))

    specs = [spec for spec in load_all_specs(settings).values() if spec.enabled]
    strategies = sorted({strategy for spec in specs for strategy in spec.strategies})
    models: dict = {}
    if BEST in strategies:  # champion per segment: a one-trial search (the defaults) records validation metrics
        candidates = load_models_config(settings).champion.candidates
        with console.status("validating the champion candidates") as status:
            run, models = tune_train_register(
                world,
                settings,
                events,
                engine=engine,
                names=candidates,
                trials=1,
                as_of=as_of,
                progress=lambda message: status.update(message),
            )
        console.print(
            "champions per segment (validation NDCG): "
            + ", ".join(f"{seg}={name}" for seg, name in run.champions.items())
        )
    rest = [s for s in strategies if s != BEST and s not in models]
    with console.status("training models") as status:
        trained = (
            train_models(
                world, settings, events, as_of=as_of, names=rest, progress=lambda message: status.update(message)
            )
            if rest
            else {}
        )
    save_and_register(trained, settings, engine=engine)
    models.update(trained)
    console.print(
        "trained and registered: "
        + ", ".join(f"{m.version} ({m.meta['train_seconds']:.1f} s)" for m in models.values())
    )

    scheduled_for = as_of.replace(hour=9)
    results = run_demo_campaigns(
        settings, events, world_dir=world_dir, scheduled_for=scheduled_for, engine=engine, models=models, world=world
    )
    console.print(runs_table(results))
    reports, conversions = _reports(
        results, specs, world, world_dir, engine=engine, settings=settings, seed=seed, console=console
    )
    pl.concat(conversions).write_parquet(world_dir / "conversions.parquet")
    console.print(f"simulated conversions (from the ground truth) in {world_dir / 'conversions.parquet'}")
    for path in reports:
        console.print(f"A/B report: {path}")
    if uplift:
        reports.append(
            _uplift_demo(
                world_dir,
                settings=settings,
                events=events,
                engine=engine,
                console=console,
                world=world,
                models=models,
                history_at=scheduled_for,
                conversions=conversions,
                seed=seed,
            )
        )


UPLIFT_CAMPAIGN = "cc_uplift"
UPLIFT_AFTER_DAYS = 31
UPLIFT_KINDS = ("t_learner", "class_transformation")  # the two quickest; `mktg uplift train` fits all three


def _uplift_demo(
    world_dir: Path,
    *,
    settings: Settings,
    events: EventConfig,
    engine: Engine,
    console: Console,
    world,
    models,
    history_at: datetime,
    conversions: list[pl.DataFrame],
    seed: int,
) -> Path:
    """The uplift loop on the demo world: learn uplift from the example runs' control groups and holdouts once
    their conversion windows are over, run ``cc_uplift`` (uplift arm vs response arm vs control), simulate its
    conversions from the ground truth's treatment effect, and report (Qini curves) against the truth."""
    from campaigns.demo.synthetic import GroundTruth
    from jobs.campaign_service import run as run_campaign_once
    from jobs.cli.uplift import _table
    from jobs.uplift_service import fit_and_evaluate, save_and_register, training_table

    specs = load_all_specs(settings)
    # The first day the 30-day windows are over (the 45-day savings run is not complete yet, so it is left out).
    # Later would be cleaner still, but the world's risk records go stale after 45 days (rule stale_risk).
    at = history_at + timedelta(days=UPLIFT_AFTER_DAYS)
    with console.status("learning uplift from the runs' control groups and holdouts") as status:
        table = training_table(
            settings,
            engine=engine,
            world=world,
            conversions=pl.concat(conversions),
            as_of=at,
            progress=lambda message: status.update(message),
        )
        fits = fit_and_evaluate(
            table, kinds=list(UPLIFT_KINDS), data_as_of=at, threads=settings.threads, draws=100, seed=seed
        )
    best = max(fits, key=lambda f: f.evaluation.qini.value)
    save_and_register(best, settings, engine=engine)
    console.print(
        _table(
            fits,
            f"uplift models learnt from {table['run_id'].n_unique()} completed runs "
            f"(held-out customers: {best.evaluation.n:,}); registered {best.model.version}",
        )
    )
    result = run_campaign_once(
        settings,
        events,
        campaign_id=UPLIFT_CAMPAIGN,
        data_dir=world_dir,
        scheduled_for=at,
        engine=engine,
        models=models,
        world=world,
    )
    console.print(runs_table([result]))
    spec = specs[UPLIFT_CAMPAIGN]
    loaded = load_run_assignments(engine, spec.id, run_id=result.run_id)
    simulated = simulate_for_run(
        loaded.assignments, world_dir, seed=seed + 100, audience=loaded.audience, campaign_offers=loaded.offers
    )
    pl.concat([*conversions, simulated]).write_parquet(world_dir / "conversions.parquet")
    products = world.products.select(Columns.Product, Columns.Family)
    report = build_campaign_report(
        loaded,
        simulated,
        spec=spec,
        products=products,
        title=f"A/B report: {spec.name} ({result.run_id}, simulated conversions)",
    )
    print_campaign_result(report, primary_only=True)
    console.print(truth_table(loaded.assignments, GroundTruth.load(world_dir), report))
    base = settings.var_dir / "reports" / result.run_id
    write_json(report, base.with_suffix(".json"))
    path = write_html(report, base.with_suffix(".html"))
    console.print(f"uplift report (Qini curves per strategy): {path}")
    return path


def truth_table(assignments: pl.DataFrame, truth, report) -> Table:
    """Per arm: contacts, the true incremental conversions per 1,000 contacts (ground truth: P(convert | contacted)
    - P(convert | not contacted) of each contacted pair) and what the experiment measured."""
    from campaigns.arms import contacted_expr

    contacted = assignments.filter(contacted_expr("arm")).select(
        Columns.Customer, pl.col("offer_id").alias("product_id"), "arm"
    )
    true = (
        contacted.with_columns(pl.Series("uplift", truth.true_uplift(contacted)))
        .group_by("arm")
        .agg(pl.len().alias("contacts"), (pl.col("uplift").mean() * 1000).alias("true_per_1000"))
        .sort("arm")
    )
    measured = {r.arm: r for r in report.incremental}
    table = Table(title="against the ground truth: incremental conversions (offered product) per 1,000 contacts")
    for column in ("arm", "contacts", "true (ground truth)", "measured (any campaign offer, vs control) [CI]"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for arm, contacts, value in true.iter_rows():
        m = measured.get(arm)
        table.add_row(
            arm, f"{contacts:,}", f"{value:+.1f}", f"{m.per_1000:+.1f} [{m.low:+.1f}, {m.high:+.1f}]" if m else "-"
        )
    return table


def _reports(results, specs, world, world_dir: Path, *, engine, settings: Settings, seed: int, console: Console):
    """Simulate each run's conversions from the ground truth (its whole eligible audience, so the
    intention-to-treat sections have outcomes for customers nobody contacted) and write its A/B report."""
    by_id = {spec.id: spec for spec in specs}
    products = world.products.select(Columns.Product, Columns.Family)
    reports, conversions = [], []
    for index, result in enumerate(results):
        spec = by_id[result.campaign_id]
        loaded = load_run_assignments(engine, spec.id, run_id=result.run_id)
        simulated = simulate_for_run(
            loaded.assignments, world_dir, seed=seed + index, audience=loaded.audience, campaign_offers=loaded.offers
        )
        report = build_campaign_report(
            loaded,
            simulated,
            spec=spec,
            products=products,
            title=f"A/B report: {spec.name} ({result.run_id}, simulated conversions)",
        )
        console.print(f"[bold]{spec.id}[/]: {result.run_id}")
        print_campaign_result(report, primary_only=True)
        base = settings.var_dir / "reports" / result.run_id
        write_json(report, base.with_suffix(".json"))
        reports.append(write_html(report, base.with_suffix(".html")))
        conversions.append(simulated)
    return reports, conversions


def runs_table(results) -> Table:
    table = Table(title="campaign runs")
    for column in ("campaign", "run", "new?", "targets", "control", "per arm", "export"):
        table.add_column(column)
    for r in results:
        arms = ", ".join(f"{arm} {n:,}" for arm, n in sorted(r.rows_per_arm.items())) or "-"
        table.add_row(
            r.campaign_id,
            r.run_id,
            "yes" if r.created else "existing",
            f"{r.row_count:,}",
            f"{r.control_count:,}",
            arms,
            str(r.export_dir),
        )
    return table


def top_products_table(weights: pl.DataFrame, products: pl.DataFrame, *, per_family: int = 3) -> Table:
    """Top products per family by total interaction weight."""
    totals = (
        weights.group_by(Columns.Product)
        .agg(pl.col(Columns.Weight).sum(), pl.len().alias("customers"))
        .join(products.select(Columns.Product, Columns.Family, "name"), on=Columns.Product)
        .sort(Columns.Family, Columns.Weight, descending=[False, True])
        .group_by(Columns.Family, maintain_order=True)
        .head(per_family)
    )
    table = Table(title=f"top {per_family} products per family (interaction weight)")
    for column in ("family", "product", "name", "customers", "weight"):
        table.add_column(column, justify="right" if column in ("customers", "weight") else "left")
    for row in totals.iter_rows(named=True):
        table.add_row(
            row[Columns.Family],
            row[Columns.Product],
            row["name"],
            f"{row['customers']:,}",
            f"{row[Columns.Weight]:,.0f}",
        )
    return table
