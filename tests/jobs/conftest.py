"""Shared helpers for CLI tests: the ``mktg`` entry point in this process, and a project with a configuration."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from process_helpers import ROOT


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    # the names of subprocess.CompletedProcess, so a test reads the same either way
    @property
    def returncode(self) -> int:
        return self.code

    @property
    def stdout(self) -> str:
        return self.out

    @property
    def stderr(self) -> str:
        return self.err


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working directory holding a copy of the repository's config/ and nothing else; var/ goes inside it."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    for name in ("MKTG_CONFIG_DIR", "MKTG_DATABASE_URL", "MKTG_VAR_DIR", "MKTG_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def cli(capsys):
    """``cli(*args)`` runs ``mktg`` in this process (much faster than a subprocess) -> Result(code, out, err).

    As for a subprocess, ``env`` (variables added to this environment) and ``cwd`` apply to this call only, and the
    root logging handlers and level are restored after it. Tests that need a real process (signals, kill -9, the
    installed console script, shell completion, several schedulers) run ``process_helpers.MKTG`` instead."""
    from jobs.cli import main

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
        capsys.readouterr()
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        with pytest.MonkeyPatch.context() as patch:
            for key, value in (env or {}).items():
                patch.setenv(key, value)
            if cwd is not None:
                patch.chdir(cwd)
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:  # `jobs run` configures logging onto this call's captured stderr: undo it (one process)
                root.handlers[:] = handlers
                root.setLevel(level)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
