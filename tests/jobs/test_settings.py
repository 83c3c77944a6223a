"""Settings and events: where the configuration comes from, and every problem as one line naming file and key."""

from pathlib import Path

import pytest

from jobs.settings import ConfigError, load_events, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty working directory (the process runs there), as a user's project directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_configuration_is_dot_config_of_the_working_directory(project):
    (project / "config").mkdir()
    (project / "config" / "settings.toml").write_text("threads = 3\n")
    s = load_settings(environ={})
    assert s.config_dir == Path("config") and s.config_dir.resolve() == (project / "config").resolve()
    assert s.threads == 3 and s.database_url == "sqlite:///var/mktg.db" and s.data_dir == Path("var/data")


def test_never_the_install_location(project):
    assert (ROOT / "config" / "settings.toml").exists()  # the package's own configuration is right there...
    with pytest.raises(ConfigError) as info:
        load_settings(environ={})  # ...but the working directory has none
    assert str(info.value) == (
        f"no configuration directory ./config in {project}: write a starter one with "
        "`mktg init .`, or pass --config DIR (or set MKTG_CONFIG_DIR)"
    )


def test_optional_settings_use_defaults_without_any_configuration(project):
    s = load_settings(environ={"MKTG_VAR_DIR": "out"}, optional=True)
    assert (s.var_dir, s.threads) == (Path("out"), 2)
    with pytest.raises(ConfigError, match="not found"):
        load_events(s)


def test_config_dir_argument_and_env(tmp_path: Path):
    (tmp_path / "settings.toml").write_text('log_level = "debug"\nthreads = 3\n')
    assert load_settings(tmp_path, environ={}).threads == 3
    assert load_settings(environ={"MKTG_CONFIG_DIR": str(tmp_path)}).log_level == "DEBUG"
    with pytest.raises(ConfigError, match="configuration directory '/nonexistent/dir' does not exist"):
        load_settings("/nonexistent/dir", environ={})


def test_environment_overrides_file_values_including_sections():
    s = load_settings(
        ROOT / "config",
        environ={
            "MKTG_DATABASE_URL": "postgresql+psycopg://x@h/db",
            "MKTG_THREADS": "7",
            "MKTG_SCHEDULER__TIMEZONE": "Europe/Madrid",
            "OTHER": "1",
            "MKTG_TEST_POSTGRES_URL": "postgresql+psycopg://t@h/test",
        },
    )
    assert (s.database_url, s.threads, s.scheduler.timezone) == ("postgresql+psycopg://x@h/db", 7, "Europe/Madrid")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"MKTG_TRACEBACK": "1"},
            "environment variable MKTG_TRACEBACK: not a setting (known here: data_dir, database_url",
        ),
        (
            {"MKTG_SCHEDULER__NOPE": "1"},
            "environment variable MKTG_SCHEDULER__NOPE: not a setting (known here: coalesce",
        ),
        ({"MKTG_THREADS": "many"}, "environment variable MKTG_THREADS: Input should be a valid integer"),
        ({"MKTG_SCHEDULER__TIMEZONE": "Mars/Olympus"}, "MKTG_SCHEDULER__TIMEZONE: unknown time zone 'Mars/Olympus'"),
        ({"MKTG_CONFIG_DIR__X": "1"}, "environment variable MKTG_CONFIG_DIR__X: not a setting"),
    ],
)
def test_bad_environment_variables_name_the_variable(environ, message):
    with pytest.raises(ConfigError) as info:
        load_settings(ROOT / "config", environ=environ)
    assert message in str(info.value) and "settings.toml" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("threads = 0\n", "settings.toml: threads: Input should be greater than or equal to 1, got 0"),
        ("threads = 100000\n", "settings.toml: threads: Input should be less than or equal to 256"),
        (
            "nonsense_key = 1\n",
            "settings.toml: nonsense_key: unknown key (allowed: data_dir, database_url, log_level, refresh",
        ),
        ("config_dir = 'x'\n", "settings.toml: config_dir: not a setting (choose the directory with --config"),
        ("log_level = 'loud'\n", "log_level: unknown log level 'loud'"),
        ("database_url = 'nonsense'\n", "database_url: not a database URL"),
        ("[scheduler]\ntimezone = 'Europe/Nowhere'\n", "scheduler.timezone: unknown time zone 'Europe/Nowhere'"),
        (
            "[scheduler]\nmodel_refresh = '0 2 31 2 *'\n",
            "scheduler.model_refresh: invalid schedule '0 2 31 2 *': it never fires",
        ),
        (
            "[scheduler.extra_jobs.x]\nfunc = 'm:f'\nschedule = '0 0 30 2 *'\n",
            "extra_jobs.x.schedule: invalid schedule",
        ),
        ("[scheduler]\nworkerz = 2\n", "scheduler.workerz: unknown key (allowed: coalesce, conversion_analysis"),
        ("[refresh]\nmetric = 'auc'\n", "refresh.metric: unknown metric 'auc'"),
        ("threads = [\n", "is not valid TOML"),
    ],
)
def test_bad_settings_are_one_line_config_errors(tmp_path: Path, text: str, message: str):
    (tmp_path / "settings.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_settings_file_in_latin_1_is_a_clear_error(tmp_path: Path):
    (tmp_path / "settings.toml").write_bytes("# données\nthreads = 2\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"settings.toml' is not UTF-8 text: byte 0xe9 on line 1"):
        load_settings(tmp_path, environ={})


def test_shipped_events_are_valid():
    events = load_events(load_settings(ROOT / "config", environ={}))
    assert events.weights["activation"] > events.weights["click"] > events.weights["impression"]
    assert set(events.positive) <= events.event_types


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[weights]\nclick = -1.0\n", "weights: weight of 'click' must be a number between 0 and 1,000,000 (got -1.0)"),
        ("[weights]\nclick = nan\n", "weights.click: Input should be a finite number"),
        ("[weights]\nclick = 0.0\n", "weights: at least one event type needs a weight above 0"),
        ("half_life_days = -3\n[weights]\nclick = 1.0\n", "half_life_days: Input should be greater than or equal to 0"),
        (
            "half_life_days = 1e9\n[weights]\nclick = 1.0\n",
            "half_life_days: Input should be less than or equal to 36500",
        ),
        (
            "positive = ['purchase']\n[weights]\nclick = 1.0\n",
            "positive: 'purchase' is not an event type under [weights]",
        ),
        (
            "weight = 1\n[weights]\nclick = 1.0\n",
            "events.toml: weight: unknown key (allowed: half_life_days, positive, weights)",
        ),
    ],
)
def test_bad_events_are_one_line_config_errors(tmp_path: Path, text: str, message: str):
    (tmp_path / "events.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_events(load_settings(tmp_path, environ={}))
    assert message in str(info.value) and "\n" not in str(info.value)
