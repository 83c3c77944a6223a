"""Settings and configuration files, read in exactly one place.

Order of precedence: ``MKTG_*`` environment variables > ``<config dir>/settings.toml`` > defaults. The
config directory is ``--config DIR``, else ``MKTG_CONFIG_DIR``, else the project's ``config/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from campaigns.tomlfile import read_toml as campaigns_read_toml
from recommender.errors import UserError

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
ENV_PREFIX = "MKTG_"


class ConfigError(UserError):
    """A configuration file is missing or invalid."""


class ExtraJob(BaseModel):
    """A site-specific scheduled job: a plain function ``fn(ctx, **kwargs)`` named by ``module:function``."""

    model_config = ConfigDict(extra="forbid")
    func: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    schedule: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


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


class RefreshSettings(BaseModel):
    """``[refresh]``: the nightly model refresh and when it keeps the previous model."""

    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(default_factory=list)  # empty: the `train` list of config/models.toml
    metric: str = "ndcg"
    max_regression: float = Field(default=0.02, ge=0, le=1)
    tune_budget_seconds: float = Field(default=0, ge=0)  # 0: no search; the latest recorded winners, else defaults


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config_dir: Path = DEFAULT_CONFIG_DIR
    database_url: str = "sqlite:///var/mktg.db"
    data_dir: Path = Path("var/data")
    var_dir: Path = Path("var")
    threads: int = Field(default=2, ge=1)
    log_level: str = "INFO"
    scheduler: SchedulerSettings = SchedulerSettings()
    refresh: RefreshSettings = RefreshSettings()

    @property
    def export_dir(self) -> Path:
        return self.var_dir / "exports"

    @property
    def model_dir(self) -> Path:
        return self.var_dir / "models"


class EventConfig(BaseModel):
    """``config/events.toml``: event-type weights, recency half-life, positive event types."""

    model_config = ConfigDict(extra="forbid")
    weights: dict[str, float]
    half_life_days: float | None = None
    positive: list[str] = Field(default_factory=list)

    @property
    def event_types(self) -> set[str]:
        return set(self.weights)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file; a missing or malformed file is a one-line :class:`ConfigError`."""
    return campaigns_read_toml(path, error=ConfigError)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == f"{ENV_PREFIX}CONFIG_DIR":
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        target = overrides
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return overrides


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def parse_model(model: type[BaseModel], data: dict[str, Any], *, source: Path | str) -> Any:
    """Validate ``data`` with a pydantic model; report the first problem as one line naming the file."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{source}: {where}: {first['msg']}") from exc


def resolve_config_dir(config_dir: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    chosen = config_dir or environ.get(f"{ENV_PREFIX}CONFIG_DIR") or DEFAULT_CONFIG_DIR
    path = Path(chosen)
    if not path.is_dir():
        raise ConfigError(f"configuration directory '{path}' does not exist")
    return path


def load_settings(config_dir: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    directory = resolve_config_dir(config_dir, environ)
    file = directory / "settings.toml"
    data = read_toml(file) if file.exists() else {}
    data = _merge(data, _env_overrides(environ))
    data["config_dir"] = directory
    return parse_model(Settings, data, source=file)


def load_events(settings: Settings) -> EventConfig:
    path = settings.config_dir / "events.toml"
    return parse_model(EventConfig, read_toml(path), source=path)
