from pathlib import Path

import pytest

from jobs.settings import DEFAULT_CONFIG_DIR, ConfigError, load_events, load_settings


def test_defaults_come_from_the_project_config():
    s = load_settings(environ={})
    assert s.config_dir == DEFAULT_CONFIG_DIR
    assert s.database_url.startswith("sqlite:///")
    assert s.scheduler.max_instances == 1
    events = load_events(s)
    assert events.weights["activation"] > events.weights["click"] > events.weights["impression"]


def test_environment_overrides_file_values_including_sections():
    s = load_settings(environ={"MKTG_DATABASE_URL": "postgresql+psycopg://x@h/db", "MKTG_THREADS": "7",
                               "MKTG_SCHEDULER__TIMEZONE": "Europe/Madrid", "OTHER": "1"})
    assert (s.database_url, s.threads, s.scheduler.timezone) == ("postgresql+psycopg://x@h/db", 7, "Europe/Madrid")


def test_config_dir_argument_and_env(tmp_path: Path):
    (tmp_path / "settings.toml").write_text('log_level = "DEBUG"\nthreads = 3\n')
    assert load_settings(tmp_path, environ={}).threads == 3
    assert load_settings(environ={"MKTG_CONFIG_DIR": str(tmp_path)}).log_level == "DEBUG"


@pytest.mark.parametrize(("text", "message"), [
    ("threads = 0\n", "threads"),
    ("nonsense_key = 1\n", "nonsense_key"),
    ("threads = [\n", "not valid TOML"),
])
def test_bad_settings_are_one_line_config_errors(tmp_path: Path, text: str, message: str):
    (tmp_path / "settings.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(tmp_path, environ={})
    assert "\n" not in str(info.value)


def test_missing_config_dir():
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/dir", environ={})
