"""Train and register models for a benchmark world with only the tables ranking models read.

    cd WORKDIR && MKTG_DATA_DIR=... python /path/to/benchmarks/train_lean.py --models als,popularity

`mktg train` loads every input table (consents, risk, holdings too: the propensity model reads holdings). At
10,000,000 customers those tables are several GB, and on a 24 GB machine shared with other jobs `mktg train
--models als,popularity` was killed for memory twice (peaks 23.7 and 17.4 GB). The campaign-run benchmark only
needs the models, so this script loads customers, products and events (validated as `mktg train` does), empties
the other tables, and then trains, saves and registers with the same functions as `mktg train`
(jobs.model_service.train_models, save_and_register): the same models, as `mktg train` would register them.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", required=True, help="comma-separated model names from models.toml")
    args = parser.parse_args()

    from campaigns.contracts import TABLES, load_world
    from campaigns.db.session import make_engine
    from jobs.model_service import latest_event_time, save_and_register, train_models
    from jobs.settings import load_events, load_settings

    settings = load_settings()
    events = load_events(settings)
    started = time.perf_counter()
    world = load_world(Path(settings.data_dir), event_types=events.event_types, snapshots=settings.snapshot_dir)
    lean = world.replace(
        **{t: TABLES[t].empty() for t in ("consents", "risk", "holdings", "suppression", "conversions")}
    )
    del world
    names = args.models.split(",")
    models = train_models(lean, settings, events, as_of=latest_event_time(lean), names=names)
    paths = save_and_register(models, settings, engine=make_engine(settings.database_url))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"trained {', '.join(names)} in {time.perf_counter() - started:.0f} s, peak {peak_gb:.1f} GB")
    for name, path in paths.items():
        print(name, path)


if __name__ == "__main__":
    main()
