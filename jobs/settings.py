"""Settings and configuration files, read in exactly one place.

Order of precedence: ``MKTG_*`` environment variables > ``<config dir>/settings.toml`` > defaults. The
config directory is ``--config DIR``, else ``MKTG_CONFIG_DIR``, else ``./config`` in the directory ``mktg``
runs in: never the installed package's location (``mktg init DIR`` writes a starter ``DIR/config``).

Everything is strict: an unknown key (in a file or as an ``MKTG_*`` variable), a value out of its range, an
unknown time zone or a schedule that never fires is a one-line :class:`ConfigError` naming the file (or the
environment variable) and the key. ``MKTG_TEST_*`` variables belong to the test suite and are not settings.
"""

from __future__ import annotations

import math
import os
import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from campaigns.schedules import cron_trigger
from campaigns.tomlfile import allowed_keys, validation_message
from campaigns.tomlfile import read_toml as campaigns_read_toml
from recommender.errors import UserError

CONFIG_DIR_NAME = "config"
DEFAULT_CONFIG_DIR = Path(CONFIG_DIR_NAME)  # relative: ./config in the directory mktg runs in
ENV_PREFIX = "MKTG_"
CONFIG_DIR_ENV = f"{ENV_PREFIX}CONFIG_DIR"
TEST_ENV_PREFIX = f"{ENV_PREFIX}TEST_"  # the test suite's variables (MKTG_TEST_POSTGRES_URL)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_THREADS = 256
REFRESH_METRICS = ("precision", "recall", "map", "ndcg", "coverage")


class ConfigError(UserError):
    """A configuration file is missing or invalid."""


class ExtraJob(BaseModel):
    """A site-specific scheduled job: a plain function ``fn(ctx, **kwargs)`` named by ``module:function``."""

    model_config = ConfigDict(extra="forbid")
    func: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    schedule: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


def _check_schedule(value: str | None, timezone: str) -> str | None:
    """A cron schedule that parses and fires at least once; ``""`` or None means "disabled"."""
    if value:
        cron_trigger(value, timezone=timezone)  # ValueError naming the problem
    return value or None


class SchedulerSettings(BaseModel):
    """``[scheduler]``: catch-up window, retries, the instance name (logs, attempts), built-in job schedules.

    Missed fire times (no scheduler up, or all busy) run when found at most ``misfire_grace_seconds`` late;
    ``coalesce`` runs only the latest of several found together. A failed attempt is retried after
    ``retry_backoff_seconds``, doubling each time up to ``retry_backoff_max_seconds``, until ``retry_attempts``
    attempts failed: then the fire time is recorded as given up. ``sweep_seconds``: how often each scheduler
    looks for abandoned runs, due retries and missed fire times.
    """

    model_config = ConfigDict(extra="forbid")
    timezone: str = "UTC"
    misfire_grace_seconds: int = Field(default=300, ge=1)
    coalesce: bool = False
    max_instances: int = Field(default=1, ge=1)
    instance: str = Field(default="main", pattern=r"^[a-z0-9_]{1,32}$")
    workers: int = Field(default=4, ge=1)
    log_format: str = Field(default="logfmt", pattern=r"^(logfmt|json)$")
    retry_attempts: int = Field(default=3, ge=1, le=100)
    retry_backoff_seconds: float = Field(default=60, ge=0)
    retry_backoff_max_seconds: float = Field(default=3600, ge=0)
    sweep_seconds: float = Field(default=30, gt=0)
    model_refresh: str | None = "0 2 * * *"
    conversion_analysis: str | None = "0 6 * * *"
    extra_jobs: dict[str, ExtraJob] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as UTC or Europe/Madrid)") from None
        return value

    @field_validator("model_refresh", "conversion_analysis")
    @classmethod
    def _schedules(cls, value: str | None, info) -> str | None:
        return _check_schedule(value, info.data.get("timezone", "UTC"))

    @model_validator(mode="after")
    def _extra_schedules(self) -> SchedulerSettings:
        for name, job in self.extra_jobs.items():
            try:
                _check_schedule(job.schedule, self.timezone)
            except ValueError as exc:
                raise ValueError(f"extra_jobs.{name}.schedule: {exc}") from None
        return self


class RefreshSettings(BaseModel):
    """``[refresh]``: the nightly model refresh and when it keeps the previous model."""

    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(default_factory=list)  # empty: the `train` list of config/models.toml
    metric: str = "ndcg"
    max_regression: float = Field(default=0.02, ge=0, le=1)
    tune_budget_seconds: float = Field(default=0, ge=0)  # 0: no search; the latest recorded winners, else defaults
    # LightFM's early stopping searches the epoch count again only when the latest search is older than this many
    # days of data, or its parameters changed; 0: search every night
    early_stopping_days: float = Field(default=7, ge=0)
    # the evaluation ranks at most this many of the test window's customers (a fixed random sample, the same for
    # every model; 0: all of them): at 100,000 the standard error of NDCG@10 is about 0.001
    evaluation_customers: int = Field(default=100_000, ge=0)

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in REFRESH_METRICS:
            raise ValueError(f"unknown metric {value!r} (one of {', '.join(REFRESH_METRICS)})")
        return value


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config_dir: Path = Field(default=DEFAULT_CONFIG_DIR, exclude=True)  # chosen by --config, not a key of the file
    database_url: str = "sqlite:///var/mktg.db"
    data_dir: Path = Path("var/data")  # input tables; `mktg demo` generates its world here too
    var_dir: Path = Path("var")
    threads: int = Field(default=2, ge=1, le=MAX_THREADS)
    log_level: str = "INFO"
    scheduler: SchedulerSettings = SchedulerSettings()
    refresh: RefreshSettings = RefreshSettings()

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError:
            raise ValueError(
                "not a database URL (e.g. sqlite:///var/mktg.db or postgresql+psycopg://user@host:5432/db)"
            ) from None
        return value

    @field_validator("data_dir", "var_dir")
    @classmethod
    def _directory(cls, value: Path) -> Path:
        if not str(value).strip() or str(value) == ".":
            raise ValueError("must name a directory (relative paths are relative to where mktg runs)")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.strip().upper() not in LOG_LEVELS:
            raise ValueError(f"unknown log level {value!r} (one of {', '.join(LOG_LEVELS)})")
        return value.strip().upper()

    @property
    def export_dir(self) -> Path:
        return self.var_dir / "exports"

    @property
    def model_dir(self) -> Path:
        return self.var_dir / "models"

    @property
    def snapshot_dir(self) -> Path:
        """Validated snapshots of the input tables (:mod:`campaigns.snapshots`)."""
        return self.var_dir / "cache" / "inputs"

    @property
    def compiled_dir(self) -> Path:
        """Models compiled to machine code for this host (:mod:`recommender.models.compiled_trees`)."""
        return self.var_dir / "cache" / "compiled"

    def report_base(self, name: str) -> Path:
        """Where the report named ``name`` goes by default: ``<var_dir>/reports/<slug>`` (+ ``.html``, ``.json``),
        for ``mktg report`` and the nightly conversion analysis alike."""
        return self.var_dir / "reports" / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "report")


class EventConfig(BaseModel):
    """``config/events.toml``: event-type weights, recency half-life, positive event types."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    weights: dict[str, float]
    half_life_days: float | None = Field(default=None, ge=0, le=36_500)  # None or 0: no recency decay
    positive: list[str] = Field(default_factory=list)

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if not name.strip():
                raise ValueError("event type names must not be empty")
            if not (math.isfinite(weight) and 0 <= weight <= 1_000_000):
                raise ValueError(f"weight of {name!r} must be a number between 0 and 1,000,000 (got {weight})")
        if not any(weight > 0 for weight in value.values()):
            raise ValueError("at least one event type needs a weight above 0")
        return value

    @model_validator(mode="after")
    def _positive_known(self) -> EventConfig:
        unknown = [name for name in self.positive if name not in self.weights]
        if unknown:
            raise ValueError(
                f"positive: {unknown[0]!r} is not an event type under [weights] ({', '.join(self.weights)})"
            )
        return self

    @property
    def event_types(self) -> set[str]:
        return set(self.weights)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file; a missing or malformed file is a one-line :class:`ConfigError`."""
    return campaigns_read_toml(path, error=ConfigError)


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """``MKTG_<KEY>`` / ``MKTG_<SECTION>__<KEY>`` variables as nested overrides, and which variable set what."""
    overrides: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == CONFIG_DIR_ENV or key.startswith(TEST_ENV_PREFIX):
            continue
        path = tuple(key[len(ENV_PREFIX) :].lower().split("__"))
        if path[0] == "config_dir" or not all(path):
            raise ConfigError(f"environment variable {key}: not a setting")
        target = overrides
        for part in path[:-1]:
            if not isinstance(target.setdefault(part, {}), dict):
                raise ConfigError(f"environment variable {key}: {part!r} is not a section")
            target = target[part]
        target[path[-1]] = value
        origins[path] = key
    return overrides, origins


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def parse_model(model: type[BaseModel], data: dict[str, Any], *, source: Path | str) -> Any:
    """Validate ``data`` with a pydantic model; report the first problem as one line naming the file and key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(source, exc, model=model)) from exc


def resolve_config_dir(config_dir: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """``config_dir``, else ``MKTG_CONFIG_DIR``, else ``./config``; it must exist."""
    environ = os.environ if environ is None else environ
    chosen = config_dir or environ.get(CONFIG_DIR_ENV)
    if chosen:
        path = Path(chosen)
        if not path.is_dir():
            raise ConfigError(f"configuration directory '{path}' does not exist")
        return path
    if not DEFAULT_CONFIG_DIR.is_dir():
        raise ConfigError(
            f"no configuration directory ./{CONFIG_DIR_NAME} in {Path.cwd()}: write a starter one "
            f"with `mktg init .`, or pass --config DIR (or set {CONFIG_DIR_ENV})"
        )
    return DEFAULT_CONFIG_DIR


def load_settings(
    config_dir: Path | str | None = None, environ: Mapping[str, str] | None = None, *, optional: bool = False
) -> Settings:
    """Settings from the configuration directory and ``MKTG_*`` variables.

    ``optional``: without any configuration directory (none given and no ``./config``) use the defaults and the
    environment, for the few commands that need no configuration file (``mktg report`` on plain files).
    """
    environ = os.environ if environ is None else environ
    if optional and not (config_dir or environ.get(CONFIG_DIR_ENV)) and not DEFAULT_CONFIG_DIR.is_dir():
        directory = DEFAULT_CONFIG_DIR
    else:
        directory = resolve_config_dir(config_dir, environ)
    file = directory / "settings.toml"
    data = read_toml(file) if file.exists() else {}
    if "config_dir" in data:
        raise ConfigError(f"{file}: config_dir: not a setting (choose the directory with --config or {CONFIG_DIR_ENV})")
    overrides, origins = _env_overrides(environ)
    data = _merge(data, overrides)
    data["config_dir"] = directory
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        loc = tuple(str(part) for part in exc.errors()[0]["loc"])
        variable = next((name for path, name in origins.items() if loc[: len(path)] == path[: len(loc)]), None)
        if variable is None:
            raise ConfigError(validation_message(file, exc, model=Settings)) from exc
        message = validation_message(variable, exc, model=Settings).split(": ", 2)[-1]
        if exc.errors()[0]["type"] == "extra_forbidden":
            keys = allowed_keys(Settings, loc[:-1]) or []
            message = f"not a setting (known here: {', '.join(keys)})"
        raise ConfigError(f"environment variable {variable}: {message}") from exc


def load_events(settings: Settings) -> EventConfig:
    path = settings.config_dir / "events.toml"
    return parse_model(EventConfig, read_toml(path), source=path)
