"""Per-invocation context: the configuration directory and lazily loaded settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import typer
from sqlalchemy import Engine

from jobs.settings import EventConfig, Settings, load_events, load_settings


@dataclass
class AppContext:
    config_dir: Path | None = None

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_dir)

    def settings_or_defaults(self) -> Settings:
        """:attr:`settings`, or the defaults (plus ``MKTG_*``) when there is no configuration directory at all."""
        if "settings" not in self.__dict__:
            self.__dict__["settings"] = load_settings(self.config_dir, optional=True)
        return self.settings

    @cached_property
    def events(self) -> EventConfig:
        return load_events(self.settings)

    @cached_property
    def engine(self) -> Engine:
        """The one engine of this process (schema not checked: listings work on an empty database too)."""
        from campaigns.db.session import engine_for

        return engine_for(self.settings.database_url)

    def database(self) -> Engine:
        """:attr:`engine` after checking its schema is current (one-line error telling to run `mktg db upgrade`)."""
        from campaigns.db.session import check_schema

        check_schema(self.engine)
        return self.engine


def app_context(ctx: typer.Context) -> AppContext:
    """The AppContext of the running command (created by the root callback)."""
    root = ctx.find_root()
    if not isinstance(root.obj, AppContext):
        root.obj = AppContext()
    return root.obj
