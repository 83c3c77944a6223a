"""`mktg data` through the console entry point: exit codes and one-line errors."""

from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture
def mktg(cli):
    """``mktg(*args, cwd=...)``: the CLI in this process; validation reads events.toml and cwd has no ./config."""
    return lambda *args, cwd: cli(*args, cwd=cwd, env={"MKTG_CONFIG_DIR": str(CONFIG)})


def test_generate_then_validate(tmp_path, mktg):
    out = tmp_path / "w"
    gen = mktg("data", "generate", "--out", str(out), "--customers", "800", "--format", "csv", cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr
    assert (out / "events.csv").exists() and (out / "ground_truth.json").exists()
    ok = mktg("data", "validate", str(out), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "customers" in ok.stdout and "800" in ok.stdout


def test_validate_failure_is_one_line_and_exit_2(tmp_path, mktg):
    out = tmp_path / "w"
    assert (
        mktg("data", "generate", "--out", str(out), "--customers", "300", "--format", "csv", cwd=tmp_path).returncode
        == 0
    )
    lines = (out / "products.csv").read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[0], lines[2].split(",")[0], 1)  # duplicate a product id
    (out / "products.csv").write_text("\n".join(lines) + "\n")
    bad = mktg("data", "validate", str(out), cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert "table 'products', column 'product_id'" in bad.stderr and "duplicate key" in bad.stderr


def test_bad_config_dir_is_one_line(tmp_path, mktg):
    res = mktg("--config", str(tmp_path / "nope"), "data", "validate", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
