"""The input tables as the jobs read them: validated, through the snapshot cache (:mod:`campaigns.snapshots`).

``mktg data validate`` does not come here: it always validates the files themselves.
"""

from __future__ import annotations

from pathlib import Path

from campaigns.contracts import World, load_world
from jobs.settings import EventConfig, Settings


def load_data(settings: Settings, events: EventConfig, directory: Path, *, defer_events: bool = False) -> World:
    """The validated world in ``directory``; with ``defer_events`` the events are read only if used (campaign
    runs and previews never use them)."""
    return load_world(
        Path(directory), event_types=events.event_types, snapshots=settings.snapshot_dir, defer_events=defer_events
    )
